"""``TickReport``: what a tick (or a worker's run) did, counted by one classifier."""

from __future__ import annotations

from dataclasses import dataclass

from engine.store import Move
from statecharts import Chart, T


@dataclass
class TickReport:
    """What one tick (or a run of them) did.

    ``released``: claims whose handler never started, handed back without counting an
    attempt. ``expired``: attempts whose lease ran out or were handed back while running
    (also counted in retried or quarantined). ``fenced``: results discarded because their
    attempt had lost its lease (timed out, rescued elsewhere, or handed back).
    ``advanced``: a flow moved on to another state (next step, or "check again later").
    ``ended``: reached a final state that is not success (a flow's own, e.g. refunded).
    ``timed``: transitions the tick fired without a handler (deadlines, delays, cancels).
    """

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    quarantined: int = 0
    fenced: int = 0
    released: int = 0
    expired: int = 0
    advanced: int = 0
    cancelled: int = 0
    ended: int = 0
    timed: int = 0

    def add(self, other: TickReport) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def busy(self) -> bool:
        """Whether the tick moved any job (run_until_idle stops at the first idle tick)."""
        return bool(self.claimed or self.released or self.expired or self.timed)

    def count(self, move: Move, chart: Chart) -> None:
        """Count a committed move by its trigger and where it led.

        Rescue and hand-back moves count by trigger: ``release`` (attempt not counted),
        ``expire`` (counted: then quarantined or retried), ``cancel``. An attempt's outcome
        counts by its destination.
        """
        trigger = move.event.trigger
        quarantined = bool(move.values.get("quarantine_reason"))
        if trigger == T.RELEASE:
            self.released += 1
        elif trigger == T.CANCEL:
            self.cancelled += 1
        elif trigger == T.EXPIRE:
            self.expired += 1
            if quarantined:
                self.quarantined += 1
            else:
                self.retried += 1
        elif quarantined:
            self.quarantined += 1
        elif (dest := chart.state(move.values["state"])).is_final:
            if dest.success:
                self.succeeded += 1
            else:
                self.ended += 1
        elif trigger == T.FAIL:
            self.retried += 1
        else:
            self.advanced += 1
