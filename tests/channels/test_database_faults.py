"""A database that goes away is a 503 with Retry-After on every route, never a 500 (issue 15.4).

PostgreSQL runs behind a real TCP proxy (tests/support/tcp_proxy.py) that the tests break on cue:
a connection dropped in the middle of a statement (asyncpg's "connection was closed in the middle of
operation", which SQLAlchemy wraps in a bare DBAPIError), a failover (the port refuses, then resets),
and, on both databases, a pool with every connection busy (a pool time-out). Each time the service
comes back by itself once the database does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from core.db.database import Database
from tests.channels.conftest import build_app, fixture_bytes, make_settings, post_signed
from tests.support.faults import every_connection_busy
from tests.support.tcp_proxy import TcpProxy

MESSENGER = "/webhook/facebook"
SESSION = "s" * 16


def _through(proxy: TcpProxy, database_url: str) -> str:
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(database_url)
    tcp = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield tcp
    finally:
        await tcp.close()


@pytest.fixture
async def proxied(proxy: TcpProxy, database_url: str, db: Database) -> AsyncIterator[Database]:
    """The test database reached through the proxy (`db` empties its tables first)."""
    database = Database(_through(proxy, database_url), pool_size=2)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def served(aiohttp_client: Any, proxied: Database, database_url: str) -> Any:
    """The app on the proxied database, one request served (the pool holds a live connection)."""
    client = await aiohttp_client(build_app(proxied, make_settings(database_url)))
    assert _ok(await _chat(client, "warm the pool"))
    return client


async def _chat(client: Any, text: str = "hi") -> Any:
    return await client.post("/api/chat", json={"session_id": SESSION, "message": text})


def _ok(response: Any) -> bool:
    return bool(response.status in (200, 202))  # 202: stored, the answer comes by polling


async def _assert_503(response: Any) -> None:
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"] == "5"
    assert "retry later" in (await response.json())["error"]


@pytest.mark.postgres_only
async def test_a_connection_dropped_mid_statement_is_a_503_then_the_service_recovers(
    served: Any, proxy: TcpProxy
) -> None:
    client = served
    raw = fixture_bytes("messenger_text")

    proxy.cut_on_next_write()
    await _assert_503(await _chat(client, "dropped"))
    proxy.cut_on_next_write()
    await _assert_503(await post_signed(client, MESSENGER, raw))
    proxy.cut_on_next_write()
    await _assert_503(await client.get(f"/api/chat/{SESSION}/messages"))

    # The dead connections were thrown away: the next requests reconnect and succeed.
    assert _ok(await _chat(client, "back"))
    assert (await post_signed(client, MESSENGER, raw)).status == 200


@pytest.mark.postgres_only
async def test_the_driver_error_is_the_one_seen_in_production(proxied: Database, proxy: TcpProxy) -> None:
    """The reproduction's premise: what the cut raises is a bare DBAPIError, not an OperationalError."""
    from core.db.errors import database_unavailable

    async with proxied.engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
        proxy.cut_on_next_write()
        with pytest.raises(sa_exc.DBAPIError) as caught:
            await conn.exec_driver_sql("SELECT 1")
    assert not isinstance(caught.value, sa_exc.OperationalError | sa_exc.InterfaceError)
    assert "closed in the middle of operation" in str(caught.value)
    assert database_unavailable(caught.value)


@pytest.mark.postgres_only
async def test_a_failover_refused_then_reset_is_a_503_until_the_database_is_back(
    served: Any, proxy: TcpProxy
) -> None:
    client = served
    await proxy.refuse()  # the old primary is gone: pooled connections die, new ones are refused
    await _assert_503(await _chat(client, "during"))
    await _assert_503(await _chat(client, "during, again"))
    await _assert_503(await post_signed(client, MESSENGER, fixture_bytes("messenger_text")))

    await proxy.resume()
    proxy.reset_new = True  # the new primary accepts, then resets while it is still starting
    await _assert_503(await _chat(client, "starting"))

    proxy.reset_new = False
    assert _ok(await _chat(client, "after"))


async def test_a_pool_time_out_is_a_503(aiohttp_client: Any, database_url: str, db: Database) -> None:
    tiny = Database(database_url, pool_size=1, pool_timeout_s=0.2)
    try:
        client = await aiohttp_client(build_app(tiny, make_settings(database_url)))
        async with every_connection_busy(tiny):
            await _assert_503(await _chat(client, "nobody free"))
            await _assert_503(await post_signed(client, MESSENGER, fixture_bytes("messenger_text")))
        assert _ok(await _chat(client, "free again"))
    finally:
        await tiny.dispose()
