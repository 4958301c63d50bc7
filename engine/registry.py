"""Job kinds: what a registration declares and the checks that refuse unsafe ones."""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict

from engine.errors import IdempotencyRequired, RegistrationError, UnknownJobKind
from engine.limits import Limits, Rate, Scope, make_limit
from engine.retry import RetryPolicy
from statecharts import (
    TIMER_TRIGGERS,
    Chart,
    CompiledChart,
    Facts,
    StateKind,
    T,
    compile_chart,
    handler_states,
    lifecycle,
    outcomes,
)
from statecharts.versions import version_of


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
DEFAULT_TIMEOUT = 60.0

KeyFunction = Callable[[Any], str]
Handler = Callable[..., Any]


class KindOptions(TypedDict, total=False):
    """The options every registration takes (``job``, ``flow``, ``cron``, ``poller``):
    declared once, so the registration verbs cannot drift apart."""

    payload: type[BaseModel] | None  # the pydantic model of the payload (default: none)
    idempotency: KeyFunction | Invariant | None  # a dedupe key function, or an Invariant
    retry: RetryPolicy | None  # attempts and backoff (a flow's: every step's default)
    timeout: float  # seconds a handler may run (default 60)
    queue: str  # the queue its jobs go to (default "default")
    priority: int  # higher is claimed first (default 0)
    idempotency_ttl: float | timedelta  # how long a key outlives its final job (7 days)
    concurrency: int | None  # at most this many of its jobs running, across all workers
    rate: Rate | None  # at most Rate.starts handler starts per Rate.per, across all workers
    schema_change: str | None  # why a payload model change may quarantine jobs in flight


class JobOptions(KindOptions, total=False):
    """``KindOptions`` plus what a single-handler kind may also name."""

    kind: str | None  # the kind's name (default: the handler's name)
    chart: Chart | None  # a chart of the lifecycle's shape (default: the lifecycle)


JOB_OPTIONS = frozenset(JobOptions.__annotations__)
KIND_OPTIONS = frozenset(KindOptions.__annotations__)


