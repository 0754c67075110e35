"""Which address a request comes from, when proxies stand in between (the per-IP rate limits key on it).

A forwarding header is only as trustworthy as whoever set it. `CLIENT_IP_HEADER` names the header
(`X-Forwarded-For`, `CF-Connecting-IP`, ...) and `TRUSTED_PROXIES` the networks allowed to set it:

- the TCP peer comes first: if it is not a trusted proxy, it is the client, whatever the headers say
  (a port reachable without Cloudflare cannot claim to be anyone);
- the header is then read right to left, as the hops appended it: each entry a trusted proxy wrote is
  believed, and the first entry that is not itself a trusted proxy is the client. Whatever a client
  puts on the left of a list is never reached, so a spoofed `X-Forwarded-For` rotates nothing;
- an entry that is not an IP address ends the walk at the trusted hop that forwarded it.

A single-valued header (`CF-Connecting-IP`) is the one-entry case: it counts only from a trusted peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An entry longer than this is not an address (IPv6 with a zone and a port fits in far less).
_MAX_ENTRY = 64
# A header with more entries than this is read only this far from the right (bounded work).
_MAX_HOPS = 32


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """CIDRs (or bare addresses) → networks (Settings has checked their syntax: TRUSTED_PROXIES)."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def parse_address(text: str) -> IpAddress | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
    IPv4-mapped IPv6 (`::ffff:1.2.3.4`, a dual-stack socket's view) is the IPv4 address."""
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientIpResolver:
    def __init__(self, header: str | None, trusted: Iterable[IpNetwork]) -> None:
        self.header = header
        self.trusted = tuple(trusted)

    def is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str | None, forwarded: str | None) -> str:
        """The client's address, given the TCP peer and the header's value (None if absent)."""
        client = parse_address(peer) if peer else None
        if client is None:
            return (peer or "unknown")[:_MAX_ENTRY]
        if not self.header or not forwarded:
            return str(client)
        for entry in reversed(forwarded.split(",")[-_MAX_HOPS:]):
            if not self.is_trusted(client):
                break  # `client` was not written by a proxy we trust: it is the client
            hop = parse_address(entry)
            if hop is None:
                break  # garbage from here on: the trusted hop that forwarded it answers for it
            client = hop
        return str(client)
