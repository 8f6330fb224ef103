"""Where a webhook may go (SSRF defence). A webhook URL names a host anyone with an admin
key chose, and meterline POSTs to it from inside the network. Unless private
destinations are allowed (``allow_private``, default the
``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` environment variable), a host is refused if any
address it resolves to is loopback, link-local (169.254.169.254, the cloud metadata
service, is one), private (RFC 1918, unique local fc00::/7), unspecified, multicast or
otherwise not globally routable (an IPv6 address embedding an IPv4 one is judged by it).
A permitted host's ``Destination`` is the very address checked, so a name cannot resolve
one way for the check and another for the connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from meterline.live.webhook_inputs import WebhookError

ALLOW_PRIVATE_ENV = "METERLINE_WEBHOOKS_ALLOW_PRIVATE"
"""Set to 1 (true, yes, on) to let webhooks go to loopback, link-local and private
addresses (a receiver on the same host or network); ``Webhooks(allow_private=...)`` and
``meterline serve --webhooks-allow-private`` say the same explicitly."""
_TRUE = ("1", "true", "yes", "on")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RFC1918 = tuple(
    ipaddress.ip_network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_ALLOW_HINT = (
    f"webhooks go to public addresses only (allow private ones with {ALLOW_PRIVATE_ENV}=1"
    " or `meterline serve --webhooks-allow-private`)"
)

Resolver = Callable[[str, int], list[str]]
"""``(host, port)`` -> every address the host resolves to (an IP literal: itself);
raises ``OSError`` when it does not resolve."""


def allow_private_from_environment() -> bool:
    """Whether ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` allows private destinations."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in _TRUE


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order;
    ``OSError`` when it does not resolve, or is no host name at all (too long a label)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as error:  # the IDNA codec refuses it before any lookup
        raise OSError(f"not a valid host name ({error})") from error
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def address_refusal(address: str) -> str | None:
    """Why a webhook may not go to ``address`` (``"a loopback address"``), or None for a
    public one. An IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address is judged by the IPv4
    address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_refusal(str(embedded))
            return None if inner is None else f"{inner}, by the IPv4 address {embedded} in it"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    metadata = " (cloud metadata)" if ip in _METADATA else ""
    if ip.is_link_local:
        return f"a link-local address{metadata}"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in block for block in _RFC1918):
        return "a private address (RFC 1918)"
    if ip in _UNIQUE_LOCAL:
        return f"a private address (unique local, fc00::/7){metadata}"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "a reserved address (not globally routable)"
    return None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a delivery connects: ``url`` is the endpoint's URL with its host replaced by
    the address checked; ``host_header`` the original host (and port) for ``Host``;
    ``sni_hostname`` the original host for TLS (None over plain http)."""

    url: str
    host_header: str
    sni_hostname: str | None


def destination(url: str, resolve: Resolver) -> Destination:
    """Where a POST to ``url`` may connect: the first address its host resolves to, every
    one of them checked. Raises ``WebhookError`` (field ``url``) naming a refused
    address, ``OSError`` when the host does not resolve."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            subject = f"{address} is" if address == host else f"{host} resolves to {address},"
            raise WebhookError("url", f"{subject} {refusal}; {_ALLOW_HINT}")
    chosen = addresses[0].split("%", 1)[0]
    literal = f"[{chosen}]" if ":" in chosen else chosen
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return Destination(
        parts._replace(netloc=netloc).geturl(),
        parts.netloc,
        host if parts.scheme == "https" else None,
    )