def check_options(options: Mapping[str, Any], allowed: frozenset[str] = JOB_OPTIONS) -> None:
    """A misspelt option is refused when the registration is written, as Python refuses an
    unexpected keyword argument (options are checked by name, not only by type checkers)."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"unexpected registration option(s) {unknown}")


@dataclass(frozen=True)
class StepHandler:
    """A flow state's handler with its own retry policy and timeout (else the kind's)."""

    fn: Handler
    retry: RetryPolicy | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class StepSpec:
    """How the handler of one state runs: function, retry policy, timeout, outcomes."""

    state: str
    handler: Handler
    retry: RetryPolicy
    timeout: float
    outcomes: tuple[str, ...] = ()  # the triggers a flow handler may return
    polls: bool = False  # a polling check: returning None means "not yet"


@dataclass(frozen=True)
class Entry:
    """What entering a state sets: its attempts budget and its timers (seconds)."""

    max_attempts: int
    every: float | None = None
    deadline: float | None = None
    delay: float | None = None


@dataclass(frozen=True)
class JobSpec:
    """Everything the engine knows about one job kind.

    ``steps`` maps each state a handler runs in to how it runs; a lifecycle job has one
    (``running``), a flow one per work and polling state. ``is_flow``: handlers return the
    trigger to take; a lifecycle handler's return value is the job's result.
    """

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
    steps: Mapping[str, StepSpec] = field(default_factory=dict)
    is_flow: bool = False
    version: str = ""  # the chart's structural version (statecharts.versions)
    max_payload_bytes: int | None = None  # the JSON of a payload may not be larger
    max_result_bytes: int | None = None  # nor that of a result (the handler's, a step's)
    schema_change: str | None = None  # a declared payload change (engine.kinds)

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

    @functools.cached_property
    def state_names(self) -> frozenset[str]:
        return frozenset(self.chart.state_names)

    @functools.cached_property
    def start_states(self) -> frozenset[str]:
        """States a job is started from (a claim there is a new attempt)."""
        return frozenset(
            s for t in self.chart.transitions if t.trigger == T.START for s in t.sources
        )

    @functools.cached_property
    def claim_states(self) -> tuple[str, ...]:
        """States a tick takes jobs from when due: sources of ``start`` and of the timers,
        and the states of older versions this chart migrates jobs out of."""
        sources: dict[str, None] = {}
        for transition in self.chart.transitions:
            if transition.trigger == T.START or transition.trigger in TIMER_TRIGGERS:
                for source in transition.sources:
                    sources.setdefault(source, None)
        for migration in self.chart.migrations:
            sources.setdefault(migration.old, None)
        return tuple(sources)

    def step_for(self, state: str) -> StepSpec:
        """How the handler of ``state`` runs (a state no handler runs in is a chart bug)."""
        step = self.steps.get(state)
        if step is None:
            raise RegistrationError(f"job {self.kind!r}: no handler runs in state {state!r}")
        return step

    def retry_for(self, state: str) -> RetryPolicy:
        step = self.steps.get(state)
        return step.retry if step is not None else self.retry

    def entry(self, state: str) -> Entry:
        """What entering ``state`` sets (ENTER_STEP; RESET_ATTEMPTS with the first step)."""
        declared = self.chart.state(state)
        step = self.steps.get(state)
        return Entry(
            max_attempts=step.retry.max_attempts if step else 1,
            every=declared.every,
            deadline=declared.deadline,
            delay=declared.delay,
        )

    @functools.cached_property
    def first_step(self) -> str:
        """The state the first claim leads to (its retry policy sets the first budget)."""
        initial = self.chart.initial.name
        for transition in self.chart.transitions:
            if transition.trigger == T.START and initial in transition.sources:
                return transition.dest
        return next(iter(self.steps))

    @functools.cached_property
    def first_max_attempts(self) -> int:
        return self.retry_for(self.first_step).max_attempts


class Registry:
    """The job kinds an engine knows; charts compiled once and shared."""

    def __init__(
        self, max_payload_bytes: int | None = None, max_result_bytes: int | None = None
    ) -> None:
        for name, value in (
            ("max_payload_bytes", max_payload_bytes),
            ("max_result_bytes", max_result_bytes),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} is a positive number of bytes (or None), got {value!r}")
        self.max_payload_bytes = max_payload_bytes
        self.max_result_bytes = max_result_bytes
        self._specs: dict[str, JobSpec] = {}
        self._compiled: dict[str, CompiledChart] = {}
        self.limits = Limits()  # global concurrency and rate limits, by kind and by queue

    def add(
        self,
        handler: Handler,
        options: JobOptions,
        handlers: Mapping[str, Handler | StepHandler] | None = None,
    ) -> JobSpec:
        """Register a job kind. ``handlers`` (state -> handler) makes it a flow."""
        check_options(options)
        kind = options.get("kind")
        payload = options.get("payload")
        idempotency = options.get("idempotency")
        retry = options.get("retry")
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        queue = options.get("queue", "default")
        priority = options.get("priority", 0)
        chart = options.get("chart")
        key_ttl = options.get("idempotency_ttl", DEFAULT_KEY_TTL)
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
        limit = make_limit(f"job {name!r}", options.get("concurrency"), options.get("rate"))
        if handlers is None:
            check_handler(f"job {name!r}", handler)
        chart = chart or lifecycle()
        compiled = self._compiled.get(chart.name)
        if compiled is None or compiled.chart != chart:
            if compiled is not None:
                raise RegistrationError(
                    f"two different charts are named {chart.name!r}; chart names must be unique"
                )
            compiled = compile_chart(chart)
            if handlers is None:
                _check_runnable(compiled)
            else:
                _check_flow_runnable(compiled)
            _check_static(chart)
        policy = retry or RetryPolicy()
        if handlers is None:
            steps = {
                state: StepSpec(state, handler, policy, float(timeout))
                for state in handler_states(chart)
            }
        else:
            steps = _flow_steps(name, chart, handlers, policy, float(timeout))
        self._compiled[chart.name] = compiled
        spec = JobSpec(
            kind=name,
            handler=handler,
            payload=model,
            idempotency=idempotency,
            retry=policy,
            timeout=float(timeout),
            queue=queue,
            priority=priority,
            chart=chart,
            compiled=compiled,
            key_ttl=ttl,
            steps=steps,
            is_flow=handlers is not None,
            version=version_of(chart),
            max_payload_bytes=self.max_payload_bytes,
            max_result_bytes=self.max_result_bytes,
            schema_change=options.get("schema_change"),
        )
        self._specs[name] = spec
        self.limits.set(Scope("kind", name), limit)
        return spec

    def __len__(self) -> int:
        return len(self._specs)

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
    def claimable(self) -> dict[str, tuple[str, ...]]:
        """Kind -> the states a claim takes its due jobs from."""
        return {kind: spec.claim_states for kind, spec in self._specs.items()}

    @property
    def known_states(self) -> dict[str, tuple[str, ...]]:
        """Kind -> the states of its chart (a job anywhere else is a stray)."""
        return {kind: spec.chart.state_names for kind, spec in self._specs.items()}

    @property
    def versions(self) -> dict[str, tuple[Chart, str]]:
        """Each registered chart by name, with its version."""
        return {s.chart.name: (s.chart, s.version) for s in self._specs.values()}

    @property
    def charts(self) -> tuple[Chart, ...]:
        return tuple(c.chart for c in self._compiled.values())

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def specs(self) -> tuple[JobSpec, ...]:
        return tuple(self._specs.values())


def check_handler(what: str, fn: Any) -> None:
    """A handler is a function (or callable) returning its outcome, or a coroutine
    function (``async def``) awaited on the worker's event loop: not a generator, whose
    body would never run."""
    if not callable(fn):
        raise RegistrationError(f"{what} must be callable, got {fn!r}")
    targets = [fn, type(fn).__call__]  # a function, or an object with a generator __call__
    if any(inspect.isgeneratorfunction(t) or inspect.isasyncgenfunction(t) for t in targets):
        raise RegistrationError(
            f"{what} is a generator function: its body would never run. A handler returns "
            "its outcome (def) or is awaited (async def)"
        )


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
            "fires for a single-handler job; register a multi-step chart with engine.flow(...)"
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


def _flow_steps(
    kind: str,
    chart: Chart,
    handlers: Mapping[str, Handler | StepHandler],
    retry: RetryPolicy,
    timeout: float,
) -> dict[str, StepSpec]:
    """Bind a flow's handlers to its states, refusing any mismatch between the two."""
    runs = handler_states(chart)
    known = set(chart.state_names)
    for state in handlers:
        if state not in known:
            raise RegistrationError(
                f"job {kind!r}: a handler is given for state {state!r}, which chart "
                f"{chart.name!r} does not have; its states are {sorted(known)}"
            )
        if state not in runs:
            raise RegistrationError(
                f"job {kind!r}: state {state!r} is a {chart.state(state).kind} state; "
                f"handlers run only in the states a job is started in: {sorted(runs)}"
            )
    missing = [state for state in runs if state not in handlers]
    if missing:
        raise RegistrationError(f"job {kind!r}: no handler for state(s) {missing} of its chart")
    steps: dict[str, StepSpec] = {}
    for state in runs:
        given = handlers[state]
        bound = given if isinstance(given, StepHandler) else StepHandler(given)
        check_handler(f"job {kind!r}: the handler of {state!r}", bound.fn)
        step_timeout = timeout if bound.timeout is None else float(bound.timeout)
        if not (step_timeout > 0):
            raise RegistrationError(f"job {kind!r}: the timeout of {state!r} must be > 0")
        declared = outcomes(chart, state)
        polls = chart.state(state).polls
        _check_returns(kind, state, bound.fn, declared, polls)
        steps[state] = StepSpec(
            state, bound.fn, bound.retry or retry, step_timeout, declared, polls
        )
    return steps


