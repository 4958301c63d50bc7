"""Kinds owned once: the database records each job kind's app and payload schema, and a
worker that registers a kind differently is refused at start instead of quarantining the
other app's jobs (or answering its enqueues with the other app's job ids).

A changed schema is accepted when no job of the kind is in flight, or when every payload
in flight still validates under the new model (checked, not assumed), or when the
registration declares the change (``schema_change="why"``: jobs whose payloads no longer
validate are then quarantined ``invalid_payload`` when they run, as the app accepted).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from engine.errors import JobchartsError
from engine.registry import JobSpec, Registry
from engine.store import Store
from engine.store.versions import KindRecord

CHECKED_PAYLOADS = 10_000  # in-flight payloads validated against a changed schema


class KindConflict(JobchartsError):
    """A kind this app registers is recorded otherwise, with jobs in flight."""


@dataclass(frozen=True)
class KindChange:
    """A kind whose recorded schema or app changes, and why that is allowed."""

    kind: str
    before: KindRecord
    after: KindRecord
    why: str


def payload_schema(spec: JobSpec) -> tuple[dict[str, Any], str]:
    """The JSON Schema of the kind's payload model, and its hash."""
    schema = spec.payload.model_json_schema()
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return schema, hashlib.sha256(text.encode()).hexdigest()[:12]


def app_of(spec: JobSpec) -> str:
    """Which code registered the kind: the module of its handler(s)."""
    handler = next(iter(spec.steps.values())).handler if spec.steps else spec.handler
    return str(getattr(handler, "__module__", None) or "?")


def own_kinds(
    registry: Registry, store: Store, now: datetime, *, record: bool = True
) -> list[KindChange]:
    """Record this app's kinds, refusing (KindConflict) any recorded otherwise while jobs
    of it are in flight that the new payload model would not take. Returns the changes;
    ``record`` False only checks (``check --db``)."""
    recorded = store.kind_records(registry.kinds)
    fresh: list[KindRecord] = []
    changes: list[KindChange] = []
    problems: list[str] = []
    for spec in registry.specs:
        schema, digest = payload_schema(spec)
        mine = KindRecord(spec.kind, app_of(spec), digest, schema, now)
        before = recorded.get(spec.kind)
        if before is not None and before.schema_hash == digest and before.app == mine.app:
            continue
        if before is None or before.schema_hash == digest:
            fresh.append(mine)
            continue
        why, problem = _judge(spec, store, before, mine)
        if problem:
            problems.append(problem)
        else:
            fresh.append(mine)
            changes.append(KindChange(spec.kind, before, mine, why))
    if problems:
        raise KindConflict(" ".join(problems))
    if record:
        store.kind_record(fresh)
    return changes


def check_enqueue(spec: JobSpec, store: Store) -> None:
    """Refuse to enqueue a kind that another app owns with another payload schema: its
    workers would quarantine these jobs, or answer their keys with its own jobs' ids."""
    recorded = store.kind_records([spec.kind]).get(spec.kind)
    if recorded is None or recorded.app == app_of(spec):
        return
    schema, digest = payload_schema(spec)
    if recorded.schema_hash == digest:
        return
    raise KindConflict(
        f"job kind {spec.kind!r} belongs to another app ({recorded.app}) with payload schema "
        f"{recorded.schema_hash} {_fields(recorded.payload_schema)}; {app_of(spec)} would "
        f"enqueue schema {digest} {_fields(schema)}, which its workers do not take. Nothing "
        "stored: give the kind another name"
    )


def _judge(
    spec: JobSpec, store: Store, before: KindRecord, mine: KindRecord
) -> tuple[str, str | None]:
    """(why the change is allowed, or the refusal)."""
    in_flight, payloads = store.job_payloads_unfinished(spec.kind, CHECKED_PAYLOADS)
    if in_flight == 0:
        return "no job of the kind is in flight", None
    failing = sum(1 for p in payloads if not _validates(spec, p))
    checked = len(payloads)
    if failing == 0 and checked == in_flight:
        return f"all {in_flight} payload(s) in flight validate under the new model", None
    declared = spec.schema_change
    if declared:
        return f"declared: {declared}", None
    who = "another app" if before.app != mine.app else "this app, before this deploy,"
    failed = (
        f"{failing} of the {checked} payload(s) checked no longer validate"
        if failing
        else f"only {checked} of {in_flight} payloads could be checked"
    )
    return "", (
        f"job kind {spec.kind!r} is registered by {who} ({before.app}) with payload schema "
        f"{before.schema_hash} {_fields(before.payload_schema)}; {mine.app} registers it with "
        f"schema {mine.schema_hash} {_fields(mine.payload_schema)}, and {in_flight} job(s) of "
        f"it are in flight: {failed}. Give the kind another name, or declare the change "
        f"with schema_change='why' (those jobs then quarantine as invalid_payload)."
    )


def _validates(spec: JobSpec, payload: Any) -> bool:
    try:
        spec.payload.model_validate(payload)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def _fields(schema: dict[str, Any]) -> str:
    """``{order_id: integer, email: string}``: a schema's fields, to name it in a message."""
    properties = schema.get("properties", {})
    parts = [f"{name}: {s.get('type', s.get('$ref', '?'))}" for name, s in properties.items()]
    return "{" + ", ".join(parts) + "}"
