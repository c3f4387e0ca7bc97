"""Where mail for a domain goes: MX lookup with dnspython's async resolver.

RFC 5321 §5.1: MX hosts by preference (equal preferences shuffled); no MX record → the domain's
own A/AAAA; a null MX (RFC 7505: one MX "." ) → permanent failure.  Host names are resolved
here too, through the same resolver, so ``mail.dns_servers`` governs every lookup.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver


class DnsTemporary(Exception):
    pass


class DnsPermanent(Exception):
    """``status`` is the enhanced status for the bounce."""

    def __init__(self, status: str, text: str):
        super().__init__(f"{status} {text}")
        self.status = status


@dataclass(frozen=True)
class Target:
    host: str  # name, for TLS (SNI) and reports
    address: str  # IP to connect to


def make_resolver(servers: list[str], timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    if not servers:
        r = dns.asyncresolver.Resolver()
    else:
        r = dns.asyncresolver.Resolver(configure=False)
        ips, port = [], 53
        for s in servers:
            host, sep, p = s.rpartition(":") if s.count(":") == 1 else ("", "", "")
            if sep:
                ips.append(host)
                port = int(p)
            else:
                ips.append(s.strip("[]"))
        r.nameservers = ips
        r.port = port
    r.lifetime = timeout
    return r


class MxResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver):
        self.resolver = resolver

    async def _query(self, name: str, rdtype: str) -> list[object] | None:
        """Answers, or None for NXDOMAIN/no answer; DnsTemporary for failures."""
        try:
            answer = await self.resolver.resolve(name, rdtype)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as e:
            raise DnsTemporary(f"DNS lookup of {name} {rdtype} failed: {e.__class__.__name__}") from None
        return list(answer)

    async def addresses(self, host: str) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            answers = await self._query(host, rdtype)
            out += [a.address for a in answers or []]  # type: ignore[attr-defined]
        return out

    async def mx_hosts(self, domain: str) -> list[str]:
        answers = await self._query(domain, "MX")
        if answers is None:
            raise DnsPermanent("5.1.2", f"domain {domain} does not exist")
        if not answers:
            return [domain]  # implicit MX
        records = [(a.preference, a.exchange.to_text(omit_final_dot=True)) for a in answers]  # type: ignore[attr-defined]
        if len(records) == 1 and records[0][1] in ("", "."):
            raise DnsPermanent("5.1.10", f"domain {domain} accepts no mail (null MX)")
        random.shuffle(records)
        records.sort(key=lambda r: r[0])
        return [host for _, host in records if host not in ("", ".")]

    async def targets(self, domain: str) -> list[Target]:
        out = []
        for host in await self.mx_hosts(domain):
            for address in await self.addresses(host):
                out.append(Target(host, address))
        if not out:
            raise DnsTemporary(f"no address found for the mail hosts of {domain}")
        return out
