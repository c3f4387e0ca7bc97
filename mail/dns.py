"""Where mail for a domain goes: MX lookup with dnspython's async resolver.

RFC 5321 §5.1: MX hosts by preference (equal preferences shuffled); no MX record → the domain
itself is the mail host (its A/AAAA); a null MX (RFC 7505: MX 0 ".") → permanent failure at
once; a domain that does not exist → permanent failure.  ``mx_plan`` is that rule as a pure
function; ``MxResolver`` does the lookups around it.  Host names are resolved through the same
resolver, so ``mail.dns_servers`` governs every lookup (tests point it at a loopback server).
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

# EDNS0 payload size: DKIM TXT records and long MX lists do not fit the classic 512 bytes
# (the size DNS Flag Day 2020 recommends; above it answers come truncated and go over TCP).
EDNS_PAYLOAD = 1232


class DnsTemporary(Exception):
    """Lookup failed for now (timeout, SERVFAIL): the recipient is deferred."""


class DnsPermanent(Exception):
    """Mail to this domain can never be delivered; ``status`` is the enhanced status for the bounce."""

    def __init__(self, status: str, text: str):
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Target:
    host: str  # name, for TLS (SNI) and reports
    address: str  # IP to connect to


# -- pure parts -------------------------------------------------------------------------------

def parse_dns_server(text: str) -> tuple[str, int]:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"``, ``"::1"``, ``"[::1]:5353"`` → (address, port)."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"DNS server {text!r}: expected [IPv6]:port")
        if rest:
            port = _port(text, rest[1:])
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        port = _port(text, p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"DNS server {text!r}: expected an IP address, optionally with :port") from None
    return host, port


def _port(text: str, p: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"DNS server {text!r}: bad port {p!r}")
    return int(p)


MxRecords = list[tuple[int, str]]


def mx_plan(domain: str, records: MxRecords | None, rng: random.Random | None = None) -> list[str]:
    """The mail hosts of ``domain`` in the order to try them.

    ``records``: the MX answer as (preference, exchange) pairs; ``None`` when the domain does
    not exist (NXDOMAIN); ``[]`` when it exists without MX (implicit MX: the domain itself).
    Raises DnsPermanent for a missing domain or a null MX.
    """
    if records is None:
        raise DnsPermanent("5.1.2", f"domain {domain} does not exist")
    if not records:
        return [domain]
    hosts = [(pref, host.rstrip(".").lower()) for pref, host in records]
    real = [(pref, host) for pref, host in hosts if host]
    if not real:
        # RFC 7505: the domain declares it accepts no mail.
        raise DnsPermanent("5.1.10", f"domain {domain} accepts no mail (null MX)")
    (rng or random).shuffle(real)  # equal preferences spread the load, RFC 5321 §5.1
    real.sort(key=lambda r: r[0])
    out: list[str] = []
    for _, host in real:
        if host not in out:
            out.append(host)
    return out


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# -- lookups --------------------------------------------------------------------------------------

def make_resolver(servers: list[str], timeout: float = 5.0, cache: bool = True) -> dns.asyncresolver.Resolver:
    """An async resolver using ``servers`` ("host" or "host:port"; empty list: /etc/resolv.conf)."""
    if not servers:
        r = dns.asyncresolver.Resolver()
    else:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(*parse_dns_server(s)) for s in servers]
    r.use_edns(0, 0, EDNS_PAYLOAD)
    r.lifetime = timeout
    r.timeout = min(r.timeout, timeout)
    if cache:
        r.cache = dns.resolver.Cache()
    return r


class MxResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver, rng: random.Random | None = None):
        self.resolver = resolver
        self.rng = rng

    async def _query(self, name: str, rdtype: str) -> list[object] | None:
        """Answers; None for NXDOMAIN, [] for no answer of that type.  DnsTemporary for failures."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.IDNAException) as e:
            raise DnsPermanent("5.1.2", f"{name!r} is not a valid domain name ({e.__class__.__name__})") from None
        except dns.exception.DNSException as e:
            raise DnsTemporary(f"DNS lookup of {name} {rdtype} failed: {e.__class__.__name__}") from None
        return list(answer)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host`` ([] when it has none)."""
        if is_ip(host.strip("[]")):
            return [host.strip("[]")]
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            out += [a.address for a in await self._query(host, rdtype) or []]  # type: ignore[attr-defined]
        return out

    async def mx_hosts(self, domain: str) -> list[str]:
        answers = await self._query(domain, "MX")
        records = None if answers is None else [
            (a.preference, a.exchange.to_text(omit_final_dot=True)) for a in answers]  # type: ignore[attr-defined]
        return mx_plan(domain, records, self.rng)

    async def targets(self, domain: str) -> list[Target]:
        """Every (host, address) to try for ``domain``, in order."""
        hosts = await self.mx_hosts(domain)
        out = []
        for host in hosts:
            try:
                addresses = await self.addresses(host)
            except DnsTemporary:
                if len(hosts) == 1:
                    raise
                continue  # another MX may still answer
            out += [Target(host, a) for a in addresses]
        if not out:
            if hosts == [domain]:
                # No MX and no address: RFC 5321 §5.1 says the domain has no mail host.
                raise DnsPermanent("5.1.2", f"domain {domain} has no MX and no address record")
            raise DnsTemporary(f"no address found for the mail hosts of {domain}: {', '.join(hosts)}")
        return out
