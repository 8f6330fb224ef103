"""Which addresses a webhook may go to: public ones; never loopback, link-local (cloud
metadata included), private, unspecified, multicast or reserved ones, nor an IPv6 address
carrying such an IPv4 one."""

from __future__ import annotations

import pytest

from meterline.live.webhook_service import address_refusal


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a link-local address (cloud metadata)"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("10.1.2.3", "a private address (RFC 1918)"),
        ("172.16.0.1", "a private address (RFC 1918)"),
        ("172.31.255.254", "a private address (RFC 1918)"),
        ("192.168.1.1", "a private address (RFC 1918)"),
        ("fd12:3456::1", "a private address (unique local, fc00::/7)"),
        ("fc00::1", "a private address (unique local, fc00::/7)"),
        ("fd00:ec2::254", "a private address (unique local, fc00::/7) (cloud metadata)"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("100.64.0.1", "a reserved address (not globally routable)"),
        ("192.0.2.1", "a reserved address (not globally routable)"),
        ("255.255.255.255", "a reserved address (not globally routable)"),
        ("2001:db8::1", "a reserved address (not globally routable)"),
        (
            "::ffff:10.0.0.1",
            "a private address (RFC 1918), by the IPv4 address 10.0.0.1 in it",
        ),
        ("64:ff9b::7f00:1", "a loopback address, by the IPv4 address 127.0.0.1 in it"),
        (
            "2002:a9fe:a9fe::1",
            "a link-local address (cloud metadata), by the IPv4 address 169.254.169.254 in it",
        ),
        ("not-an-address", "not an IP address"),
    ],
)
def test_a_non_public_address_is_refused_with_its_kind(address: str, reason: str) -> None:
    """Each refused address names what kind of address it is."""
    assert address_refusal(address) == reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_a_public_address_is_allowed(address: str) -> None:
    """Globally routable addresses (172.32/16 is just outside RFC 1918) pass."""
    assert address_refusal(address) is None


def test_a_host_name_no_resolver_accepts_is_an_os_error() -> None:
    """An over-long label (the IDNA codec refuses it) reads as a host that does not resolve."""
    import pytest

    from meterline.live.webhook_service import resolve_host

    with pytest.raises(OSError, match="not a valid host name"):
        resolve_host("0" * 300, 443)
