"""`python -m core.jobs dead [--limit N]` lists dead jobs with their last error, then the kinds still
retrying after failures (an integration whose vendor is down: n8n, Twenty);
`python -m core.jobs retry <id>` gives one a fresh set of attempts;
`python -m core.jobs workers` lists the worker processes' heartbeats and the jobs each is running.

Uses the same settings (DATABASE_URL, .env) as the service. Exit codes: 0 ok, 1 no such dead job,
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy import func, select

from core.db.database import Database
from core.db.models import Job, JobWorker, utcnow
from core.jobs import queue
from core.settings import Settings, SettingsError


async def _list_dead(db: Database, limit: int) -> int:
    async with db.transaction() as session:
        jobs = await queue.dead_jobs(session, limit=limit)
        retrying = await queue.retrying_jobs(session)
    _print_dead(jobs)
    for group in retrying:
        at = group.next_run_at.isoformat(timespec="seconds")
        print(f"retrying: {group.kind}  {group.count} waiting  next={at}")
        print(f"    {(group.last_error.strip().splitlines() or ['-'])[0][:300]}")
    return 0


def _print_dead(jobs: list[Job]) -> None:
    if not jobs:
        print("no dead jobs")
        return
    for job in jobs:
        finished = job.finished_at.isoformat(timespec="seconds") if job.finished_at else "-"
        print(f"#{job.id}  {job.kind}  attempts={job.attempts}/{job.max_attempts}  died={finished}")
        error = (job.last_error or "(no error recorded)").strip()
        for line in error.splitlines()[:5]:
            print(f"    {line}")


async def _retry(db: Database, job_id: int) -> int:
    async with db.transaction() as session:
        ok = await queue.retry_dead(session, job_id)
    if not ok:
        print(f"job #{job_id} is not dead (or does not exist)", file=sys.stderr)
        return 1
    print(f"job #{job_id} queued again; a running service picks it up within its poll interval")
    return 0


async def _list_workers(db: Database) -> int:
    async with db.transaction() as session:
        workers = list(await session.scalars(select(JobWorker).order_by(JobWorker.started_at)))
        running = dict(
            (
                await session.execute(
                    select(Job.locked_by, func.count()).where(Job.status == "running").group_by(Job.locked_by)
                )
            ).all()
        )
    if not workers:
        print("no worker heartbeats")
    now = utcnow()
    for worker in workers:
        state = "alive" if worker.expires_at >= now else "DEAD (its jobs are taken over on the next beat)"
        age = (now - worker.beat_at).total_seconds()
        print(f"{worker.id}  last beat {age:.1f} s ago  running={running.pop(worker.id, 0)}  {state}")
    for holder, count in running.items():  # held by a worker without a heartbeat row
        print(f"{holder}  no heartbeat  running={count}  (free again when the lease ends)")
    return 0


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.database_url)
    try:
        if args.command == "dead":
            return await _list_dead(db, args.limit)
        if args.command == "workers":
            return await _list_workers(db)
        return await _retry(db, args.job_id)
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs", description="Inspect the job queue.")
    sub = parser.add_subparsers(dest="command", required=True)
    dead = sub.add_parser("dead", help="list dead jobs with their last error")
    dead.add_argument("--limit", type=int, default=50)
    retry = sub.add_parser("retry", help="run a dead job again")
    retry.add_argument("job_id", type=int)
    sub.add_parser("workers", help="worker heartbeats and the jobs each runs")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"cheshire: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_main(args, settings))


if __name__ == "__main__":
    sys.exit(main())
