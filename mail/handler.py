"""The SMTP policy handler (aiosmtpd style: only the hooks it needs, each returning the reply).

One handler per listener mode:
- ``submission`` (587, 465): AUTH required (the protocol engine enforces it); any recipient;
  envelope sender and From: header in the account's agency's domains; per-account rates.
- ``mx`` (25): no AUTH; recipients only in hosted domains; never relays.
Every accepted message is on disk and fsynced (``Spool.commit``) before the 250.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import formatdate
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope as SmtpEnvelope, Session

from mail import policy
from mail.directory import Directory
from mail.metrics import MailMetrics
from mail.smtp_server import OpenSessions
from mail.spool import Envelope, Recipient, Spool, SpoolError, envelope_stub

log = logging.getLogger("mail.handler")

# Accepted messages are logged in batches gathered this long (one line naming each queue id):
# a log line per message was a twentieth of a short session's CPU, on its path to the next reply.
ACCEPT_LOG_WINDOW = 0.02


@dataclass
class MessageState:
    """DSN parameters of the transaction, kept beside aiosmtpd's envelope."""

    ret: str = ""
    envid: str = ""
    rcpt_dsn: dict[str, dict[str, str]] = field(default_factory=dict)


def _state(envelope: SmtpEnvelope) -> MessageState:
    st = getattr(envelope, "lienthong", None)
    if st is None:
        st = MessageState()
        envelope.lienthong = st  # type: ignore[attr-defined]
    return st


