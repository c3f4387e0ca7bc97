"""The ``[mail]`` config section: the shared relay's listeners and delivery policy."""

from __future__ import annotations

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
    # Spool folder, relative to the state dir unless absolute.
    spool_dir: str = "spool"
    # DNS servers as "host" or "host:port" (empty: the system's resolv.conf).
    dns_servers: list[str] = field(default_factory=list)
    # Largest message accepted, in bytes.
    max_message_size: int = 25 * 1024 * 1024

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("submission_listen", "smtps_listen", "mx_listen"):
            value = getattr(self, key)
            if value and not _is_host_port(value):
                problems.append((key, f'"host:port" or "" (off), got {value!r}'))
        for i, s in enumerate(self.dns_servers):
            if not s:
                problems.append((f"dns_servers[{i}]", '"host" or "host:port"'))
        if self.max_message_size < 1024:
            problems.append(("max_message_size", "at least 1024 bytes"))
        return problems


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)
