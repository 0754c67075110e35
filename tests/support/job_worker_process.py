"""A job worker in a process of its own, for tests that kill it: `python -m tests.support.job_worker_process
<database_url> <heartbeat_s>`. It runs `hang` jobs that never finish, and prints its worker id."""

from __future__ import annotations

import asyncio
import sys

from core.db.database import Database
from core.jobs.queue import ClaimedJob
from core.jobs.worker import JobRegistry, Worker, WorkerConfig


async def main(url: str, heartbeat_s: float) -> None:
    db = Database(url)
    registry = JobRegistry()

    async def hang(job: ClaimedJob) -> None:
        await asyncio.Event().wait()

    registry.register("hang", hang)
    worker = Worker(db, registry, WorkerConfig(concurrency=1, poll_interval_s=0.05, heartbeat_s=heartbeat_s))
    worker.start()
    print(worker.id, flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
