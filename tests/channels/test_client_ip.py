"""Client IP behind proxies (issue 15.8): `X-Forwarded-For` read right to left past `TRUSTED_PROXIES`,
`CF-Connecting-IP` believed only from a trusted peer. Before, the left-most value was trusted, so a
spoofed header rotated past the per-IP limits."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.client_ip import ClientIpResolver, parse_address, parse_networks
from core.db.database import Database
from core.settings import Settings, SettingsError
from tests.channels.conftest import build_app, make_settings

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.0/8", "::1/128"])
XFF = ClientIpResolver("X-Forwarded-For", TRUSTED)

trusted_hops = st.ip_addresses(network="10.0.0.0/8").map(str)
untrusted = st.ip_addresses().filter(lambda a: not XFF.is_trusted(a)).map(str)
anything = st.text(max_size=80)


def _normal(text: str) -> str:
    address = parse_address(text)
    assert address is not None
    return str(address)


# --- The parsing, as properties -----------------------------------------------------------------------


@given(client=untrusted, hops=st.lists(trusted_hops, min_size=1, max_size=5), spoof=st.lists(anything))
def test_the_client_is_the_first_untrusted_entry_from_the_right_whatever_it_says_on_the_left(
    client: str, hops: list[str], spoof: list[str]
) -> None:
    *forwarders, peer = hops  # each proxy appends the address it got the request from
    header = ", ".join([*spoof, client, *forwarders])
    assert XFF.resolve(peer, header) == _normal(client)


@given(peer=untrusted, header=anything)
def test_an_untrusted_peer_is_the_client_whatever_the_header_says(peer: str, header: str) -> None:
    assert XFF.resolve(peer, header) == _normal(peer)
    cf = ClientIpResolver("CF-Connecting-IP", TRUSTED)
    assert cf.resolve(peer, header) == _normal(peer)


@given(peer=st.one_of(untrusted, trusted_hops), header=anything)
def test_the_answer_is_always_the_peer_or_an_address_in_the_header(peer: str, header: str) -> None:
    result = XFF.resolve(peer, header)
    candidates = {_normal(peer)} | {
        str(address) for entry in header.split(",") if (address := parse_address(entry)) is not None
    }
    assert result in candidates
    ipaddress.ip_address(result)  # always an address, never the header's text


@given(hops=st.lists(trusted_hops, min_size=2, max_size=6))
def test_when_every_hop_is_trusted_the_left_most_is_the_client(hops: list[str]) -> None:
    *entries, peer = hops
    assert XFF.resolve(peer, ",".join(entries)) == _normal(entries[0])


@given(peer=st.one_of(untrusted, trusted_hops), header=anything)
def test_without_client_ip_header_the_peer_is_the_client(peer: str, header: str) -> None:
    assert ClientIpResolver(None, TRUSTED).resolve(peer, header) == _normal(peer)


def test_garbage_stops_at_the_trusted_hop_that_forwarded_it() -> None:
    assert XFF.resolve("10.0.0.1", "203.0.113.9, not-an-ip") == "10.0.0.1"
    assert XFF.resolve("10.0.0.1", "203.0.113.9, 10.0.0.2") == "203.0.113.9"
    assert XFF.resolve("::ffff:10.0.0.1", "[2001:db8::5]:443") == "2001:db8::5"
    assert XFF.resolve("10.0.0.1", "198.51.100.4:5678") == "198.51.100.4"


def test_trusted_proxies_setting_is_a_list_of_cidrs(database_url: str) -> None:
    default = Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    assert default.trusted_proxies == ["127.0.0.0/8", "::1/128"]  # cloudflared / nginx on this host
    parsed = Settings(_env_file=None, database_url=database_url, trusted_proxies="10.0.0.0/8, 2001:db8::/32")  # type: ignore[call-arg]
    assert parsed.trusted_proxies == ["10.0.0.0/8", "2001:db8::/32"]
    assert Settings(_env_file=None, database_url=database_url, trusted_proxies="").trusted_proxies == []  # type: ignore[call-arg]
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings.load(_env_file=None, database_url=database_url, trusted_proxies="10.0.0.0/8,office")


# --- Through the app: the per-IP limit on /api/chat (the test client's peer is 127.0.0.1) -------------


async def _statuses(client: Any, headers: list[dict[str, str]]) -> list[int]:
    statuses = []
    for n, header in enumerate(headers):
        body = {"session_id": f"{n:x}" * 16, "message": "hi"}
        statuses.append((await client.post("/api/chat", json=body, headers=header)).status)
    return statuses


async def test_a_spoofed_forwarded_for_does_not_rotate_past_the_ip_limit(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    settings = make_settings(
        database_url, client_ip_header="X-Forwarded-For", chat_ip_rate_limit_per_minute=2
    )
    client = await aiohttp_client(build_app(db, settings))
    # One client behind the local proxy, writing a new "client" on the left every time.
    spoofed = [{"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"} for n in range(3)]
    assert await _statuses(client, spoofed) == [202, 202, 429]
    # Another client (the proxy's right-most entry differs) has its own budget.
    assert await _statuses(client, [{"X-Forwarded-For": "203.0.113.8"}]) == [202]


async def test_cf_connecting_ip_counts_only_from_a_trusted_peer(
    aiohttp_client: Any, db: Database, database_url: str
) -> None:
    headers = [{"CF-Connecting-IP": f"198.51.100.{n}"} for n in range(3)]
    # Cloudflare Tunnel: cloudflared on this host is the peer, so each visitor has their own budget.
    tunnel = make_settings(database_url, client_ip_header="CF-Connecting-IP", chat_ip_rate_limit_per_minute=2)
    assert await _statuses(await aiohttp_client(build_app(db, tunnel)), headers) == [202, 202, 202]
    # The same port reached without Cloudflare (the peer is not a trusted proxy): the header is ignored.
    exposed = make_settings(
        database_url,
        client_ip_header="CF-Connecting-IP",
        trusted_proxies=["10.0.0.0/8"],
        chat_ip_rate_limit_per_minute=2,
    )
    assert await _statuses(await aiohttp_client(build_app(db, exposed)), headers) == [202, 202, 429]
