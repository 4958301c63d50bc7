"""Declare job lifecycles as statecharts: pure data, validated, compiled to one Machine.

Knows nothing of databases or workers; the engine, the diagrams, the static checks and the
generated tests all read these same declarations.
"""

from statecharts.chart import (
    Chart,
    ChartError,
    Effect,
    Facts,
    Guard,
    Migration,
    State,
    StateKind,
    Transition,
    Waiver,
)
from statecharts.flow import Final, Poll, Wait, Work, flow, handler_states, outcomes
from statecharts.lifecycle import (
    ATTEMPTS_EXHAUSTED,
    ATTEMPTS_LEFT,
    BEFORE_DEADLINE,
    DEADLINE_PASSED,
    DUE,
    ENGINE_TRIGGERS,
    TIMER_TRIGGERS,
    S,
    T,
    lifecycle,
)
from statecharts.machine import CompiledChart, compile_chart
from statecharts.paths import Step, is_path, path_errors

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "ATTEMPTS_LEFT",
    "BEFORE_DEADLINE",
    "DEADLINE_PASSED",
    "DUE",
    "ENGINE_TRIGGERS",
    "TIMER_TRIGGERS",
    "Chart",
    "ChartError",
    "CompiledChart",
    "Effect",
    "Facts",
    "Final",
    "Guard",
    "Migration",
    "Poll",
    "S",
    "State",
    "StateKind",
    "Step",
    "T",
    "Transition",
    "Wait",
    "Waiver",
    "Work",
    "compile_chart",
    "flow",
    "handler_states",
    "is_path",
    "lifecycle",
    "outcomes",
    "path_errors",
]