class RelayHandler:
    def __init__(self, mode: str, directory: Directory, spool: Spool, hostname: str, metrics: MailMetrics,
                 rate: policy.RateLimiter, max_recipients: int,
                 on_queued: Callable[[Envelope, tuple[bytes, ...]], None] = lambda envelope, parts: None,
                 lone_session_commits_inline: OpenSessions | None = None):
        assert mode in ("submission", "mx")
        self.mode, self.directory, self.spool, self.hostname = mode, directory, spool, hostname
        self.metrics, self.rate, self.max_recipients = metrics, rate, max_recipients
        self.on_queued = on_queued  # told of each message (envelope, content parts) once durably queued
        # In a process that only accepts mail (mail.workers' children), a message whose session
        # is the only one open is written and fsynced on the event loop itself: nothing else
        # waits for the loop meanwhile, and the hop to a spool thread and back (two thread
        # wake-ups, each needing the GIL) was a large, load-sensitive part of the wait for the
        # 250.  With other sessions open the commit goes to the spool's threads, where
        # concurrent commits overlap and share journal commits.
        self.lone_session_commits_inline = lone_session_commits_inline
        self._accepted = metrics.accepted.labels(mode)
        self._rejected_spool = metrics.rejected.labels("spool_error")
        self._date: tuple[int, str] = (0, "")
        self._accepted_log: list[tuple[str, str, int, int]] = []  # (queue id, agency, recipients, size)
        self._accepted_log_timer: asyncio.TimerHandle | None = None

    def flush_accept_log(self) -> None:
        """Write the pending "messages accepted" line now (the service calls it at stop)."""
        if self._accepted_log_timer is not None:
            self._accepted_log_timer.cancel()
            self._accepted_log_timer = None
        batch, self._accepted_log = self._accepted_log, []
        if not batch:
            return
        agencies = sorted({agency for _, agency, _, _ in batch if agency})
        log.info("messages accepted", extra={
            "mode": self.mode, "messages": len(batch), "queue_ids": ",".join(q for q, _, _, _ in batch),
            "agencies": ",".join(agencies), "recipients": sum(r for _, _, r, _ in batch),
            "bytes": sum(n for _, _, _, n in batch)})

    def _log_accepted(self, queue_id: str, agency: str, recipients: int, size: int) -> None:
        self._accepted_log.append((queue_id, agency, recipients, size))
        if self._accepted_log_timer is None:
            self._accepted_log_timer = asyncio.get_running_loop().call_later(ACCEPT_LOG_WINDOW, self.flush_accept_log)

    def _date_now(self) -> str:
        """RFC 5322 date of this second (formatting it costs more than the rest of the header)."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, localtime=False))
        return self._date[1]

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        if any(c in hostname for c in "\r\n\x00") or len(hostname) > 255:
            return ["501 5.5.2 Bad EHLO name"]
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        if self.mode == "mx":  # no AUTH on the MX listener, not even an empty list
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        # aiosmtpd reads pipelined commands in order but does not say so.  The reply goes back
        # as one string: aiosmtpd writes (and drains) each list item apart, one send per line.
        return ["\r\n".join([*responses, "250-PIPELINING", "250-DSN", "250-ENHANCEDSTATUSCODES", last])]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          mail_options: list[str]) -> str:
        dsn = getattr(server, "pending_dsn", {})
        problem = policy.dsn_problem(mail=dsn)
        if problem:
            return problem
        if self.mode == "submission":
            account = session.auth_data
            if account is None:
                return "530 5.7.0 Authentication required"
            if not address:
                return "550 5.7.1 Submission needs a sender address"
            if not policy.sender_allowed(policy.domain_of(address), self.directory.agency_domains(account.agency)):
                self.metrics.rejected.labels("sender_domain").inc()
                return f"550 5.7.1 Sender <{address}> is not in the domains of agency {account.agency}"
            if not self.rate.allowed(account.username):
                self.metrics.rejected.labels("rate").inc()
                return "451 4.7.1 Message rate limit reached for this account; try again in a minute"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        st = _state(envelope)
        st.ret, st.envid = dsn.get("RET", "").upper(), dsn.get("ENVID", "")
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        dsn = getattr(server, "pending_dsn", {})
        problem = policy.dsn_problem(rcpt=dsn) or policy.check_recipient_syntax(address)
        if problem:
            self.metrics.rejected.labels("recipient_syntax").inc()
            return problem
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
        domain = policy.domain_of(address)
        if self.mode == "mx" and not self.directory.is_hosted(domain):
            self.metrics.rejected.labels("relay_denied").inc()
            return "554 5.7.1 Relay access denied: this server accepts mail only for its hosted domains"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        _state(envelope).rcpt_dsn[address] = dsn
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        # RelaySMTP has already refused bare CR/LF, over-long lines and oversize data.
        content = envelope.original_content or b""
        account = session.auth_data if self.mode == "submission" else None
        if account is not None:
            headers = BytesHeaderParser().parsebytes(content)
            froms = headers.get_all("From") or []
            if len(froms) != 1:
                return "550 5.6.0 The message needs exactly one From: header"
            domains = policy.from_header_domains(str(froms[0]))
            allowed = self.directory.agency_domains(account.agency)
            if domains is None or not all(policy.sender_allowed(d, allowed) for d in domains):
                self.metrics.rejected.labels("from_header").inc()
                return f"550 5.7.1 From: {froms[0]!s} is not in the domains of agency {account.agency}"
        st = _state(envelope)
        rcpt_dsn = st.rcpt_dsn
        recipients = []
        for r in envelope.rcpt_tos:
            dsn = rcpt_dsn.get(r)
            if dsn:
                recipients.append(Recipient(r, notify=[n for n in dsn.get("NOTIFY", "").upper().split(",") if n],
                                            orcpt=dsn.get("ORCPT", "")))
            else:
                recipients.append(Recipient(r))
        queued = envelope_stub(
            mail_from=envelope.mail_from or "", recipients=recipients,
            ret=st.ret, envid=st.envid, smtputf8=envelope.smtp_utf8,
            body_8bit="BODY=8BITMIME" in envelope.mail_options,
            agency=account.agency if account else "", account=account.username if account else "",
            client=str(session.peer[0]) if session.peer else "", inbound=self.mode == "mx")
        parts = (self._received(session, queued.id, account is not None, envelope), content)
        try:
            sessions = self.lone_session_commits_inline
            await self.spool.commit_parts(queued, parts, inline=sessions is not None and sessions.count <= 1)
        except SpoolError as e:
            log.error("spool refused a message", extra={"error": str(e), "client": queued.client})
            self._rejected_spool.inc()
            return "452 4.3.1 Insufficient system storage; try again later"
        if account is not None:
            self.rate.record(account.username)
        self._accepted.inc()
        try:
            self.on_queued(queued, parts)
        except Exception:
            # The message is on disk: answer 250 all the same (a client retry would duplicate
            # it); delivery's spool scan or the next start takes it up.
            log.exception("handing an accepted message to delivery failed", extra={"queue_id": queued.id})
        self._log_accepted(queued.id, queued.agency, len(recipients), len(parts[0]) + len(content))
        return f"250 2.0.0 Queued as {queued.id}"

    def _received(self, session: Session, queue_id: str, authenticated: bool, envelope: SmtpEnvelope) -> bytes:
        helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:255]
        peer = session.peer[0] if session.peer else "unknown"
        proto = "ESMTP"
        if session.ssl:
            proto += "S"
        if authenticated:
            proto += "A"
        utf8 = "UTF8" if envelope.smtp_utf8 else ""
        line = (f"Received: from {helo} ([{peer}])\r\n\tby {self.hostname} (Lien thong) with {utf8}{proto} "
                f"id {queue_id};\r\n\t{self._date_now()}\r\n")
        return line.encode("utf-8", "replace")
