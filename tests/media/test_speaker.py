from __future__ import annotations

import pytest

from media.speaker import SpeakerDetector, stable_assignment

FRAME = 0.02


def feed(det: SpeakerDetector[str], levels: dict[str, int], start: float, seconds: float,
         tick_every: float = 0.1) -> list[tuple[float, str | None]]:
    """Feed 20 ms packets from each source at constant levels; tick every 100 ms; return the
    (time, speaker) changes."""
    changes = []
    steps = round(seconds / FRAME)
    per_tick = round(tick_every / FRAME)
    for i in range(1, steps + 1):
        now = start + i * FRAME
        for src, level in levels.items():
            det.update(src, level, level < 127, now)
        if i % per_tick == 0 and det.tick(now):
            changes.append((round(now, 2), det.speaker))
    return changes


def test_first_speaker_is_taken_immediately() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.5)
    assert det.speaker is None
    changes = feed(det, {"a": 30, "b": 127}, 0.0, 0.2)
    assert changes == [(0.1, "a")]


def test_silence_elects_nobody() -> None:
    det: SpeakerDetector[str] = SpeakerDetector()
    assert feed(det, {"a": 127, "b": 90}, 0.0, 2.0) == []
    assert det.speaker is None


def test_challenger_takes_over_only_after_hold() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.5)
    feed(det, {"a": 30, "b": 127}, 0.0, 1.0)
    changes = feed(det, {"a": 127, "b": 25}, 1.0, 3.0)
    assert len(changes) == 1
    when, who = changes[0]
    assert who == "b"
    assert 2.5 <= when <= 3.0  # challenger became louder within ~0.1-0.3 s, then held 1.5 s


def test_short_interjection_does_not_flap() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.5)
    feed(det, {"a": 35, "b": 127}, 0.0, 2.0)
    assert feed(det, {"a": 35, "b": 10}, 2.0, 1.0) == []  # b shouts for 1 s
    assert feed(det, {"a": 35, "b": 127}, 3.0, 3.0) == []
    assert det.speaker == "a"


def test_quiet_speaker_is_kept_until_someone_else_speaks() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.0)
    feed(det, {"a": 30}, 0.0, 1.0)
    assert feed(det, {"a": 127, "b": 127}, 1.0, 5.0) == []
    assert det.speaker == "a"


def test_similar_levels_within_margin_do_not_switch() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=0.5, margin=3.0)
    feed(det, {"a": 30, "b": 127}, 0.0, 1.0)
    assert feed(det, {"a": 30, "b": 29}, 1.0, 3.0) == []


def test_alternating_loudness_resets_the_challenger() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.5, attack=0.02, release=0.05)
    feed(det, {"a": 30}, 0.0, 0.5)
    t = 0.5
    for _ in range(6):  # b louder for 1 s, then a louder for 0.5 s: never 1.5 s in a row
        assert feed(det, {"a": 40, "b": 20}, t, 1.0) == []
        assert feed(det, {"a": 20, "b": 40}, t + 1.0, 0.5) == []
        t += 1.5
    assert det.speaker == "a"


def test_muted_speaker_is_replaced_at_next_tick() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=5.0)
    feed(det, {"a": 20, "b": 40}, 0.0, 1.0)
    assert det.speaker == "a"
    det.set_muted("a")
    assert det.tick(1.01) and det.speaker == "b"
    assert det.loudest(3, 1.01) == ["b"]
    det.set_muted("a", False)
    assert det.loudest(3, 1.01) == ["a", "b"]


def test_muted_sources_never_win() -> None:
    det: SpeakerDetector[str] = SpeakerDetector()
    det.set_muted("x")
    assert feed(det, {"x": 0}, 0.0, 1.0) == []
    assert det.speaker is None
    assert det.level("x", 1.0) < 10  # still tracked


def test_removed_speaker_is_replaced() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=5.0)
    feed(det, {"a": 20, "b": 40}, 0.0, 1.0)
    det.remove("a")
    assert det.tick(1.05) and det.speaker == "b"
    det.remove("b")
    assert det.tick(1.1) and det.speaker is None
    det.remove("nobody")


def test_source_that_stops_sending_fades_to_silence() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(release=0.4)
    feed(det, {"a": 20}, 0.0, 1.0)
    assert det.level("a", 1.0) <= 21
    assert det.level("a", 4.0) >= 120
    assert det.loudest(2, 4.0) == []
    assert det.loudest(2, 4.0, active_only=False) == ["a"]
    assert det.level("unknown", 1.0) == 127


