"""mail.dns: the RFC 5321 §5.1 / RFC 7505 rules as a pure function, server parsing, and lookups
against a real DNS server on loopback (answers cached for their TTL)."""

from __future__ import annotations

import random

import pytest

from mail.dns import DnsPermanent, DnsTemporary, MxResolver, Target, make_resolver, mx_plan, parse_dns_server
from tests.mail.dnsserver import DnsServer


def test_mx_plan_orders_by_preference() -> None:
    assert mx_plan("a.test", [(20, "mx2.a.test."), (10, "MX1.a.test")]) == ["mx1.a.test", "mx2.a.test"]


def test_mx_plan_shuffles_equal_preferences() -> None:
    seen = {tuple(mx_plan("a.test", [(10, "x.test"), (10, "y.test"), (5, "z.test")], random.Random(seed)))
            for seed in range(40)}
    assert seen == {("z.test", "x.test", "y.test"), ("z.test", "y.test", "x.test")}


def test_mx_plan_implicit_mx_null_mx_and_missing_domain() -> None:
    assert mx_plan("a.test", []) == ["a.test"]  # no MX: the domain itself (RFC 5321 §5.1)
    with pytest.raises(DnsPermanent) as null:
        mx_plan("a.test", [(0, ".")])
    assert null.value.status == "5.1.10"
    with pytest.raises(DnsPermanent) as missing:
        mx_plan("a.test", None)
    assert missing.value.status == "5.1.2"


def test_mx_plan_drops_duplicates() -> None:
    assert mx_plan("a.test", [(10, "mx.a.test"), (20, "mx.a.test.")]) == ["mx.a.test"]


@pytest.mark.parametrize("text,expected", [("192.0.2.1", ("192.0.2.1", 53)), ("192.0.2.1:5353", ("192.0.2.1", 5353)),
                                           ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353))])
def test_parse_dns_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "192.0.2.1:0", "192.0.2.1:x", "[::1]x"])
def test_parse_dns_server_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dns_server(text)


async def test_lookups_against_a_loopback_server_are_cached() -> None:
    dns = DnsServer({("a.test.", "MX"): ["10 mx.a.test."], ("mx.a.test.", "A"): ["127.0.0.2"],
                     ("mx.a.test.", "AAAA"): [], ("gone.test.", "MX"): ["0 ."]})
    await dns.start()
    try:
        mx = MxResolver(make_resolver([dns.address], timeout=2))
        assert await mx.targets("a.test") == [Target("mx.a.test", "127.0.0.2")]
        asked = len(dns.queries)
        assert await mx.targets("a.test") == [Target("mx.a.test", "127.0.0.2")]
        assert len(dns.queries) == asked  # answered from the cache
        with pytest.raises(DnsPermanent):
            await mx.targets("gone.test")
        with pytest.raises(DnsPermanent):
            await mx.targets("nowhere.test")  # NXDOMAIN
        assert await mx.addresses("[127.0.0.3]") == ["127.0.0.3"]
    finally:
        dns.stop()


async def test_an_unanswering_server_is_a_temporary_failure() -> None:
    dns = DnsServer({})
    await dns.start()
    port = dns.port
    dns.stop()  # nothing answers on that port any more
    mx = MxResolver(make_resolver([f"127.0.0.1:{port}"], timeout=0.5))
    with pytest.raises(DnsTemporary):
        await mx.targets("a.test")
