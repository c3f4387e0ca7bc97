"""The ``[mail]`` config section: the shared relay's listeners and delivery policy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class MailConfig:
    enabled: bool = True
    # Name this relay gives in its greeting, Received: headers and bounces.
    hostname: str = "localhost"
    # Listen addresses as "host:port" (empty string: listener off).  Production: 587, 465, 25.
    submission_listen: str = "127.0.0.1:2587"
    smtps_listen: str = "127.0.0.1:2465"
    mx_listen: str = "127.0.0.1:2525"
    # SMTP accept processes sharing the listening ports (SO_REUSEPORT) and the spool.  1: the
    # listeners run in the main process only.  N > 1: N-1 child processes accept too, so
    # accepting uses more than one core; rate limits and failed-AUTH throttling then count
    # per process (/metrics adds up all processes' counters).  0: one per CPU core.
    workers: int = 1
    # true: the main process does not accept; it delivers what all `workers` accept processes
    # (then all children) queue, as Postfix's smtp processes deliver apart from its smtpd.  A
    # session's next message then never waits behind the previous one's delivery on the same
    # core (a single client sending one message per connection gains most); each message costs
    # a pipe line and a read of its spool file more.  false: each accept process delivers what
    # it accepted.
    separate_delivery: bool = False
    # Spool folder, relative to the state dir unless absolute.
    spool_dir: str = "spool"
    # DNS servers as "host" or "host:port" (empty: the system's resolv.conf).
    dns_servers: list[str] = field(default_factory=list)
    # Largest message accepted, in bytes.
    max_message_size: int = 25 * 1024 * 1024
    # Per relay account: messages per minute, and recipients per message.
    rate_messages_per_minute: int = 120
    max_recipients: int = 100
    # Failed AUTH attempts per client address within auth_fail_window seconds before 454.
    auth_fail_limit: int = 10
    auth_fail_window: float = 600.0
    # Delivery: retry delays grow from retry_first to retry_max (seconds); a message is bounced
    # after max_queue_lifetime (seconds, default 5 days); senders are warned after delay_warning.
    retry_first: float = 300.0
    retry_max: float = 4 * 3600.0
    max_queue_lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0
    # Seconds between spool scans for due messages, and SMTP timeouts toward remote hosts.
    scan_interval: float = 5.0
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    # Simultaneous connections per destination host, and in all.
    per_destination_concurrency: int = 4
    total_concurrency: int = 50
    # STARTTLS toward remote hosts: "opportunistic" (when offered) or "required", and per-domain
    # exceptions, e.g. {"partner.gov.vn" = "required"}.
    tls_policy: str = "opportunistic"
    tls_policy_domains: dict[str, str] = field(default_factory=dict)
    # Verify remote certificates when STARTTLS is required (opportunistic TLS never verifies).
    tls_verify_required: bool = True
    # TCP port of remote mail servers (25; tests run their stand-in MX hosts on another port).
    remote_smtp_port: int = 25
    # DKIM selector; a key at <state_dir>/dkim/<domain>.key signs that domain's mail.
    dkim_selector: str = "lienthong"
    # Address bounces come from.
    postmaster: str = "postmaster@localhost"

    def accept_processes(self) -> int:
        """``workers`` with 0 resolved to the number of CPU cores."""
        return self.workers or os.cpu_count() or 1

    def accept_children(self) -> int:
        """Child accept processes the main process starts (it accepts too unless separate_delivery)."""
        return self.accept_processes() - (0 if self.separate_delivery else 1)

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("submission_listen", "smtps_listen", "mx_listen"):
            value = getattr(self, key)
            if value and not _is_host_port(value):
                problems.append((key, f'"host:port" or "" (off), got {value!r}'))
        for i, s in enumerate(self.dns_servers):
            if not s:
                problems.append((f"dns_servers[{i}]", '"host" or "host:port"'))
        if self.workers < 0 or self.workers > 64:
            problems.append(("workers", "0 (one per CPU core) or a number of processes from 1 to 64"))
        if self.max_message_size < 1024:
            problems.append(("max_message_size", "at least 1024 bytes"))
        for key in ("rate_messages_per_minute", "max_recipients", "auth_fail_limit",
                    "per_destination_concurrency", "total_concurrency"):
            if getattr(self, key) < 1:
                problems.append((key, "a whole number of at least 1"))
        for key in ("auth_fail_window", "retry_first", "retry_max", "max_queue_lifetime", "delay_warning",
                    "scan_interval", "connect_timeout", "command_timeout"):
            if getattr(self, key) <= 0:
                problems.append((key, "a positive number of seconds"))
        if self.retry_max < self.retry_first:
            problems.append(("retry_max", "at least retry_first"))
        for name, policy in [("tls_policy", self.tls_policy)] + [
                (f"tls_policy_domains.{d}", p) for d, p in self.tls_policy_domains.items()]:
            if policy not in ("opportunistic", "required"):
                problems.append((name, f'"opportunistic" or "required", got {policy!r}'))
        return problems


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)