def test_loudest_orders_and_excludes() -> None:
    det: SpeakerDetector[int] = SpeakerDetector()
    for i in range(50):
        now = i * FRAME
        for ssrc, level in ((1, 50), (2, 20), (3, 35), (4, 127), (5, 45)):
            det.update(ssrc, level, True, now)
    now = 49 * FRAME
    assert det.loudest(3, now) == [2, 3, 5]
    assert det.loudest(3, now, exclude={2}) == [3, 5, 1]
    assert det.loudest(10, now) == [2, 3, 5, 1]
    assert det.loudest(0, now) == []
    assert set(det.levels(now)) == {1, 2, 3, 4, 5}


def test_vad_bit_counts_only_when_enabled() -> None:
    on: SpeakerDetector[str] = SpeakerDetector(use_vad=True)
    off: SpeakerDetector[str] = SpeakerDetector()
    for i in range(1, 30):
        on.update("a", 20, False, i * FRAME)
        off.update("a", 20, False, i * FRAME)
    assert on.level("a", 0.58) == 127
    assert off.level("a", 0.58) <= 21


def test_out_of_range_levels_are_clamped_and_reordered_time_tolerated() -> None:
    det: SpeakerDetector[str] = SpeakerDetector()
    det.update("a", 500, True, 1.0)
    det.update("a", -4, True, 0.5)  # earlier timestamp: counted as one frame, no crash
    assert 0 <= det.level("a", 1.0) <= 127


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SpeakerDetector(attack=0)
    with pytest.raises(ValueError):
        SpeakerDetector(hold=-1)


def test_stable_assignment_keeps_sources_in_place() -> None:
    assert stable_assignment(["a", "b", "c"], ["c", "d", "a"]) == ["a", "d", "c"]
    assert stable_assignment([None, None, None], ["x", "y"]) == ["x", "y", None]
    assert stable_assignment(["a", "b"], []) == [None, None]
    assert stable_assignment(["a", "b"], ["b", "a", "z"]) == ["a", "b"]


def test_stable_assignment_keeps_sticky_sources_below_the_cut() -> None:
    # b ranks third for two slots, but it is sticky and already placed: it stays, c waits
    assert stable_assignment(["a", "b"], ["c", "a", "b"], sticky={"a", "b", "c"}) == ["a", "b"]
    assert stable_assignment(["a", "b"], ["c", "a", "b"]) == ["a", "c"]        # without: c takes b's place
    assert stable_assignment(["a", "x"], ["c", "a", "b"], sticky={"a", "b", "c"}) == ["a", "c"]  # x not sticky
    assert stable_assignment([None, "b"], ["c", "a", "b"], sticky={"b"}) == ["c", "b"]


def test_stable_assignment_only_counts_the_first_slots_wanted() -> None:
    # wanted is ranked: only its first len(previous) entries get slots
    assert stable_assignment(["a", None], ["z", "y", "a"]) == ["z", "y"]
    assert stable_assignment(["a", "b"], ["a", "a", "c"]) == ["a", "c"]  # duplicates count once
    assert stable_assignment([], ["a"]) == []


def speech(t: float, loud: int = 25) -> int:
    """Speech-like level: syllables with short pauses (every 0.3 s, 0.1 s at silence level)."""
    return 127 if (t % 0.3) < 0.1 else loud


def feed_fn(det: SpeakerDetector[str], levels: dict[str, object], start: float, seconds: float) -> list[str | None]:
    speakers = []
    for i in range(1, round(seconds / FRAME) + 1):
        now = start + i * FRAME
        for src, level in levels.items():
            lvl = level(now) if callable(level) else level
            assert isinstance(lvl, int)
            det.update(src, lvl, lvl < 127, now)
        if i % 5 == 0:
            det.tick(now)
            speakers.append(det.speaker)
    return speakers


def test_first_packet_sets_the_level_directly() -> None:
    det: SpeakerDetector[str] = SpeakerDetector()
    det.update("a", 20, True, 5.0)
    assert det.level("a", 5.0) == 20


def test_noise_margin_ignores_a_steady_noisy_site() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.0, noise_margin=6.0)
    speakers = feed_fn(det, {"fan": 45, "talker": lambda t: speech(t, 40)}, 0.0, 10.0)
    assert det.speaker == "talker"
    assert "fan" not in speakers
    assert det.loudest(3, 10.0) == ["talker"]


def test_without_noise_margin_a_steady_loud_site_wins() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.0)
    feed_fn(det, {"fan": 35, "talker": lambda t: speech(t, 40)}, 0.0, 10.0)
    assert det.speaker == "fan"


def test_noise_floor_follows_a_site_that_starts_talking() -> None:
    det: SpeakerDetector[str] = SpeakerDetector(hold=1.0, noise_margin=6.0)
    feed_fn(det, {"room": 50}, 0.0, 5.0)                        # hum only (louder than threshold)
    assert det.speaker is None
    feed_fn(det, {"room": lambda t: speech(t, 25)}, 5.0, 3.0)   # someone talks in that room
    assert det.speaker == "room"
