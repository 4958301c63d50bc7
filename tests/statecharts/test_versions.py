"""Chart versions and migrations as declarations: the version is the structure's hash, the
markup rebuilds the chart, migrations are checked when declared, and a history across
versions is checked part by part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statecharts import ChartError, Final, Poll, Step, Wait, Work, flow, lifecycle
from statecharts.chart import Migration
from statecharts.paths import versioned_path_errors
from statecharts.versions import chart_from_markup, chart_markup, version_of


def shipping(*, label: str = "", description: str = "", wait: str = "hold") -> object:
    return flow(
        "ship",
        Work("pack", on={"packed": wait}),
        Wait(wait, delay=60, then="send"),
        Work("send", on={"sent": "succeeded"}),
        label=label,
        description=description,
    )


def test_the_version_is_the_structure_not_the_words() -> None:
    assert version_of(shipping()) == version_of(shipping(label="v2", description="new words"))
    assert version_of(shipping()) != version_of(shipping(wait="cool_off"))
    assert len(version_of(lifecycle())) == 12


def test_a_migration_changes_how_jobs_move_not_the_version() -> None:
    moved = flow(
        "ship",
        Work("pack", on={"packed": "hold"}),
        Wait("hold", delay=60, then="send"),
        Work("send", on={"sent": "succeeded"}),
        migrations={"old_hold": "hold"},
    )
    assert version_of(moved) == version_of(shipping())
    assert moved.migration_for("old_hold") == Migration("old_hold", "hold")
    assert moved.migration_for("hold") is None


@pytest.mark.parametrize(
    ("migrations", "message"),
    [
        ({"pack": "send"}, "a state this version still has"),
        ({"gone": "nowhere"}, "unknown state 'nowhere'"),
        ({"gone": "pending"}, "does not start over"),
    ],
)
def test_a_migration_that_cannot_work_is_refused_when_declared(
    migrations: dict[str, str], message: str
) -> None:
    with pytest.raises(ChartError, match=message):
        flow(
            "ship",
            Work("pack", on={"packed": "send"}),
            Work("send", on={"sent": "succeeded"}),
            migrations=migrations,
        )


names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def flows(draw: st.DrawFn) -> object:
    """Random linear flows of work, wait and poll steps with a final of their own."""
    count = draw(st.integers(min_value=1, max_value=4))
    steps: list[object] = []
    labels = [f"s{i}" for i in range(count)]
    for i, name in enumerate(labels):
        after = labels[i + 1] if i + 1 < count else "succeeded"
        pick = draw(st.sampled_from(["work", "wait", "poll"])) if i else "work"
        if pick == "work":
            steps.append(Work(name, on={draw(names): after, "give_up": "abandoned"}))
        elif pick == "wait":
            steps.append(Wait(name, delay=draw(st.integers(1, 100)), then=after))
        else:
            steps.append(Poll(name, every=1, deadline=draw(st.integers(2, 50)), on={"ok": after}))
    steps.append(Final("abandoned", success=False))
    return flow("random", *steps)


@settings(max_examples=60, deadline=None)
@given(flows())
def test_the_markup_rebuilds_the_same_version(chart: object) -> None:
    rebuilt = chart_from_markup(chart_markup(chart))  # type: ignore[arg-type]
    assert version_of(rebuilt) == version_of(chart)  # type: ignore[arg-type]
    assert rebuilt.state_names == chart.state_names  # type: ignore[attr-defined]


def test_a_history_across_versions_is_checked_part_by_part() -> None:
    v1, v2 = (
        shipping(),
        flow(
            "ship",
            Work("pack", on={"packed": "cool_off"}),
            Wait("cool_off", delay=60, then="send"),
            Work("send", on={"sent": "succeeded"}),
            migrations={"hold": "cool_off"},
        ),
    )
    charts = {"one": v1, "two": v2}
    history = [
        Step("enqueue", None, "pending"),
        Step("start", "pending", "pack"),
        Step("packed", "pack", "hold"),
        Step("migrate", "hold", "cool_off", versions=("one", "two")),
        Step("elapsed", "cool_off", "send"),
        Step("start", "send", "send"),
        Step("sent", "send", "succeeded"),
    ]
    assert versioned_path_errors(charts, history, "two") == []
    # The same moves without the switch: 'hold' is not in version two.
    unswitched = [*history[:3], Step("migrate", "hold", "cool_off"), *history[4:]]
    assert versioned_path_errors(charts, unswitched, "two") != []
    # A migration the new version does not declare.
    wrong = [*history[:3], Step("migrate", "hold", "send", versions=("one", "two"))]
    assert "not a migration" in " ".join(versioned_path_errors(charts, wrong, "two"))
    # An edge of the old version taken after the switch.
    late = [*history[:2], Step("packed", "pack", "hold", versions=("one", "two"))]
    assert "version two" in " ".join(versioned_path_errors(charts, late, "two"))
    assert versioned_path_errors({}, history, "two") == ["chart version one is not recorded"]
