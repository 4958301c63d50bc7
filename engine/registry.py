"""Job kinds: what a registration declares and the checks that refuse unsafe ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.errors import IdempotencyRequired, RegistrationError, UnknownJobKind
from engine.retry import RetryPolicy
from statecharts import Chart, CompiledChart, Facts, StateKind, T, compile_chart, lifecycle


@dataclass(frozen=True)
class Invariant:
    """Declares why running a job more than once is harmless, instead of a dedupe key."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise RegistrationError("Invariant needs a reason: say why repeating this job is safe")


class NoPayload(BaseModel):
    """The payload of a job that takes none: an empty JSON object."""

    model_config = ConfigDict(extra="forbid")


DEFAULT_KEY_TTL = timedelta(days=7)

KeyFunction = Callable[[Any], str]
Handler = Callable[..., Any]


@dataclass(frozen=True)
class JobSpec:
    """Everything the engine knows about one job kind."""

    kind: str
    handler: Handler
    payload: type[BaseModel]
    idempotency: KeyFunction | Invariant
    retry: RetryPolicy
    timeout: float
    queue: str
    priority: int
    chart: Chart
    compiled: CompiledChart
    key_ttl: timedelta = DEFAULT_KEY_TTL

    def key_for(self, payload: BaseModel) -> str | None:
        """The dedupe key of ``payload``, or None for an Invariant job."""
        if isinstance(self.idempotency, Invariant):
            return None
        key = self.idempotency(payload)
        if not isinstance(key, str) or not key:
            raise TypeError(
                f"idempotency key function of job {self.kind!r} must return a non-empty str, "
                f"got {key!r}"
            )
        return key

    @property
    def claim_states(self) -> tuple[str, ...]:
        """States a worker claims jobs from: the sources of the chart's start trigger."""
        sources: dict[str, None] = {}
        for transition in self.chart.transitions:
            if transition.trigger == T.START:
                for source in transition.sources:
                    sources.setdefault(source, None)
        return tuple(sources)


class Registry:
    """The job kinds an engine knows; charts compiled once and shared."""

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        self._compiled: dict[str, CompiledChart] = {}

    def add(
        self,
        handler: Handler,
        *,
        kind: str | None,
        payload: type[BaseModel] | None,
        idempotency: KeyFunction | Invariant | None,
        retry: RetryPolicy | None,
        timeout: float,
        queue: str,
        priority: int,
        chart: Chart | None,
        key_ttl: float | timedelta = DEFAULT_KEY_TTL,
    ) -> JobSpec:
        name = kind or getattr(handler, "__name__", None)
        if not name:
            raise RegistrationError("a job needs a kind: pass kind= or register a named function")
        if name in self._specs:
            raise RegistrationError(f"job kind {name!r} is already registered")
        if idempotency is None:
            raise IdempotencyRequired(
                f"job {name!r} has no idempotency: pass idempotency=lambda payload: <dedupe key>"
                " or idempotency=Invariant('why running it twice is harmless'). jobcharts does"
                " not ship best effort: a job may run more than once after a crash, so say why"
                " that is safe."
            )
        if not isinstance(idempotency, Invariant) and not callable(idempotency):
            raise RegistrationError(
                f"job {name!r}: idempotency must be a key function or an Invariant, "
                f"got {idempotency!r}"
            )
        model = payload or NoPayload
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise RegistrationError(
                f"job {name!r}: payload must be a pydantic BaseModel subclass, got {model!r}"
            )
        if not (timeout > 0):
            raise RegistrationError(f"job {name!r}: timeout must be > 0 seconds, got {timeout!r}")
        ttl = key_ttl if isinstance(key_ttl, timedelta) else timedelta(seconds=key_ttl)
        if ttl < timedelta(0):
            raise RegistrationError(f"job {name!r}: idempotency_ttl must be >= 0, got {key_ttl!r}")
        if not callable(handler):
            raise RegistrationError(f"job {name!r}: the handler must be callable")
        chart = chart or lifecycle()
        compiled = self._compiled.get(chart.name)
        if compiled is None or compiled.chart != chart:
            if compiled is not None:
                raise RegistrationError(
                    f"two different charts are named {chart.name!r}; chart names must be unique"
                )
            compiled = compile_chart(chart)
            _check_runnable(compiled)
            _check_static(chart)
            self._compiled[chart.name] = compiled
        spec = JobSpec(
            kind=name,
            handler=handler,
            payload=model,
            idempotency=idempotency,
            retry=retry or RetryPolicy(),
            timeout=float(timeout),
            queue=queue,
            priority=priority,
            chart=chart,
            compiled=compiled,
            key_ttl=ttl,
        )
        self._specs[name] = spec
        return spec

    def get(self, kind: str) -> JobSpec:
        spec = self._specs.get(kind)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            raise UnknownJobKind(f"unknown job kind {kind!r}; registered kinds: {known}")
        return spec

    def find(self, kind: str) -> JobSpec | None:
        return self._specs.get(kind)

    def chart(self, name: str) -> Chart | None:
        compiled = self._compiled.get(name)
        return compiled.chart if compiled else None

    @property
    def charts(self) -> tuple[Chart, ...]:
        return tuple(c.chart for c in self._compiled.values())

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def specs(self) -> tuple[JobSpec, ...]:
        return tuple(self._specs.values())


def _check_static(chart: Chart) -> None:
    """The static checks (statecharts.checks) run at registration; waivers need a reason."""
    from statecharts.checks import failures

    failed = failures(chart)
    if failed:
        raise RegistrationError(
            f"chart {chart.name!r} fails its static checks: "
            + "; ".join(f"{f.check}: {f.message}" for f in failed)
            + ". Fix the chart, or waive a check with Waiver(check, reason)."
        )


def _check_runnable(compiled: CompiledChart) -> None:
    """Refuse a chart the engine could get stuck in.

    From every state a claim leads to, each outcome (succeed, fail, fail_permanent) and each
    lease event (expire, release) must have an enabled transition whatever the attempt
    count; otherwise a job could be left running with nowhere to go.
    """
    chart = compiled.chart
    triggers = set(chart.triggers)
    missing = [t for t in (T.START, T.SUCCEED, T.FAIL, T.FAIL_PERMANENT) if t not in triggers]
    if missing:
        raise RegistrationError(
            f"chart {chart.name!r} lacks trigger(s) {[str(m) for m in missing]} that the engine "
            "fires; multi-step charts arrive with their own runner"
        )
    if not chart.states_of(StateKind.FINAL):
        raise RegistrationError(f"chart {chart.name!r} has no final state")
    running = {t.dest for t in chart.transitions if t.trigger == T.START}
    samples = [Facts(1, 1), Facts(1, 3), Facts(2, 3), Facts(3, 3)]
    gaps = sorted(
        f"{state} --{trigger}--> ? (attempt {facts.attempt} of {facts.max_attempts})"
        for state in running
        for trigger in (T.SUCCEED, T.FAIL, T.FAIL_PERMANENT, T.EXPIRE, T.RELEASE)
        for facts in samples
        if compiled.fire(state, trigger, facts) is None
    )
    if gaps:
        raise RegistrationError(
            f"chart {chart.name!r} can leave a running job with nowhere to go: "
            + "; ".join(gaps[:6])
            + (" ..." if len(gaps) > 6 else "")
        )
