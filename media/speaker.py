"""Active speaker selection from RFC 6464 audio levels, without decoding audio.  Pure: time is
passed in (seconds, any monotonic clock), no clock is read here.

RFC 6464 levels are -dBov: 0 is the loudest, 127 silence.  Each source keeps a smoothed level
(its first packet sets it; then fast attack, slower release, first-order filters in real time;
a source that stops sending fades to silence).  A source is *active* when its smoothed level is
louder than ``threshold`` (and, with ``noise_margin`` > 0, that many dB above its own noise
floor, so a steady hum does not count as speech).  The
dominant speaker changes only when another active source has been louder than it by ``margin``
dB on every ``tick`` for ``hold`` seconds, so the main slot does not flap on a cough; a muted or
removed speaker is replaced at the next tick.

Usage::

    det = SpeakerDetector(hold=1.5)
    det.update(source_id, level, voice, now)       # per audio packet (~1 µs), e.g. from
                                                   # media.rtp_rewrite.audio_level(packet, ext_id)
    det.set_muted(source_id, True)                 # chair muted the site / the site muted itself
    if det.tick(now):                              # every ~100-250 ms: True when the speaker changed
        announce(det.speaker)
    audio = det.loudest(3, now, exclude={det.speaker})  # audio slots after the floor holder
    slots = stable_assignment(previous_slots, [floor] + audio)  # keep sources in their slots

Source ids are any hashable (participant id, SSRC).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["SILENCE", "SpeakerDetector", "stable_assignment"]

SILENCE = 127

K = TypeVar("K", bound=Hashable)


class _Source:
    __slots__ = ("loudness", "floor", "last", "muted", "fresh")

    def __init__(self, now: float) -> None:
        self.loudness = 0.0  # dB above silence: 127 - level
        self.floor = 0.0     # noise floor estimate, same unit (used when noise_margin > 0)
        self.last = now
        self.muted = False
        self.fresh = True    # no packet yet: the first one sets the level directly


class SpeakerDetector(Generic[K]):
    """Smoothed per-source levels, a held dominant speaker, and the n loudest sources.

    ``hold``: seconds a challenger must stay louder before it takes over; ``attack``/``release``:
    smoothing time constants (s) for rising/falling levels; ``threshold``: -dBov a smoothed level
    must be louder than to count as speaking; ``margin``: dB a challenger must be louder by;
    ``use_vad``: treat packets whose RFC 6464 V bit is clear as silence (only when the senders
    set it; browsers without the ``vad=on`` attribute leave it meaningless); ``noise_margin``:
    when > 0, a source must also be this many dB above its own noise floor to count as
    speaking (the floor follows the smoothed level down at once and up by ``floor_rise`` dB/s),
    so a site with a steady fan or hum (noise suppression off) does not hold the main slot.
    Off by default: steady synthetic test levels would look like noise."""

    def __init__(self, *, hold: float = 1.5, attack: float = 0.05, release: float = 0.4,
                 threshold: int = 60, margin: float = 3.0, use_vad: bool = False,
                 noise_margin: float = 0.0, floor_rise: float = 2.0) -> None:
        if hold < 0 or attack <= 0 or release <= 0:
            raise ValueError("hold must be >= 0, attack and release > 0")
        self.hold = hold
        self.attack = attack
        self.release = release
        self.threshold = threshold
        self.margin = margin
        self.use_vad = use_vad
        self.noise_margin = noise_margin
        self.floor_rise = floor_rise
        self._sources: dict[K, _Source] = {}
        self._speaker: K | None = None
        self._challenger: K | None = None
        self._challenger_since = 0.0

    @property
    def speaker(self) -> K | None:
        """The dominant speaker as of the last ``tick`` (None until someone has spoken)."""
        return self._speaker

    def update(self, source: K, level: int, voice: bool, now: float) -> None:
        """One audio packet's RFC 6464 level (0 loudest .. 127 silence) and V bit."""
        s = self._sources.get(source)
        if s is None:
            s = self._sources[source] = _Source(now)
        target = 0.0 if (self.use_vad and not voice) else float(SILENCE - min(max(level, 0), SILENCE))
        if s.fresh:
            s.fresh = False
            s.loudness = s.floor = target
            s.last = now
            return
        dt = now - s.last
        if dt <= 0:
            dt = 0.02  # same-instant or reordered packets: one frame's worth
        tau = self.attack if target > s.loudness else self.release
        # dt / (tau + dt): first-order 1 - exp(-dt / tau), without exp on the per-packet path
        loud = s.loudness + (target - s.loudness) * dt / (tau + dt)
        s.loudness = loud
        if self.noise_margin:
            s.floor = loud if loud < s.floor else s.floor + self.floor_rise * dt
        if now > s.last:
            s.last = now

    def set_muted(self, source: K, muted: bool = True) -> None:
        """A muted source is ignored by ``tick`` and ``loudest`` (its level keeps being tracked)."""
        s = self._sources.get(source)
        if s is None:
            s = self._sources[source] = _Source(0.0)
        s.muted = muted

    def remove(self, source: K) -> None:
        """Forget a source (it left); if it was the speaker, the next ``tick`` replaces it."""
        self._sources.pop(source, None)

    def level(self, source: K, now: float) -> int:
        """Smoothed level of a source at ``now`` in -dBov (127 for unknown sources)."""
        s = self._sources.get(source)
        if s is None:
            return SILENCE
        return SILENCE - round(self._loudness(s, now))

    def levels(self, now: float) -> dict[K, int]:
        """Smoothed level of every known source in -dBov (for UI meters)."""
        return {k: SILENCE - round(self._loudness(s, now)) for k, s in self._sources.items()}

    def _loudness(self, s: _Source, now: float) -> float:
        dt = now - s.last
        if dt <= 0:
            return s.loudness
        return s.loudness * math.exp(-dt / self.release)

    def _active(self, now: float, exclude: Collection[K] = ()) -> list[tuple[float, K]]:
        floor = SILENCE - self.threshold
        noise_margin = self.noise_margin
        out = []
        for k, s in self._sources.items():
            if s.muted or k in exclude:
                continue
            loud = self._loudness(s, now)
            if loud > floor and (not noise_margin or loud - s.floor >= noise_margin):
                out.append((loud, k))
        return out

    def tick(self, now: float) -> bool:
        """Re-evaluate the dominant speaker; True when it changed."""
        current = self._speaker
        cs = self._sources.get(current) if current is not None else None
        if current is not None and (cs is None or cs.muted):
            current = None
        active = self._active(now)
        best = max(active, key=lambda e: e[0], default=None)
        new = current
        if best is None:
            self._challenger = None
        elif current is None:
            new = best[1]
            self._challenger = None
        elif best[1] == current:
            self._challenger = None
        else:
            assert cs is not None
            if best[0] >= self._loudness(cs, now) + self.margin:
                if self._challenger != best[1]:
                    self._challenger = best[1]
                    self._challenger_since = now
                if now - self._challenger_since >= self.hold:
                    new = best[1]
                    self._challenger = None
            else:
                self._challenger = None
        changed = new != self._speaker
        self._speaker = new
        return changed

    def loudest(self, n: int, now: float, exclude: Collection[K] = (), active_only: bool = True) -> list[K]:
        """Up to ``n`` unmuted sources, loudest first; only speaking ones unless ``active_only``
        is False (then silent known sources fill the remaining places)."""
        if n <= 0:
            return []
        if active_only:
            ranked = self._active(now, exclude)
        else:
            ranked = [(self._loudness(s, now), k) for k, s in self._sources.items()
                      if not s.muted and k not in exclude]
        ranked.sort(key=lambda e: e[0], reverse=True)
        return [k for _, k in ranked[:n]]


def stable_assignment(previous: Sequence[K | None], wanted: Sequence[K],
                      sticky: Collection[K] = ()) -> list[K | None]:
    """Assign ``wanted`` sources to ``len(previous)`` slots so that a source already in a slot
    stays there (no switch, no keyframe wait); new sources take the freed slots in ``wanted``
    order; leftover slots become None.  Only the first ``len(previous)`` distinct wanted sources
    get a slot, except that a source in ``sticky`` already in a slot keeps it even when it ranks
    lower (hysteresis: sources of about the same loudness do not take turns)."""
    ranked = list(dict.fromkeys(wanted))[:len(previous)]
    keep = set(ranked)
    if sticky:
        keep.update(k for k in previous if k is not None and k in sticky)
    out: list[K | None] = [k if k is not None and k in keep else None for k in previous]
    placed = {k for k in out if k is not None}
    free = (i for i, k in enumerate(out) if k is None)
    for k in ranked:
        if k not in placed:
            i = next(free, None)
            if i is None:
                break
            out[i] = k
            placed.add(k)
    return out
