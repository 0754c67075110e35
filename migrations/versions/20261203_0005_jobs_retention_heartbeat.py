"""Job queue: a claim in O(1) of the backlog, worker heartbeats, and retention's indexes.

- `job.blocked`: true for a live job (queued/running) whose `queue_key` already has another live job.
  Database triggers keep it in the same statement as every insert, status change and delete, on both
  databases and for every writer (`enqueue`, `enqueue_many`, ingest's raw INSERT): a new job of a busy
  key is inserted blocked; when the key's unblocked job leaves the live set (done, dead, cancelled,
  deleted) the next live job of the key (lowest id) is unblocked. The claimable index leaves blocked
  rows out, so a claim never walks the jobs waiting behind a busy key (issue 16: 580 ms per claim with
  100k blocked). On PostgreSQL the insert trigger takes a share lock on the key's unblocked job (so
  its completion waits for the enqueuing transaction and then sees the new row) and, when the key
  has no live job, a per-key advisory transaction lock (so two first jobs of a key serialize). Two
  transactions that each start the same two idle keys in opposite orders can deadlock on those
  locks; PostgreSQL then aborts one (a 503, and the platform redelivers).
- A running job's `run_at` is its lease end: the one index range `run_at <= now` then holds both the
  due queued jobs and the expired leases, and running jobs with a live lease are outside it.
- `job_worker`: one row per worker process (id, host, pid, last beat, when it counts as dead). Jobs
  held by a worker whose row expired are made claimable at once (issue 15: 60 s after a kill -9).
- `ix_job_live_queue_key` (live jobs by key, for the triggers and memory),
  `ix_job_running_locked_by` (a worker extending its leases, take-over) and
  `ix_processed_event_created_at` (retention deletes de-duplication keys by age).

Existing rows: `blocked` is computed for live keyed jobs (the lowest id of each key stays the head),
and running jobs get `run_at = locked_until`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status IN ('queued', 'running')"

# --- PostgreSQL -----------------------------------------------------------------------------------
# plpgsql functions are VOLATILE: each query inside takes a fresh snapshot, so it sees what other
# transactions committed while this statement waited for a lock (READ COMMITTED).
PG_BLOCK_FUNCTION = f"""
CREATE FUNCTION job_set_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.queue_key IS NULL OR NEW.status NOT IN ('queued', 'running') THEN
        NEW.blocked := false;
        RETURN NEW;
    END IF;
    -- The key's head: locked FOR SHARE so that its completion (which unblocks the next job) waits
    -- until this transaction commits, and then sees the row inserted here.
    PERFORM 1 FROM job WHERE queue_key = NEW.queue_key AND {LIVE} AND NOT blocked AND id <> NEW.id
        LIMIT 1 FOR SHARE;
    IF FOUND THEN
        NEW.blocked := true;
        RETURN NEW;
    END IF;
    -- No head: serialize with other first jobs of this key, then look again.
    PERFORM pg_advisory_xact_lock(1785688608, hashtext(NEW.queue_key));
    NEW.blocked := EXISTS (SELECT 1 FROM job WHERE queue_key = NEW.queue_key AND {LIVE} AND id <> NEW.id);
    RETURN NEW;
END $$
"""
PG_UNBLOCK_FUNCTION = f"""
CREATE FUNCTION job_unblock_next() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job SET blocked = false
    WHERE id = (SELECT id FROM job WHERE queue_key = OLD.queue_key AND {LIVE} ORDER BY id LIMIT 1)
      AND blocked;
    RETURN NULL;
