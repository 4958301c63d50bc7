"""path_errors / is_path: a recorded history must be a walk along declared edges."""

from __future__ import annotations

import pytest

from statecharts import S, Step, T, is_path, lifecycle, path_errors

CHART = lifecycle()

CREATE = Step("create", None, S.PENDING)

RETRY_THEN_SUCCEED = [
    CREATE,
    Step(T.START, S.PENDING, S.RUNNING),
    Step(T.FAIL, S.RUNNING, S.RETRY_WAIT),
    Step(T.START, S.RETRY_WAIT, S.RUNNING),
    Step(T.EXPIRE, S.RUNNING, S.RETRY_WAIT),
    Step(T.START, S.RETRY_WAIT, S.RUNNING),
    Step(T.SUCCEED, S.RUNNING, S.SUCCEEDED),
]

QUARANTINE_REQUEUE_CANCEL = [
    CREATE,
    Step(T.START, S.PENDING, S.RUNNING),
    Step(T.FAIL_PERMANENT, S.RUNNING, S.QUARANTINED),
    Step(T.REQUEUE, S.QUARANTINED, S.PENDING),
    Step(T.CANCEL, S.PENDING, S.CANCELLED),
    Step(T.REQUEUE, S.CANCELLED, S.PENDING),
]


@pytest.mark.parametrize(
    "history",
    [[CREATE], RETRY_THEN_SUCCEED, QUARANTINE_REQUEUE_CANCEL],
    ids=["created-only", "retry-then-succeed", "quarantine-requeue-cancel"],
)
def test_valid_histories_pass(history: list[Step]) -> None:
    """A history that follows declared lifecycle edges from creation has no errors."""
    assert path_errors(CHART, history) == []
    assert is_path(CHART, history)


def test_empty_history_is_reported() -> None:
    """An empty history is not a path and says so."""
    assert path_errors(CHART, []) == ["the history is empty"]
    assert not is_path(CHART, [])


def test_history_starting_in_another_state_is_reported() -> None:
    """A history whose first step creates the job outside the initial state is refused."""
    history = [Step("create", None, S.RUNNING), Step(T.SUCCEED, S.RUNNING, S.SUCCEEDED)]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert "'pending'" in errors[0]
    assert "'running'" in errors[0]
    assert not is_path(CHART, history)


def test_history_starting_with_a_move_instead_of_creation_is_reported() -> None:
    """A history whose first step has a source (not a creation) is refused even into pending."""
    history = [Step(T.REQUEUE, S.CANCELLED, S.PENDING), Step(T.START, S.PENDING, S.RUNNING)]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert "start by creating" in errors[0]
    assert not is_path(CHART, history)


def test_skipped_state_is_reported() -> None:
    """A step leaving a state the job was not in (a skipped step) is reported with its index."""
    history = [
        CREATE,
        Step(T.START, S.PENDING, S.RUNNING),
        # The fail running -> retry_wait step is missing here.
        Step(T.START, S.RETRY_WAIT, S.RUNNING),
    ]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert errors[0].startswith("step 2")
    assert "'retry_wait'" in errors[0]
    assert "'running'" in errors[0]
    assert not is_path(CHART, history)


def test_undeclared_edge_is_reported() -> None:
    """A step along an edge the chart does not declare is reported as undeclared."""
    history = [CREATE, Step(T.SUCCEED, S.PENDING, S.SUCCEEDED)]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert "step 1" in errors[0]
    assert "not a declared transition" in errors[0]
    assert not is_path(CHART, history)


def test_declared_trigger_with_wrong_destination_is_reported() -> None:
    """A real trigger from a real source but to the wrong destination is still undeclared."""
    history = [CREATE, Step(T.START, S.PENDING, S.RUNNING), Step(T.FAIL, S.RUNNING, S.SUCCEEDED)]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert "step 2" in errors[0]
    assert "not a declared transition" in errors[0]


def test_leaving_a_final_state_by_non_operator_trigger_is_reported() -> None:
    """After reaching a final state, only its declared operator edge may follow."""
    history = [*RETRY_THEN_SUCCEED, Step(T.START, S.SUCCEEDED, S.RUNNING)]
    errors = path_errors(CHART, history)
    assert len(errors) == 1
    assert "not a declared transition" in errors[0]


def test_every_problem_is_reported_not_just_the_first() -> None:
    """A history with several faults lists one error for each of them."""
    history = [
        Step("create", None, S.RUNNING),  # wrong start
        Step(T.SUCCEED, S.RUNNING, S.SUCCEEDED),  # fine in itself
        Step(T.START, S.PENDING, S.RUNNING),  # job was in succeeded, not pending
        Step(T.REQUEUE, S.RUNNING, S.PENDING),  # running --requeue--> is undeclared
    ]
    errors = path_errors(CHART, history)
    assert len(errors) == 3
    assert "start by creating" in errors[0]
    assert errors[1].startswith("step 2")
    assert "'succeeded'" in errors[1]
    assert errors[2].startswith("step 3")
    assert "not a declared transition" in errors[2]


def test_creation_step_in_the_middle_is_reported() -> None:
    """A later step without a source is both a broken chain and an undeclared edge."""
    history = [CREATE, Step("create", None, S.PENDING)]
    errors = path_errors(CHART, history)
    assert len(errors) == 2
    assert all("step 1" in error for error in errors)
