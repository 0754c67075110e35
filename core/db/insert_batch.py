"""INSERTs whose values are all known in Python, written together in one round trip.

The tail of a business change (its domain event, the jobs its follow-ups start) is a handful of
INSERTs into different tables. One at a time, each costs a round trip and
SQLAlchemy's per-statement work, which was most of a booking request's time. Inside
`inserts_together(session)`, `enqueue()` and `emit()` add their rows to the open batch instead of
executing them, and the batch is written when the block ends without an error: on PostgreSQL as one
statement (each earlier INSERT a data-modifying CTE of the last), on SQLite one statement per table
(in process: there is no round trip to save).

One table's rows go in one multi-row INSERT, in the order they were added (so a queue key's jobs keep
their order). The order between tables is not kept: PostgreSQL runs a statement's CTEs in no set
order, and the foreign keys are checked at the statement's end. What the block's code reads or updates
meanwhile (a cancelled reminder, a conversation looked up) runs at once, so a row added to the batch
is not visible to it: add rows only for what nobody reads before the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.database import dialect_name

BATCH_KEY = "cheshire.insert_batch"


@dataclass(slots=True)
class _Rows:
    table: Table
    rows: list[dict[str, Any]]
    skip_conflicts_on: tuple[str, ...]


@dataclass(slots=True)
class InsertBatch:
    parts: list[_Rows] = field(default_factory=list)

    def add(
        self, table: Table, rows: Sequence[Mapping[str, Any]], *, skip_conflicts_on: Sequence[str] = ()
    ) -> None:
        """Queue rows for `table`, after its earlier ones. With `skip_conflicts_on`, a row clashing
        with an existing one on that unique column is skipped (ON CONFLICT DO NOTHING), as
        `enqueue()` does for its key. Every row of one table must have the same columns."""
        if not rows:
            return
        conflict = tuple(skip_conflicts_on)
        part = next((p for p in self.parts if p.table is table), None)
        if part is None:
            part = _Rows(table, [], conflict)
            self.parts.append(part)
        for row in rows:
            if part.skip_conflicts_on != conflict or (part.rows and part.rows[0].keys() != row.keys()):
                raise ValueError(f"rows for {table.name} must share their columns and conflict rule")
            part.rows.append(dict(row))

    async def write(self, session: AsyncSession) -> None:
        parts, self.parts = self.parts, []
        if not parts:
            return
        postgres = dialect_name(session) == "postgresql"
        statements = [_insert(part, postgres=postgres) for part in parts]
        if postgres and len(statements) > 1:
            ctes = [stmt.cte(f"batch_{n}") for n, stmt in enumerate(statements[:-1])]
            await session.execute(statements[-1].add_cte(*ctes))
            return
        for stmt in statements:
            await session.execute(stmt)


def _insert(part: _Rows, *, postgres: bool) -> Any:
    insert = pg_insert if postgres else sqlite_insert
    stmt = insert(part.table).values(part.rows)
    if part.skip_conflicts_on:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(part.skip_conflicts_on))
    return stmt


def open_batch(session: AsyncSession) -> InsertBatch | None:
    """The batch of the `inserts_together` block this session is in, if any."""
    batch = session.info.get(BATCH_KEY)
    return batch if isinstance(batch, InsertBatch) else None


@asynccontextmanager
async def inserts_together(session: AsyncSession) -> AsyncIterator[InsertBatch]:
    """Collect the block's INSERTs and write them together when it ends. Nested blocks share the
    outermost batch. On an error nothing of the batch is written (the transaction rolls back)."""
    outer = open_batch(session)
    if outer is not None:
        yield outer
        return
    batch = InsertBatch()
    session.info[BATCH_KEY] = batch
    try:
        yield batch
    finally:
        session.info.pop(BATCH_KEY, None)
    await batch.write(session)