END $$
"""
PG_TRIGGERS = [
    PG_BLOCK_FUNCTION,
    PG_UNBLOCK_FUNCTION,
    "CREATE TRIGGER job_blocked_on_insert BEFORE INSERT ON job FOR EACH ROW "
    "WHEN (NEW.queue_key IS NOT NULL) EXECUTE FUNCTION job_set_blocked()",
    # A dead job run again (retry_dead) queues up behind the key's live jobs like a new one.
    "CREATE TRIGGER job_blocked_on_revive BEFORE UPDATE OF status ON job FOR EACH ROW "
    "WHEN (NEW.queue_key IS NOT NULL AND OLD.status NOT IN ('queued', 'running') "
    "AND NEW.status IN ('queued', 'running')) EXECUTE FUNCTION job_set_blocked()",
    "CREATE TRIGGER job_unblock_on_finish AFTER UPDATE OF status ON job FOR EACH ROW "
    "WHEN (OLD.queue_key IS NOT NULL AND NOT OLD.blocked AND OLD.status IN ('queued', 'running') "
    "AND NEW.status NOT IN ('queued', 'running')) EXECUTE FUNCTION job_unblock_next()",
    "CREATE TRIGGER job_unblock_on_delete AFTER DELETE ON job FOR EACH ROW "
    "WHEN (OLD.queue_key IS NOT NULL AND NOT OLD.blocked AND OLD.status IN ('queued', 'running')) "
    "EXECUTE FUNCTION job_unblock_next()",
]
PG_DROP = [
    "DROP TRIGGER IF EXISTS job_unblock_on_delete ON job",
    "DROP TRIGGER IF EXISTS job_unblock_on_finish ON job",
    "DROP TRIGGER IF EXISTS job_blocked_on_revive ON job",
    "DROP TRIGGER IF EXISTS job_blocked_on_insert ON job",
    "DROP FUNCTION IF EXISTS job_unblock_next()",
    "DROP FUNCTION IF EXISTS job_set_blocked()",
]

# --- SQLite ---------------------------------------------------------------------------------------
# Writes are serialized (one writer), so AFTER triggers that fix the flag in the same statement are
# enough; SQLite's BEFORE triggers cannot change NEW.
_UNBLOCK_SQLITE = (
    "UPDATE job SET blocked = 0 WHERE id = (SELECT id FROM job WHERE queue_key = OLD.queue_key AND "
    f"{LIVE} ORDER BY id LIMIT 1) AND blocked; "
)
SQLITE_TRIGGERS = [
    "CREATE TRIGGER job_blocked_on_insert AFTER INSERT ON job "
    f"WHEN NEW.queue_key IS NOT NULL AND NEW.{LIVE} BEGIN "
    "UPDATE job SET blocked = 1 WHERE id = NEW.id AND EXISTS (SELECT 1 FROM job AS other "
    f"WHERE other.queue_key = NEW.queue_key AND other.{LIVE} AND other.id <> NEW.id); END",
    "CREATE TRIGGER job_blocked_on_revive AFTER UPDATE OF status ON job "
    "WHEN NEW.queue_key IS NOT NULL AND OLD.status NOT IN ('queued', 'running') "
    "AND NEW.status IN ('queued', 'running') BEGIN "
    "UPDATE job SET blocked = EXISTS (SELECT 1 FROM job AS other WHERE other.queue_key = NEW.queue_key "
    f"AND other.{LIVE} AND other.id <> NEW.id) WHERE id = NEW.id; END",
    "CREATE TRIGGER job_unblock_on_finish AFTER UPDATE OF status ON job "
    "WHEN OLD.queue_key IS NOT NULL AND NOT OLD.blocked AND OLD.status IN ('queued', 'running') "
    f"AND NEW.status NOT IN ('queued', 'running') BEGIN {_UNBLOCK_SQLITE}END",
    "CREATE TRIGGER job_unblock_on_delete AFTER DELETE ON job "
    "WHEN OLD.queue_key IS NOT NULL AND NOT OLD.blocked AND OLD.status IN ('queued', 'running') "
    f"BEGIN {_UNBLOCK_SQLITE}END",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS job_unblock_on_delete",
    "DROP TRIGGER IF EXISTS job_unblock_on_finish",
    "DROP TRIGGER IF EXISTS job_blocked_on_revive",
    "DROP TRIGGER IF EXISTS job_blocked_on_insert",
]

BACKFILL_BLOCKED = f"""
UPDATE job SET blocked = true
WHERE queue_key IS NOT NULL AND {LIVE} AND EXISTS (
    SELECT 1 FROM job AS earlier
    WHERE earlier.queue_key = job.queue_key AND earlier.id < job.id AND earlier.{LIVE})
"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("blocked", sa.Boolean(), server_default="0", nullable=False))
    op.execute(BACKFILL_BLOCKED)
    op.execute("UPDATE job SET run_at = locked_until WHERE status = 'running' AND locked_until IS NOT NULL")
    op.drop_index("ix_job_claimable", table_name="job")
    claimable = sa.text(f"{LIVE} AND NOT blocked")
    op.create_index(
        "ix_job_claimable", "job", ["run_at", "id"], postgresql_where=claimable, sqlite_where=claimable
    )
    live = sa.text(LIVE)
    op.create_index(
        "ix_job_live_queue_key", "job", ["queue_key", "id"], postgresql_where=live, sqlite_where=live
    )
    running = sa.text("status = 'running'")
    op.create_index(
        "ix_job_running_locked_by", "job", ["locked_by"], postgresql_where=running, sqlite_where=running
    )
    for statement in PG_TRIGGERS if _postgres() else SQLITE_TRIGGERS:
        op.execute(statement)

    op.create_table(
        "job_worker",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_worker")),
    )
    op.create_index(op.f("ix_job_worker_expires_at"), "job_worker", ["expires_at"])
    op.create_index("ix_processed_event_created_at", "processed_event", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_event_created_at", table_name="processed_event")
    op.drop_index(op.f("ix_job_worker_expires_at"), table_name="job_worker")
    op.drop_table("job_worker")
    for statement in PG_DROP if _postgres() else SQLITE_DROP:
        op.execute(statement)
    op.drop_index("ix_job_running_locked_by", table_name="job")
    op.drop_index("ix_job_live_queue_key", table_name="job")
    op.drop_index("ix_job_claimable", table_name="job")
    live = sa.text(LIVE)
    op.create_index("ix_job_claimable", "job", ["run_at", "id"], postgresql_where=live, sqlite_where=live)
    with op.batch_alter_table("job") as batch:
        batch.drop_column("blocked")
