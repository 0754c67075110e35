"""Payload models of the job kinds tests invent (queue mechanics, metrics).

Every enqueue is checked against its kind's model (core/jobs/payloads.py), test kinds included.
Declared once here: the model registry is process-wide, and a kind has one model. A test module
that enqueues one of these kinds imports this module.
"""

from __future__ import annotations

from core.jobs.payloads import JobPayload, job_payload


class Numbered(JobPayload):
    n: int | None = None


class Empty(JobPayload):
    pass


@job_payload("note")
class NotePayload(JobPayload):
    """The queue tests' all-purpose kind: a text, a number or a name, each optional."""

    text: str | None = None
    n: int | None = None
    name: str | None = None


@job_payload("sync_calendar")
class SyncCalendarPayload(JobPayload):
    appointment_id: int


@job_payload("welcome")
class WelcomePayload(JobPayload):
    name: str


@job_payload("ordered")
class OrderedPayload(JobPayload):
    conversation: str
    seq: int


@job_payload("turn")
class TurnPayload(JobPayload):
    """tests/core/test_job_order.py: one customer's (key) message number seq."""

    key: str
    seq: int


NUMBERED = (
    "send",
    "reminder",
    "effect",
    "send_reminder",
    "ok_job",
    "broken_job",
    "flaky_job",
    "metrics_note",
    "hang",
    "long",
)
for _kind in NUMBERED:
    job_payload(_kind)(Numbered)
for _kind in ("nobody_handles_this", "slow", "short", "hangs"):
    job_payload(_kind)(Empty)
