"""Bandwidth decisions: which layer (full or thumbnail) a subscriber's main/chair slots carry,
from its REMB estimate and loss, with hysteresis; and the REMB sent toward each publisher,
aggregated over its subscribers.  Pure: time is passed in (seconds, any monotonic clock).

Layer choice, one ``LayerChooser`` per subscriber (or per subscriber slot: give the chair slot
a larger ``need_bps`` than the main slot so it drops first)::

    chooser = LayerChooser(up_after=5.0)
    full = chooser.update(now, need_bps=need, estimate_bps=remb.bitrate)   # on each REMB
    full = chooser.update(now, need_bps=need, loss=stats.loss_fraction)   # on each RR from it
    # need = what this subscriber receives with full layers (measured source bitrates: main +
    # chair full layers + gallery thumbnails + audio); True: send full layers, False: thumbnails

It drops to thumbnails at once when the estimate falls below ``need_bps`` or loss exceeds
``loss_high``, and returns only after the estimate has stayed at least ``headroom`` x need with
loss at most ``loss_ok`` for ``up_after`` seconds.

A browser's REMB is bounded by what it receives (Chromium: at most 1.5x the incoming rate), so
an estimate below need may only say that less is flowing, not that the link is full.  Given
``receiving_bps`` (what flows to the subscriber now), the chooser drops only when the estimate
is also below ``congested_below`` x that (the link carries less than is sent: congestion), and
on thumbnails it also goes up when the estimate has stayed ``probe_above`` x what flows (the
estimate is capped by the incoming rate, not by the link): a probe, which the back-off below
keeps rare on a link that really cannot take full layers.  For the same reason an estimate
does not drop full layers within ``settle`` seconds of going up to them (or of the start): a
browser's estimate takes seconds to follow a rate that grew.  Loss drops them at once.  Given
``thumbs_bps`` (what the subscriber would receive on thumbnails), an estimate never drops full
layers that thumbnails would not make at least ``thumbs_saving`` cheaper (still pictures, say).  A return that fails again within
``probation`` seconds doubles the wait (up to ``max_up_after``), so an oscillating link settles.

REMB toward a publisher::

    agg = RembAggregator(floor_bps=150_000, ceiling_bps=2_500_000)
    agg.update(subscriber_id, remb.bitrate, now)       # subscribers receiving this publisher's layer
    agg.remove(subscriber_id)                           # it left or switched layer
    bitrate = agg.due(now)                              # a value to send now (build_remb), or None

``aggregate_remb(estimates, floor, ceiling)`` is the plain function: min, clamped.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["LayerChooser", "RembAggregator", "aggregate_remb"]

K = TypeVar("K", bound=Hashable)


class LayerChooser:
    """Full layer vs thumbnail for one subscriber, with fast-down / slow-up hysteresis.

    ``headroom``: estimate / need ratio required to go back up; ``loss_high``: loss fraction
    that forces thumbnails; ``loss_ok``: loss fraction allowed while waiting to go up;
    ``up_after``: seconds the link must look good before going up; ``probation`` and
    ``max_up_after``: back-off when going up fails quickly; ``start_full``: the layer before
    any measurement (full: browsers start with a modest estimate that grows quickly);
    ``congested_below``, ``probe_above``: the estimate against ``receiving_bps`` (see above)."""

    def __init__(self, *, headroom: float = 1.25, loss_high: float = 0.10, loss_ok: float = 0.03,
                 up_after: float = 5.0, probation: float = 20.0, max_up_after: float = 60.0,
                 start_full: bool = True, congested_below: float = 0.9, probe_above: float = 1.2,
                 settle: float = 10.0, thumbs_saving: float = 0.8) -> None:
        if headroom < 1.0 or up_after < 0 or not 0 <= loss_ok <= loss_high <= 1:
            raise ValueError("need headroom >= 1, up_after >= 0 and 0 <= loss_ok <= loss_high <= 1")
        if not 0 < congested_below <= 1 <= probe_above:
            raise ValueError("need 0 < congested_below <= 1 <= probe_above")
        self.settle = settle
        self.thumbs_saving = thumbs_saving
        self._settle_from: float | None = None   # when full layers (re)started: the first update, or going up
        self.congested_below = congested_below
        self.probe_above = probe_above
        self.headroom = headroom
        self.loss_high = loss_high
        self.loss_ok = loss_ok
        self.base_up_after = up_after
        self.up_after = up_after
        self.probation = probation
        self.max_up_after = max_up_after
        self.full = start_full
        self.estimate_bps: float | None = None
        self.loss: float | None = None
        self._good_since: float | None = None
        self._up_at: float | None = None
        self.changes = 0

    def update(self, now: float, *, need_bps: float, estimate_bps: float | None = None,
               loss: float | None = None, receiving_bps: float | None = None,
               thumbs_bps: float | None = None) -> bool:
        """Take a new estimate and/or loss figure (None: keep the last one); True = full layers.
        ``receiving_bps``: what flows to the subscriber now; ``thumbs_bps``: what it would
        receive on thumbnails (None: unknown)."""
        if estimate_bps is not None:
            self.estimate_bps = estimate_bps
        if loss is not None:
            self.loss = loss
        est, lost = self.estimate_bps, self.loss
        flowing = receiving_bps if receiving_bps is not None and receiving_bps > 0 else None
        # thumbnails that would not lighten the link: the estimate is no reason to use them
        no_saving = thumbs_bps is not None and thumbs_bps >= need_bps * self.thumbs_saving
        if self._settle_from is None:
            self._settle_from = now
        if self.full:
            settled = now - self._settle_from >= self.settle
            short = settled and not no_saving and est is not None and est < need_bps and (
                flowing is None or est < flowing * self.congested_below)
            bad = short or (lost is not None and lost > self.loss_high)
            if bad:
                self.full = False
                self.changes += 1
                self._good_since = None
                if self._up_at is not None and now - self._up_at < self.probation:
                    self.up_after = min(self.max_up_after, max(self.up_after * 2, 1.0))
                self._up_at = None
            elif self._up_at is not None and now - self._up_at >= self.probation:
                self.up_after = self.base_up_after  # stayed up: forget the back-off
                self._up_at = None
            return self.full
        room = no_saving or (est is not None and (est >= need_bps * self.headroom
                                                  or (flowing is not None and est >= flowing * self.probe_above)))
        good = room and (lost is None or lost <= self.loss_ok)
        if not good:
            self._good_since = None
        elif self._good_since is None:
            self._good_since = now
        if good and self._good_since is not None and now - self._good_since >= self.up_after:
            self.full = True
            self.changes += 1
            self._good_since = None
            self._up_at = now
            self._settle_from = now
        return self.full


def aggregate_remb(estimates: Iterable[float], floor_bps: float, ceiling_bps: float) -> int | None:
    """The bitrate to ask of a publisher: the smallest subscriber estimate, clamped to
    [floor, ceiling]; None without estimates."""
    low = min(estimates, default=None)
    if low is None:
        return None
    return int(min(ceiling_bps, max(floor_bps, low)))


class RembAggregator(Generic[K]):
    """REMB toward one publisher (or one of its layers): the minimum over the latest estimate of
    each subscriber receiving it, clamped; estimates older than ``max_age`` seconds are ignored.

    ``due(now)`` rate-limits what is sent: a value at most every ``interval`` seconds, but a
    drop of more than ``drop_ratio`` is sent at once (congestion must be relieved quickly)."""

    def __init__(self, *, floor_bps: float = 100_000, ceiling_bps: float = 2_500_000, max_age: float = 5.0,
                 interval: float = 1.0, drop_ratio: float = 0.03) -> None:
        if floor_bps < 0 or ceiling_bps < floor_bps:
            raise ValueError("need 0 <= floor_bps <= ceiling_bps")
        self.floor_bps = floor_bps
        self.ceiling_bps = ceiling_bps
        self.max_age = max_age
        self.interval = interval
        self.drop_ratio = drop_ratio
        self._estimates: dict[K, tuple[float, float]] = {}
        self._sent: int | None = None
        self._sent_at: float | None = None

    def update(self, subscriber: K, bitrate_bps: float, now: float) -> None:
        self._estimates[subscriber] = (max(0.0, float(bitrate_bps)), now)

    def remove(self, subscriber: K) -> None:
        self._estimates.pop(subscriber, None)

    def value(self, now: float) -> int | None:
        """The aggregated estimate now, or None when no subscriber has a fresh one."""
        fresh = [bps for bps, at in self._estimates.values() if now - at <= self.max_age]
        return aggregate_remb(fresh, self.floor_bps, self.ceiling_bps)

    def due(self, now: float) -> int | None:
        """The bitrate to send now, or None when nothing needs sending."""
        value = self.value(now)
        if value is None:
            return None
        sent, at = self._sent, self._sent_at
        if sent is None or at is None or now - at >= self.interval or value < sent * (1 - self.drop_ratio):
            self._sent, self._sent_at = value, now
            return value
        return None
