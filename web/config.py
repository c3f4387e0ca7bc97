"""The ``[web]`` config section: the panel, API and signalling endpoint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WebConfig:
    # HTTPS listen address of the panel, API, join pages and signalling WebSocket.
    host: str = "127.0.0.1"
    port: int = 8443
    # Serve plain HTTP instead of HTTPS (only behind a TLS-terminating proxy).
    plain_http: bool = False
    # Base URL written into join links and invitations ("" = https://<host>:<port>).
    public_url: str = ""
    # Minutes after a meeting's end during which its join links still work.
    join_grace_minutes: int = 30
    # Minutes before a meeting's start from which its join links let sites in.
    join_early_minutes: int = 15

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if not (0 <= self.port <= 65535):
            problems.append(("port", f"a TCP port 0-65535, got {self.port}"))
        if self.join_grace_minutes < 0:
            problems.append(("join_grace_minutes", "zero or more minutes"))
        if self.join_early_minutes < 0:
            problems.append(("join_early_minutes", "zero or more minutes"))
        return problems
