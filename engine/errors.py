"""Exceptions users see: each says what went wrong and what to do about it."""

from __future__ import annotations


class JobchartsError(Exception):
    """Base class of every error jobcharts raises on purpose."""


class Permanent(Exception):
    """Raise from a handler to quarantine the job at once: retrying cannot help."""


class RegistrationError(JobchartsError):
    """A job declaration the engine refuses to run."""


class IdempotencyRequired(RegistrationError):
    """A job registered without saying why running it twice is safe."""


class UnknownJobKind(JobchartsError, KeyError):
    """An enqueue (or lookup) names a job kind no handler is registered for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job kind"


class JobNotFound(JobchartsError, KeyError):
    """No job has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "job not found"


class TransitionNotAllowed(JobchartsError):
    """The job's chart has no enabled transition for this action from the job's state."""


class StepResultError(JobchartsError, TypeError):
    """A ``ctx.step`` result that cannot be stored as JSON."""


class ResultTooLarge(StepResultError):
    """A result (a handler's, or a step's) whose JSON is over the engine's size limit."""


class PayloadTooLarge(JobchartsError, ValueError):
    """A payload whose JSON is over the engine's size limit: refused, nothing stored."""


class Cancelled(JobchartsError):
    """An operator cancelled this job while its handler ran: ``ctx.step`` raises it before
    starting another step, and the job goes to cancelled instead of retrying."""


class LeaseLost(JobchartsError):
    """This attempt no longer holds the job's lease: its writes are fenced out."""


class DatabaseBound(JobchartsError):
    """The engine already opened its database; it cannot be rebound."""


class SchemaMismatch(JobchartsError):
    """The database was created by a jobcharts with another schema version."""


class BadDatabaseURL(JobchartsError, ValueError):
    """A database URL jobcharts cannot use as written."""


class NoSchema(JobchartsError):
    """A command that only reads or changes jobs met a database without jobcharts' tables
    (it creates nothing: a wrong URL must not leave tables in an app's database)."""


class MissingExtra(JobchartsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
