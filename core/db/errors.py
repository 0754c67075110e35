"""Which exceptions mean "the database is unavailable" rather than "this request hit a bug".

The HTTP layer answers those with 503 + Retry-After (senders retry; a 500 would read as our bug) and
the metrics scrape degrades instead of failing. The line is drawn by cause, not by class alone:
SQLAlchemy wraps asyncpg's "connection was closed in the middle of operation" in a bare `DBAPIError`,
the same class as a constraint violation, so a `DBAPIError` counts only when SQLAlchemy saw the
connection die or the driver's error is one of PostgreSQL's unavailability classes.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# Always unavailability: SQLite "database is locked" / disk errors and PostgreSQL's OperationalError
# family, a pool time-out (every connection busy), a connection refused or reset before SQLAlchemy
# could wrap it.
_ALWAYS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    ConnectionError,
    OSError,  # TimeoutError is one of them
)

# SQLSTATE classes and codes (PostgreSQL appendix A) that say "not now" rather than "never":
# 08 connection exception, 53 insufficient resources (too many connections), 57P01-57P03 admin or
# crash shutdown and "cannot connect now" (a failover or restart), 25006 a write sent to a server that
# is a read-only standby (just demoted by a failover).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03", "25006")


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` comes from a database that is down, restarting, failing over or saturated."""
    if isinstance(exc, _ALWAYS):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return any(_unavailable_cause(cause) for cause in _causes(exc.orig))
    return False


def _causes(exc: BaseException | None) -> list[BaseException]:
    """The exception and what it was raised from (the async drivers wrap the real error), bounded."""
    seen: list[BaseException] = []
    while exc is not None and len(seen) < 8 and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _unavailable_cause(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, OSError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
