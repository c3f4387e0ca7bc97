"""The ``[media]`` config section: the SFU and its ICE settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IceServer:
    # e.g. ["turn:turn.example.gov.vn:3478?transport=udp"]; handed to browsers and used by the SFU.
    urls: list[str] = field(default_factory=list)
    username: str = ""
    credential: str = ""


@dataclass
class MediaConfig:
    # Addresses the SFU offers as ICE host candidates.  Empty: the host's interfaces.
    # Tests and single-machine demos use ["127.0.0.1"].
    candidate_addresses: list[str] = field(default_factory=list)
    # Public address announced instead of a private one when the server sits behind 1:1 NAT.
    announced_address: str = ""
    # UDP port range for media (0, 0 = any port); open it in the firewall.
    udp_port_min: int = 0
    udp_port_max: int = 0
    # STUN/TURN servers; none by default: the server never contacts a public STUN server.
    ice_servers: list[IceServer] = field(default_factory=list)
    # Slots each subscriber receives.
    gallery_slots: int = 6
    audio_slots: int = 3

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if (self.udp_port_min, self.udp_port_max) != (0, 0):
            if not (1 <= self.udp_port_min <= self.udp_port_max <= 65535):
                problems.append(("udp_port_min", "1 <= udp_port_min <= udp_port_max <= 65535, or both 0"))
        if not (0 <= self.gallery_slots <= 25):
            problems.append(("gallery_slots", "0 to 25"))
        if not (1 <= self.audio_slots <= 8):
            problems.append(("audio_slots", "1 to 8"))
        return problems
