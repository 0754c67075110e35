"""The signals a job handler raises to steer the queue (retry later, or give up now).

Their own module so that core/jobs/payloads.py can make a malformed payload a PermanentJobError
without importing the queue (which imports payloads to check what it stores). core/jobs/queue.py
re-exports both; handlers import them from there.
"""

from __future__ import annotations


class RetryLater(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a handler to be run again after `delay_s` (e.g. a platform's retry_after)."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s:.1f}s")
        self.delay_s = delay_s


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job goes dead at once."""
