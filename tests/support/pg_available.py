"""`python -m tests.support.pg_available URL`: exit 0 when PostgreSQL answers there."""

import asyncio
import sys

import asyncpg


async def _check(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(_check(sys.argv[1])) else 1)
