from __future__ import annotations

import pytest

from media.bandwidth import LayerChooser, RembAggregator, aggregate_remb

NEED = 3_000_000


def test_starts_full_and_stays_full_on_a_good_link() -> None:
    c = LayerChooser(settle=0.0)
    assert c.full
    for t in range(20):
        assert c.update(float(t), need_bps=NEED, estimate_bps=5_000_000, loss=0.0)
    assert c.changes == 0


def test_can_start_on_thumbnails() -> None:
    c = LayerChooser(settle=0.0, start_full=False, up_after=3.0)
    assert not c.update(0.0, need_bps=NEED)
    assert not c.update(1.0, need_bps=NEED, estimate_bps=10_000_000)
    assert c.update(4.0, need_bps=NEED)


def test_drops_at_once_when_estimate_falls_below_need() -> None:
    c = LayerChooser(settle=0.0)
    c.update(0.0, need_bps=NEED, estimate_bps=4_000_000)
    assert not c.update(0.5, need_bps=NEED, estimate_bps=2_900_000)
    assert c.changes == 1


def test_drops_at_once_on_high_loss() -> None:
    c = LayerChooser(settle=0.0, loss_high=0.10)
    c.update(0.0, need_bps=NEED, estimate_bps=8_000_000)
    assert c.update(1.0, need_bps=NEED, loss=0.08)
    assert not c.update(2.0, need_bps=NEED, loss=0.15)


def test_drops_when_need_grows_beyond_estimate() -> None:
    c = LayerChooser(settle=0.0)
    c.update(0.0, need_bps=NEED, estimate_bps=3_500_000)
    assert not c.update(1.0, need_bps=4_000_000)


def test_returns_only_after_comfortably_above_for_up_after() -> None:
    c = LayerChooser(settle=0.0, headroom=1.25, up_after=5.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    assert not c.full
    # above need but not comfortably: never returns
    for t in range(1, 20):
        assert not c.update(float(t), need_bps=NEED, estimate_bps=3_500_000)
    # comfortably above from t=20: returns at t=25, not before
    for t in range(20, 25):
        assert not c.update(float(t), need_bps=NEED, estimate_bps=4_000_000)
    assert c.update(25.0, need_bps=NEED, estimate_bps=4_000_000)


def test_a_bad_sample_restarts_the_wait() -> None:
    c = LayerChooser(settle=0.0, up_after=5.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=5_000_000)
    c.update(4.0, need_bps=NEED, estimate_bps=5_000_000)
    c.update(5.0, need_bps=NEED, estimate_bps=2_000_000)   # dip
    assert not c.update(9.0, need_bps=NEED, estimate_bps=5_000_000)
    assert not c.update(13.0, need_bps=NEED, estimate_bps=5_000_000)
    assert c.update(14.0, need_bps=NEED, estimate_bps=5_000_000)


def test_loss_blocks_the_return() -> None:
    c = LayerChooser(settle=0.0, up_after=2.0, loss_ok=0.03)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=6_000_000, loss=0.05)
    assert not c.update(10.0, need_bps=NEED)
    c.update(11.0, need_bps=NEED, loss=0.01)
    assert c.update(13.0, need_bps=NEED)


def test_no_estimate_yet_never_goes_up() -> None:
    c = LayerChooser(settle=0.0, start_full=False, up_after=0.0)
    assert not c.update(100.0, need_bps=NEED, loss=0.0)


def test_quick_failure_after_return_doubles_the_wait() -> None:
    c = LayerChooser(settle=0.0, up_after=2.0, probation=10.0, max_up_after=6.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=5_000_000)
    assert c.update(3.0, need_bps=NEED)
    assert not c.update(4.0, need_bps=NEED, estimate_bps=1_000_000)   # failed within probation
    assert c.up_after == 4.0
    c.update(5.0, need_bps=NEED, estimate_bps=5_000_000)
    assert not c.update(8.0, need_bps=NEED)
    assert c.update(9.0, need_bps=NEED)
    assert not c.update(9.5, need_bps=NEED, estimate_bps=1_000_000)
    assert c.up_after == 6.0  # capped
    c.update(10.0, need_bps=NEED, estimate_bps=5_000_000)
    assert c.update(16.0, need_bps=NEED)
    assert c.update(26.5, need_bps=NEED)  # stayed up past probation: back-off forgotten
    assert c.up_after == 2.0


THUMBS = 1_200_000   # what flows on thumbnails: 1.5x that is below need x headroom


def test_an_estimate_capped_by_what_flows_is_not_congestion() -> None:
    # Chromium's REMB stays within 1.5x what it receives: at the start, while streams ramp up,
    # it is below need without any congestion.  Only an estimate below what flows is.
    c = LayerChooser(settle=0.0)
    assert c.update(0.0, need_bps=NEED, estimate_bps=1_500_000, receiving_bps=1_400_000)
    assert c.update(1.0, need_bps=NEED, estimate_bps=2_800_000, receiving_bps=3_000_000)
    assert not c.update(2.0, need_bps=NEED, estimate_bps=2_500_000, receiving_bps=3_000_000)  # 0.83x: congested


