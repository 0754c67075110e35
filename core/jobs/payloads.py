"""Typed job payloads: one pydantic model per job kind, checked when the job is enqueued.

A payload is stored as JSON and read back by a handler that may run in another process, days later,
after a deploy. A typo in a key, or an id passed as a string, used to surface only then, as a dead job.
Declaring the payload's shape next to its kind moves that failure to the line that enqueued it, inside
the caller's transaction, so the business change that would have produced a broken job rolls back too.

    @job_payload("booking.reminder")
    class ReminderPayload(JobPayload):
        appointment_id: int
        kind: str

    await enqueue(session, "booking.reminder", ReminderPayload(appointment_id=7, kind="day").dump())
    ...
    async def reminder(job: ClaimedJob) -> None:
        payload = ReminderPayload.load(job.payload)

Every registered job kind has a model (tests/core/test_job_payloads.py checks the whole runtime).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.jobs.errors import PermanentJobError


class JobPayloadError(PermanentJobError, ValueError):
    """A payload that does not match its kind's model, or a kind with no model.

    Raised by `enqueue` in the caller's transaction (which then rolls back), and by `load` in a
    handler: there it is a PermanentJobError, so a stored malformed payload ends its job dead at
    once instead of failing the same way on every retry."""


class JobPayload(BaseModel):
    """Base of every job payload: immutable, and unknown keys are an error rather than silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict the queue stores (datetimes as ISO strings)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def load(cls, payload: Mapping[str, Any]) -> Self:
        """Read a stored payload back; a malformed one is permanent (retrying cannot fix it)."""
        try:
            return cls.model_validate(dict(payload))
        except ValidationError as exc:
            raise JobPayloadError(f"{cls.__name__}: {_describe(exc)}") from None


_MODELS: dict[str, type[JobPayload]] = {}

P = TypeVar("P", bound=type[JobPayload])


def job_payload(kind: str) -> Callable[[P], P]:
    """Class decorator: `model` is the payload of jobs of `kind`."""

    def register(model: P) -> P:
        existing = _MODELS.get(kind)
        if existing is not None and existing is not model:
            raise ValueError(f"job kind {kind!r} already has payload model {existing.__name__}")
        _MODELS[kind] = model
        return model

    return register


def payload_model(kind: str) -> type[JobPayload] | None:
    return _MODELS.get(kind)


def check_payload(kind: str, payload: Mapping[str, Any]) -> None:
    """Raise JobPayloadError unless `payload` is a valid payload of `kind`."""
    model = _MODELS.get(kind)
    if model is None:
        raise JobPayloadError(f"job kind {kind!r} has no payload model (declare one with @job_payload)")
    try:
        model.model_validate(dict(payload))
    except ValidationError as exc:
        raise JobPayloadError(f"job {kind!r}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    # Field names and messages only: a payload may hold a customer's text, which stays out of logs.
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