def _check_returns(
    kind: str, state: str, fn: Handler, declared: tuple[str, ...], polls: bool
) -> None:
    """A handler whose return annotation names its outcomes must match the chart's."""
    returns = _annotated_outcomes(fn)
    if returns is None:
        return  # not annotated: what it returns is checked when it returns
    if None in returns and not polls and len(declared) != 1:
        raise RegistrationError(
            f"job {kind!r}: the handler of {state!r} may return None, but that state has "
            f"{len(declared)} outcomes {list(declared)}; return one of them"
        )
    named = {r for r in returns if r is not None}
    unknown = sorted(named - set(declared))
    if unknown:
        raise RegistrationError(
            f"job {kind!r}: the handler of {state!r} may return {unknown}, but the chart has "
            f"no such transition from {state!r}; its outcomes are {list(declared)}"
        )
    unreachable = [t for t in declared if t not in named]
    if unreachable and not (None in returns and len(declared) == 1):
        raise RegistrationError(
            f"job {kind!r}: the chart leaves {state!r} by {unreachable}, which its handler "
            f"can never return (it returns {sorted(named)})"
        )


def _annotated_outcomes(fn: Handler) -> set[str | None] | None:
    """The outcomes a ``-> Literal[...]`` or ``-> SomeStrEnum`` annotation allows, or None."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: nothing to check
        return None
    if "return" not in hints:
        return None
    found: set[str | None] = set()
    for part in _union_parts(hints["return"]):
        if part is type(None):
            found.add(None)
        elif typing.get_origin(part) is Literal:
            found |= {trigger_of(v) for v in typing.get_args(part)}
        elif isinstance(part, type) and issubclass(part, enum.Enum):
            found |= {trigger_of(member) for member in part}
        else:
            return None  # str or something else: any name, checked at run time
    return found


def _union_parts(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def trigger_of(value: Any) -> str | None:
    """The trigger a flow handler's return value names (an Enum's value, a str, or None)."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str):
        raise TypeError(f"a flow handler returns a trigger name (str or Enum), got {value!r}")
    return value


def _check_flow_runnable(compiled: CompiledChart) -> None:
    """Refuse a flow chart the engine could get stuck in: from every state a handler runs
    in, each engine event (fail, fail_permanent, expire, release; wait for polling states)
    must have an enabled transition whatever the attempt count and deadline."""
    chart = compiled.chart
    if not chart.states_of(StateKind.FINAL):
        raise RegistrationError(f"chart {chart.name!r} has no final state")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    samples = [
        Facts(a, m, now=now, deadline=d)
        for a, m in ((1, 1), (1, 3), (2, 3), (3, 3))
        for d in (now - timedelta(seconds=1), now + timedelta(seconds=1))
    ]
    gaps = []
    for state in handler_states(chart):
        events = [T.FAIL, T.FAIL_PERMANENT, T.EXPIRE, T.RELEASE]
        if chart.state(state).polls:
            events.append(T.WAIT)
        for trigger in events:
            for facts in samples:
                if compiled.fire(state, trigger, facts) is None:
                    gaps.append(
                        f"{state} --{trigger}--> ? (attempt {facts.attempt} of "
                        f"{facts.max_attempts})"
                    )
                    break
    if gaps:
        raise RegistrationError(
            f"chart {chart.name!r} can leave a job with nowhere to go: " + "; ".join(gaps[:6])
        )
