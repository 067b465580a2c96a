"""Proxy headers: who the client is when a trusted reverse proxy says so.

`--forwarded-allow-ips` lists the peers (addresses or CIDR networks, `*` for
any) whose `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` headers are
believed. A request from any other peer keeps the peer's address and "http",
whatever headers it carries.

The address list is walked from the right (the hop nearest to us) leftwards,
skipping trusted proxies: the first untrusted address is the client. A client
cannot forge its way in by sending its own header, because the proxy appends
the address it saw after whatever the client sent. When a request carries
both, `X-Forwarded-For` wins over `Forwarded` (nginx's usual configuration
appends to the former and passes the latter through untouched).

A peer on a unix socket (address "") is trusted: only local processes allowed
by the socket's file permissions can connect.

This module must not import the C extension; the worker calls resolve()
lazily, when a handler reads `remote_addr` or `scheme` (and for every WSGI
request, whose environ carries both).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Protocol

__all__ = ["ProxyPolicy", "configure", "parse_allow_ips", "policy", "resolve"]

ALLOW_EXPECTED = "expected IP addresses or CIDR networks separated by commas, or '*'"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _HasHeaders(Protocol):
    @property
    def headers(self) -> Any: ...


def _address(text: str) -> Address | None:
    """An address from a header value: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxyPolicy:
    """The trusted proxies, and how a request's client is found from them."""

    def __init__(self, networks: tuple[Network, ...], trust_all: bool = False) -> None:
        self.networks = networks
        self.trust_all = trust_all
        self._peers: dict[str, bool] = {}  # peer text -> trusted (few distinct peers)

    def trusts_address(self, address: Address) -> bool:
        return self.trust_all or any(address in network for network in self.networks)

    def trusts(self, peer: str) -> bool:
        """Whether the connection's peer (as text, "" for a unix socket) is trusted."""
        known = self._peers.get(peer)
        if known is not None:
            return known
        if peer == "":
            trusted = True
        else:
            address = _address(peer)
            trusted = address is not None and self.trusts_address(address)
        if len(self._peers) < 4096:
            self._peers[peer] = trusted
        return trusted

    def _walk(self, hops: list[str]) -> tuple[str | None, int]:
        """The client among hops (nearest last) and its index; (None, -1) if none."""
        client: str | None = None
        index = -1
        for i in range(len(hops) - 1, -1, -1):
            address = _address(hops[i])
            if address is None:
                break  # "unknown", an obfuscated name, garbage: stop at the last good hop
            client, index = str(address), i
            if not self.trusts_address(address):
                break
        return client, index

    def resolve(self, peer: str, headers: Any) -> tuple[str, str]:
        """(client address, scheme) for a request from peer with these headers."""
        if not self.trusts(peer):
            return peer, "http"
        client, scheme = peer, "http"
        xff = headers.get_all("x-forwarded-for")
        forwarded = headers.get_all("forwarded") if not xff else []
        if xff:
            hops = [hop.strip() for line in xff for hop in line.split(",") if hop.strip()]
            found, _ = self._walk(hops)
            client = found or client
        elif forwarded:
            elements = [_forwarded_pairs(e) for line in forwarded for e in _split_quoted(line, ",")]
            found, index = self._walk([element.get("for", "") for element in elements])
            if found is not None:
                client = found
                proto = elements[index].get("proto", "").lower()
                if _SCHEME.fullmatch(proto):
                    scheme = proto
        protos = headers.get_all("x-forwarded-proto")
        if protos:
            # the value the nearest proxy added
            proto = protos[-1].split(",")[-1].strip().lower()
            if _SCHEME.fullmatch(proto):
                scheme = proto
        return client, scheme


def _split_quoted(text: str, separator: str) -> list[str]:
    """text split at separator outside double quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _forwarded_pairs(element: str) -> dict[str, str]:
    """`for=1.2.3.4;proto=https` -> {"for": "1.2.3.4", "proto": "https"} (RFC 7239)."""
    pairs: dict[str, str] = {}
    for pair in _split_quoted(element, ";"):
        name, sep, value = pair.partition("=")
        if sep:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def parse_allow_ips(text: str) -> ProxyPolicy:
    """`127.0.0.1,10.0.0.0/8,::1` or `*` -> a policy; raises ValueError."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if "*" in entries:
        if len(entries) > 1:
            raise ValueError(ALLOW_EXPECTED)
        return ProxyPolicy((), trust_all=True)
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{ALLOW_EXPECTED}; {entry!r} is neither") from None
    return ProxyPolicy(tuple(networks))


policy: ProxyPolicy | None = None  # set in the primary before the workers fork


def configure(allow_ips: ProxyPolicy | str | None) -> None:
    """Sets the policy of this process (and of the workers it forks later)."""
    global policy
    if isinstance(allow_ips, str):
        allow_ips = parse_allow_ips(allow_ips)
    policy = allow_ips if allow_ips is not None and (
        allow_ips.trust_all or allow_ips.networks
    ) else None


def resolve(peer: str, request: _HasHeaders) -> tuple[str, str]:
    """(client address, scheme) of a request from peer; the peer and "http"
    unless the peer is a trusted proxy."""
    current = policy
    if current is None:
        return peer, "http"
    return current.resolve(peer, request.headers)
