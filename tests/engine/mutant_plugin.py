"""A pytest plugin that breaks the engine on purpose (``-p tests.engine.mutant_plugin``).

``$JOBCHARTS_MUTATION`` picks the broken transition; the generated tests must catch each:

- ``fail_is_permanent``: a retryable failure quarantines at once (fail -> fail_permanent).
- ``deadline_ignored``: the tick never takes a polling state's deadline exit.
- ``release_counts``: a claim whose handler never started is expired, not released.
- ``migration_to_first``: a migrated job goes to its chart's first step, not where the
  migration says.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from engine import claim, moves
from engine.services import rescue
from statecharts import T

MUTATION = os.environ.get("JOBCHARTS_MUTATION", "")

if MUTATION == "fail_is_permanent":
    _outcome_move = moves.Moves.outcome

    def _broken_outcome(self: Any, outcome: Any, now: Any) -> Any:
        if outcome.trigger == T.FAIL:
            outcome = dataclasses.replace(outcome, trigger=T.FAIL_PERMANENT)
        return _outcome_move(self, outcome, now)

    moves.Moves.outcome = _broken_outcome  # type: ignore[method-assign]
elif MUTATION == "deadline_ignored":
    claim.TIMER_TRIGGERS = (T.ELAPSED,)  # type: ignore[misc]
elif MUTATION == "release_counts":
    _rescue = rescue.Rescuer.run_once

    def _broken_rescue(self: Any, now: Any, limit: Any = None, exclude: Any = ()) -> Any:
        original = rescue.T
        try:

            class _T:
                def __getattr__(self, name: str) -> Any:
                    return getattr(original, "EXPIRE" if name == "RELEASE" else name)

            rescue.T = _T()  # type: ignore[assignment, misc]
            return _rescue(self, now, limit=limit, exclude=exclude)
        finally:
            rescue.T = original  # type: ignore[misc]

    rescue.Rescuer.run_once = _broken_rescue  # type: ignore[method-assign]
elif MUTATION == "migration_to_first":
    _migrate = moves.Moves.migrate

    def _broken_migrate(self: Any, spec: Any, row: Any, migration: Any, now: Any) -> Any:
        wrong = dataclasses.replace(migration, new=spec.first_step)
        return _migrate(self, spec, row, wrong, now)

    moves.Moves.migrate = _broken_migrate  # type: ignore[method-assign]
elif MUTATION:
    raise ValueError(f"unknown mutation {MUTATION!r}")