def test_on_thumbnails_an_estimate_above_what_flows_probes_full_layers() -> None:
    c = LayerChooser(settle=0.0, up_after=5.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000, receiving_bps=3_000_000)
    assert not c.full
    # 1.5x the thumbnails' rate: far below need x headroom, but the link is not what limits it
    for t in range(1, 6):
        assert not c.update(float(t), need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)
    assert c.update(6.0, need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)
    # an estimate that merely keeps up with what flows is no reason to probe
    d = LayerChooser(settle=0.0, up_after=5.0)
    d.update(0.0, need_bps=NEED, estimate_bps=1_000_000, receiving_bps=3_000_000)
    for t in range(1, 30):
        assert not d.update(float(t), need_bps=NEED, estimate_bps=1.1 * THUMBS, receiving_bps=THUMBS)
    # nor with loss
    e = LayerChooser(settle=0.0, up_after=5.0)
    e.update(0.0, need_bps=NEED, estimate_bps=1_000_000, receiving_bps=3_000_000)
    for t in range(1, 30):
        assert not e.update(float(t), need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS, loss=0.05)


def test_a_failed_probe_backs_off() -> None:
    c = LayerChooser(settle=0.0, up_after=2.0, probation=10.0, max_up_after=8.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000, receiving_bps=3_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)
    assert c.update(3.0, need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)
    # full layers flow; the link takes only 2 Mbps: the estimate falls below what flows
    assert not c.update(4.0, need_bps=NEED, estimate_bps=2_000_000, receiving_bps=NEED)
    assert c.up_after == 4.0


def test_an_estimate_does_not_drop_full_layers_while_they_settle() -> None:
    # At the start, and after going up, a browser's estimate lags the rate: only loss drops.
    c = LayerChooser(settle=10.0, up_after=2.0)
    assert c.update(0.0, need_bps=NEED, estimate_bps=500_000, receiving_bps=NEED)
    assert c.update(9.0, need_bps=NEED, estimate_bps=2_000_000, receiving_bps=NEED)
    assert not c.update(10.0, need_bps=NEED, estimate_bps=2_000_000, receiving_bps=NEED)   # settled: congested
    c.update(11.0, need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)
    assert c.update(13.0, need_bps=NEED, estimate_bps=1.5 * THUMBS, receiving_bps=THUMBS)  # a probe
    assert c.update(20.0, need_bps=NEED, estimate_bps=2_000_000, receiving_bps=NEED)       # settling
    assert not c.update(21.0, need_bps=NEED, loss=0.2)                                      # loss: at once


def test_thumbnails_that_save_nothing_are_not_used_for_a_low_estimate() -> None:
    # Still pictures: full layers cost about what thumbnails do, so a low estimate is no reason
    # to drop them (loss still is); and a subscriber on thumbnails goes back up.
    c = LayerChooser(settle=0.0, up_after=2.0)
    assert c.update(0.0, need_bps=30_000, estimate_bps=10_000, receiving_bps=30_000, thumbs_bps=25_000)
    assert not c.update(1.0, need_bps=30_000, estimate_bps=10_000, receiving_bps=30_000, thumbs_bps=20_000)  # 0.67x
    assert not c.update(2.0, need_bps=30_000, estimate_bps=10_000, receiving_bps=20_000, thumbs_bps=25_000)
    assert c.update(4.0, need_bps=30_000, estimate_bps=10_000, receiving_bps=25_000, thumbs_bps=25_000)
    assert not c.update(5.0, need_bps=30_000, loss=0.2, thumbs_bps=25_000)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        LayerChooser(congested_below=1.1)
    with pytest.raises(ValueError):
        LayerChooser(probe_above=0.9)
    with pytest.raises(ValueError):
        LayerChooser(headroom=0.9)
    with pytest.raises(ValueError):
        LayerChooser(loss_ok=0.2, loss_high=0.1)


# ---- REMB aggregation ----

def test_aggregate_remb_min_clamped() -> None:
    assert aggregate_remb([], 100, 1000) is None
    assert aggregate_remb([500, 300, 900], 100, 1000) == 300
    assert aggregate_remb([50, 900], 100, 1000) == 100
    assert aggregate_remb([5000], 100, 1000) == 1000


def test_aggregator_min_over_fresh_subscribers() -> None:
    agg: RembAggregator[str] = RembAggregator(floor_bps=100_000, ceiling_bps=2_000_000, max_age=5.0)
    assert agg.value(0.0) is None
    agg.update("a", 1_500_000, 0.0)
    agg.update("b", 800_000, 1.0)
    agg.update("c", 9_000_000, 1.0)
    assert agg.value(1.0) == 800_000
    assert agg.value(6.5) is None          # all stale
    agg.update("a", 1_200_000, 6.0)
    assert agg.value(6.5) == 1_200_000     # b and c stale
    agg.remove("a")
    agg.remove("missing")
    assert agg.value(6.5) is None


def test_aggregator_clamps() -> None:
    agg: RembAggregator[int] = RembAggregator(floor_bps=150_000, ceiling_bps=2_500_000)
    agg.update(1, 20_000, 0.0)
    assert agg.value(0.0) == 150_000
    agg.update(1, -5, 0.0)
    assert agg.value(0.0) == 150_000
    agg.update(1, 10**9, 0.0)
    assert agg.value(0.0) == 2_500_000


def test_due_rate_limits_but_sends_drops_at_once() -> None:
    agg: RembAggregator[str] = RembAggregator(interval=1.0, drop_ratio=0.03)
    agg.update("a", 1_000_000, 0.0)
    assert agg.due(0.0) == 1_000_000
    assert agg.due(0.2) is None                 # unchanged, within the interval
    agg.update("a", 1_200_000, 0.3)
    assert agg.due(0.4) is None                 # a rise waits for the interval
    assert agg.due(1.0) == 1_200_000
    agg.update("b", 500_000, 1.1)
    assert agg.due(1.1) == 500_000              # a drop goes out at once
    agg.update("b", 490_000, 1.2)
    assert agg.due(1.2) is None                 # a small drop waits
    assert agg.due(2.1) == 490_000


def test_aggregator_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RembAggregator(floor_bps=10, ceiling_bps=5)
