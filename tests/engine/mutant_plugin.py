"""A pytest plugin that breaks the engine on purpose (``-p tests.engine.mutant_plugin``).

``$JOBCHARTS_MUTATION`` picks the broken transition; the generated tests must catch each:

- ``fail_is_permanent``: a retryable failure quarantines at once (fail -> fail_permanent).
- ``deadline_ignored``: the tick never takes a polling state's deadline exit.
- ``release_counts``: a claim whose handler never started is expired, not released.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from engine import core
from statecharts import T

MUTATION = os.environ.get("JOBCHARTS_MUTATION", "")

if MUTATION == "fail_is_permanent":
    _outcome_move = core.Engine._outcome_move

    def _broken_outcome(self: Any, outcome: Any, now: Any) -> Any:
        if outcome.trigger == T.FAIL:
            outcome = dataclasses.replace(outcome, trigger=T.FAIL_PERMANENT)
        return _outcome_move(self, outcome, now)

    core.Engine._outcome_move = _broken_outcome  # type: ignore[method-assign]
elif MUTATION == "deadline_ignored":
    core.TIMER_TRIGGERS = (T.ELAPSED,)  # type: ignore[misc]
elif MUTATION == "release_counts":
    _rescue = core.Engine.rescue

    def _broken_rescue(self: Any, now: Any, limit: Any = None, exclude: Any = ()) -> Any:
        original = core.T
        try:

            class _T:
                def __getattr__(self, name: str) -> Any:
                    return getattr(original, "EXPIRE" if name == "RELEASE" else name)

            core.T = _T()  # type: ignore[assignment, misc]
            return _rescue(self, now, limit, exclude)
        finally:
            core.T = original  # type: ignore[misc]

    core.Engine.rescue = _broken_rescue  # type: ignore[method-assign]
elif MUTATION:
    raise ValueError(f"unknown mutation {MUTATION!r}")
