"""Relay policy as pure functions and small classes: who may send what where.

- ``split_params``: takes RFC 3461 DSN parameters (RET, ENVID, NOTIFY, ORCPT) off a MAIL/RCPT
  argument before aiosmtpd (which refuses parameters it does not know) parses the rest.
- ``check_recipient_syntax`` / ``normalise_domain``: the open-relay defences.  A recipient is
  one plain ``local@domain``: no source route (``@a:b@c``), no percent hack or bang path in
  the local part, no ``@`` inside a quoted local part, no IP literal; domains compare
  lower-case without a trailing dot.
- ``sender_allowed``: an account sends only as its agency's domains (envelope and From:).
- ``RateLimiter``: messages per minute per account; ``FailureThrottle``: failed AUTH per address.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import getaddresses

DSN_MAIL = ("RET", "ENVID")
DSN_RCPT = ("NOTIFY", "ORCPT")


def split_params(arg: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """``"<a@b> SIZE=10 RET=HDRS"`` → ``("<a@b> SIZE=10", {"RET": "HDRS"})`` (values keep case)."""
    end = arg.find(">")
    if end < 0:
        return arg, {}
    head, tail = arg[: end + 1], arg[end + 1:]
    keep, taken = [], {}
    wanted = {n.upper() for n in names}
    for param in tail.split():
        key, _, value = param.partition("=")
        if key.upper() in wanted:
            taken[key.upper()] = value
        else:
            keep.append(param)
    return " ".join([head, *keep]), taken


def dsn_problem(mail: dict[str, str] | None = None, rcpt: dict[str, str] | None = None) -> str | None:
    """A 501 reply for malformed DSN parameters, or None."""
    if mail:
        if "RET" in mail and mail["RET"].upper() not in ("FULL", "HDRS"):
            return "501 5.5.4 RET must be FULL or HDRS"
        if "ENVID" in mail and not (0 < len(mail["ENVID"]) <= 100):
            return "501 5.5.4 ENVID must be 1 to 100 characters"
    if rcpt:
        if "NOTIFY" in rcpt:
            values = rcpt["NOTIFY"].upper().split(",")
            if not values or any(v not in ("NEVER", "SUCCESS", "FAILURE", "DELAY") for v in values) or (
                    "NEVER" in values and len(values) > 1):
                return "501 5.5.4 NOTIFY must be NEVER, or a list of SUCCESS, FAILURE, DELAY"
        if "ORCPT" in rcpt and ";" not in rcpt["ORCPT"]:
            return "501 5.5.4 ORCPT must be addr-type;address"
    return None


def normalise_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


_LOCAL_ATOM = re.compile(r"^(?:[A-Za-z0-9!#$&'*+/=?^_`{|}~.-]|[^\x00-\x7f])+$")


def check_recipient_syntax(address: str) -> str | None:
    """A 5xx reply for an address we never relay for, or None when it is a plain local@domain."""
    if any(c in address for c in "\r\n\x00"):
        return "501 5.1.3 Control characters in address"
    if address.startswith("@") or address.count("@") != 1 and not address.startswith('"'):
        return "553 5.1.3 Source routes and multiple @ are not accepted"
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return "553 5.1.3 Address must be local@domain"
    if local.startswith('"'):
        return "553 5.1.3 Quoted local parts are not accepted"
    if "%" in local or "!" in local or ":" in local:
        return "553 5.1.3 Percent hack, bang paths and routes are not accepted"
    if domain.startswith("["):
        return "553 5.1.3 IP address literals are not accepted as destinations"
    if not _LOCAL_ATOM.match(local):
        return "553 5.1.3 Bad characters in the local part"
    return None


def domain_of(address: str) -> str:
    return normalise_domain(address.rpartition("@")[2])


def from_header_domains(header_value: str) -> list[str] | None:
    """Domains of every address in a From: header; None when it cannot be parsed."""
    pairs = getaddresses([header_value])
    domains = []
    for _name, addr in pairs:
        if not addr or "@" not in addr:
            return None
        domains.append(domain_of(addr))
    return domains or None


def sender_allowed(domain: str, agency_domains: set[str]) -> bool:
    return normalise_domain(domain) in agency_domains


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._events.setdefault(key, deque())
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    def allowed(self, key: str) -> bool:
        return len(self._recent(key)) < self.limit

    def record(self, key: str) -> None:
        self._recent(key).append(self.clock())


FailureThrottle = RateLimiter  # failed AUTH per client address: same sliding window


