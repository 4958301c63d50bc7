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
    State,
    StateKind,
    Transition,
    Waiver,
)
from statecharts.lifecycle import ATTEMPTS_EXHAUSTED, ATTEMPTS_LEFT, DUE, S, T, lifecycle
from statecharts.machine import CompiledChart, compile_chart
from statecharts.paths import Step, is_path, path_errors

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "ATTEMPTS_LEFT",
    "DUE",
    "Chart",
    "ChartError",
    "CompiledChart",
    "Effect",
    "Facts",
    "Guard",
    "S",
    "State",
    "StateKind",
    "Step",
    "T",
    "Transition",
    "Waiver",
    "compile_chart",
    "is_path",
    "lifecycle",
    "path_errors",
]
