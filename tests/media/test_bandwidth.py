from __future__ import annotations

import pytest

from media.bandwidth import LayerChooser, RembAggregator, aggregate_remb

NEED = 3_000_000


def test_starts_full_and_stays_full_on_a_good_link() -> None:
    c = LayerChooser()
    assert c.full
    for t in range(20):
        assert c.update(float(t), need_bps=NEED, estimate_bps=5_000_000, loss=0.0)
    assert c.changes == 0


def test_can_start_on_thumbnails() -> None:
    c = LayerChooser(start_full=False, up_after=3.0)
    assert not c.update(0.0, need_bps=NEED)
    assert not c.update(1.0, need_bps=NEED, estimate_bps=10_000_000)
    assert c.update(4.0, need_bps=NEED)


def test_drops_at_once_when_estimate_falls_below_need() -> None:
    c = LayerChooser()
    c.update(0.0, need_bps=NEED, estimate_bps=4_000_000)
    assert not c.update(0.5, need_bps=NEED, estimate_bps=2_900_000)
    assert c.changes == 1


def test_drops_at_once_on_high_loss() -> None:
    c = LayerChooser(loss_high=0.10)
    c.update(0.0, need_bps=NEED, estimate_bps=8_000_000)
    assert c.update(1.0, need_bps=NEED, loss=0.08)
    assert not c.update(2.0, need_bps=NEED, loss=0.15)


def test_drops_when_need_grows_beyond_estimate() -> None:
    c = LayerChooser()
    c.update(0.0, need_bps=NEED, estimate_bps=3_500_000)
    assert not c.update(1.0, need_bps=4_000_000)


def test_returns_only_after_comfortably_above_for_up_after() -> None:
    c = LayerChooser(headroom=1.25, up_after=5.0)
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
    c = LayerChooser(up_after=5.0)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=5_000_000)
    c.update(4.0, need_bps=NEED, estimate_bps=5_000_000)
    c.update(5.0, need_bps=NEED, estimate_bps=2_000_000)   # dip
    assert not c.update(9.0, need_bps=NEED, estimate_bps=5_000_000)
    assert not c.update(13.0, need_bps=NEED, estimate_bps=5_000_000)
    assert c.update(14.0, need_bps=NEED, estimate_bps=5_000_000)


def test_loss_blocks_the_return() -> None:
    c = LayerChooser(up_after=2.0, loss_ok=0.03)
    c.update(0.0, need_bps=NEED, estimate_bps=1_000_000)
    c.update(1.0, need_bps=NEED, estimate_bps=6_000_000, loss=0.05)
    assert not c.update(10.0, need_bps=NEED)
    c.update(11.0, need_bps=NEED, loss=0.01)
    assert c.update(13.0, need_bps=NEED)


def test_no_estimate_yet_never_goes_up() -> None:
    c = LayerChooser(start_full=False, up_after=0.0)
    assert not c.update(100.0, need_bps=NEED, loss=0.0)


def test_quick_failure_after_return_doubles_the_wait() -> None:
    c = LayerChooser(up_after=2.0, probation=10.0, max_up_after=6.0)
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


def test_bad_parameters() -> None:
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
