"""Slot assignment (pure ``assign_slots``) and, over real aiortc peers, the active speaker taking
the main slot and observers receiving only."""

from __future__ import annotations

import media
from media.forwarder import assign_slots
from media.room import Member, Room
from tests.media.sfu_client import Pump, Site
from tests.media.test_forwarding import Inbox, close_all, join


def room_of(*members: tuple[str, str]) -> Room:
    room = Room("r")
    for mid, role in members:
        room.add(Member(mid, mid, mid.upper(), role))  # type: ignore[arg-type]
    return room


def slots(room: Room, who: str, previous: dict[str, str | None] | None = None, *, speaker: str | None = None,
          loudest: tuple[str, ...] = (), gallery: int = 3, audio: int = 2) -> dict[str, str | None]:
    return assign_slots(room, who, previous or {}, gallery_slots=gallery, audio_slots=audio,
                        speaker=speaker, loudest=list(loudest))


def test_main_is_the_floor_then_the_speaker_then_who_was_there() -> None:
    room = room_of(("c", "chair"), ("a", "site"), ("b", "site"), ("d", "site"))
    first = slots(room, "b")
    assert first["main"] == "a" and first["chair"] == "c"          # first site in join order
    assert slots(room, "b", first, speaker="d")["main"] == "d"
    assert slots(room, "b", first, speaker="b")["main"] == "a"      # never yourself: keep the last one
    room.set_floor("c", "d")
    assert slots(room, "b", first, speaker="a")["main"] == "d"
    assert slots(room, "d", speaker="a")["main"] == "a"             # the floor holder sees the speaker


def test_chair_sees_sites_and_no_one_sees_observers_or_themselves() -> None:
    room = room_of(("c", "chair"), ("o", "observer"), ("a", "site"), ("b", "site"))
    for who in ("c", "a", "b", "o"):
        got = slots(room, who)
        assert who not in got.values() and "o" not in got.values()
    assert slots(room, "c")["chair"] is None
    assert slots(room, "o")["chair"] == "c"


def test_gallery_takes_the_others_speakers_first_and_keeps_places() -> None:
    room = room_of(("c", "chair"), *[(f"s{i}", "site") for i in range(6)])
    first = slots(room, "s0", gallery=3)
    assert first["main"] == "s1"
    assert [first[f"gallery-{k}"] for k in range(3)] == ["s2", "s3", "s4"]
    # s5 starts speaking: it takes a freed place, the others keep theirs
    second = slots(room, "s0", first, gallery=3, loudest=("s5", "s3"), speaker="s1")
    gallery = [second[f"gallery-{k}"] for k in range(3)]
    assert "s5" in gallery and gallery[1] == "s3"
    assert gallery.index("s5") in (0, 2)


def test_speakers_of_about_the_same_loudness_do_not_take_turns_in_the_gallery() -> None:
    from media.forwarder import GALLERY_SLACK

    room = room_of(("c", "chair"), *[(f"s{i}", "site") for i in range(10)])
    room.set_floor("c", "s0")
    speakers = ("s1", "s2", "s3", "s4", "s5")            # five speak, three gallery places
    first = slots(room, "c", loudest=speakers, gallery=3)
    gallery = [first[f"gallery-{k}"] for k in range(3)]
    assert gallery == ["s1", "s2", "s3"]
    # their order shuffles (the same loudness, noise decides): nobody moves
    again = slots(room, "c", first, loudest=("s5", "s4", "s3", "s2", "s1"), gallery=3)
    assert [again[f"gallery-{k}"] for k in range(3)] == gallery
    # a place's speaker falls beyond the slack (or goes quiet): the loudest newcomer takes it
    beyond = ("s5", "s4", "s2", "s3", *[f"s{i}" for i in range(6, 6 + GALLERY_SLACK)], "s1")
    moved = slots(room, "c", first, loudest=beyond, gallery=3)
    assert [moved[f"gallery-{k}"] for k in range(3)] == ["s5", "s2", "s3"]
    quiet = slots(room, "c", first, loudest=("s4", "s2", "s3"), gallery=3)
    assert [quiet[f"gallery-{k}"] for k in range(3)] == ["s4", "s2", "s3"]


def test_audio_is_the_floor_then_the_loudest_and_never_a_muted_site() -> None:
    room = room_of(("c", "chair"), ("a", "site"), ("b", "site"), ("d", "site"))
    room.set_floor("c", "d")
    got = slots(room, "c", loudest=("b", "a"), audio=2)
    assert [got["audio-0"], got["audio-1"]] == ["d", "b"]
    room.mute_site("c", "b")
    got = slots(room, "c", got, loudest=("b", "a"), audio=2)
    assert "b" not in (got["audio-0"], got["audio-1"]) and got["audio-0"] == "d"


def test_screen_slot_follows_who_shares() -> None:
    room = room_of(("c", "chair"), ("a", "site"), ("b", "site"))
    assert slots(room, "b")["screen"] is None
    room.set_media_state("a", screen=True)
    assert slots(room, "b")["screen"] == "a" and slots(room, "a")["screen"] is None


def _assign_slots_spec(room: Room, subscriber: str, previous: dict[str, str | None], *, gallery_slots: int,
                       audio_slots: int, speaker: str | None, loudest: list[str]) -> dict[str, str | None]:
    """The assignment rule written out plainly, one subscriber at a time over the whole room
    (what ``assign_slots`` did before it read a shared ``RoomView``): the specification the
    faster version must match."""
    from media.forwarder import GALLERY_SLACK
    from media.speaker import stable_assignment

    members = room.members
    publishers = [m.id for m in members.values() if m.role != "observer"]
    others = [p for p in publishers if p != subscriber]
    present = set(others)
    chair = room.chair()
    chair_id = chair.id if chair is not None and chair.id != subscriber else None
    if room.floor in present:
        main = room.floor
    elif speaker in present:
        main = speaker
    elif previous.get("main") in present:
        main = previous["main"]
    else:
        main = next((o for o in others if o != chair_id), chair_id)
    ranked = [p for p in loudest if p in present] + others
    gallery_wanted = [p for p in dict.fromkeys(ranked) if p not in (main, chair_id)]
    speaking = [p for p in dict.fromkeys(loudest) if p in present and p not in (main, chair_id)]
    gallery = stable_assignment([previous.get(f"gallery-{k}") for k in range(gallery_slots)], gallery_wanted,
                                sticky=speaking[:gallery_slots + GALLERY_SLACK])
    audible = [p for p in ranked if not members[p].muted_by_chair]
    audio_wanted = ([main] if main is not None and main in audible and room.floor == main else []) + audible
    audio = stable_assignment([previous.get(f"audio-{k}") for k in range(audio_slots)], audio_wanted)
    sharers = [m.id for m in members.values() if m.screen and m.role != "observer"]
    out: dict[str, str | None] = {"main": main, "chair": chair_id,
                                  "screen": next((p for p in sharers if p != subscriber), None)}
    out.update({f"gallery-{k}": p for k, p in enumerate(gallery)})
    out.update({f"audio-{k}": p for k, p in enumerate(audio)})
    return out


def test_assignment_for_a_whole_room_matches_the_rule_written_out_per_subscriber() -> None:
    """``RoomForwarder.reassign`` assigns every subscriber from one ``RoomView`` (O(N) for a
    room of N, not O(N^2)); over thousands of random rooms and speaker changes it must give
    exactly what the plain per-subscriber rule gives, previous assignments included."""
    import random

    from media.forwarder import RoomView

    rng = random.Random(20261206)
    cases = 0
    for _ in range(300):
        n = rng.randint(1, 14)
        roles = ["chair"] + [rng.choice(["site", "site", "site", "observer"]) for _ in range(n - 1)]
        if rng.random() < 0.1:
            roles[0] = "site"                    # a room without a chair
        room = Room("r")
        for i, role in enumerate(roles):
            room.members[f"p{i}"] = Member(f"p{i}", f"s{i}", f"Site {i}", role,  # type: ignore[arg-type]
                                           screen=rng.random() < 0.15, muted_by_chair=rng.random() < 0.2)
        ids = list(room.members) + ["gone"]      # names that are no longer (or never were) members
        gallery, audio = rng.randint(0, 7), rng.randint(0, 4)
        assignment: dict[str, dict[str, str | None]] = {}
        for _step in range(6):
            room.floor = rng.choice([None, None, *ids])
            speaker = rng.choice([None, *ids])
            loudest = rng.sample(ids, rng.randint(0, len(ids))) + rng.sample(ids, rng.randint(0, 2))  # repeats too
            view = RoomView(room, loudest)
            for pid in room.members:
                previous = assignment.get(pid, {})
                if rng.random() < 0.2:           # a stale or foreign previous assignment
                    previous = {**previous, "main": rng.choice(ids), f"gallery-{rng.randint(0, 7)}": rng.choice(ids)}
                want = _assign_slots_spec(room, pid, previous, gallery_slots=gallery, audio_slots=audio,
                                          speaker=speaker, loudest=loudest)
                got = assign_slots(room, pid, previous, gallery_slots=gallery, audio_slots=audio,
                                   speaker=speaker, loudest=loudest, view=view)
                assert got == want, (roles, pid, previous, room.floor, speaker, loudest, gallery, audio)
                assert got == assign_slots(room, pid, previous, gallery_slots=gallery, audio_slots=audio,
                                           speaker=speaker, loudest=loudest)   # without a shared view
                assignment[pid] = got
                cases += 1
    assert cases > 5000


# ---- over aiortc ----

async def test_the_active_speaker_takes_the_main_slot(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    try:
        silent = 127
        levels = {chair.site: silent, a.site: silent, b.site: 10}   # b speaks
        async with Pump([chair.site, a.site, b.site], audio_levels=levels):
            await a.inbox.wait_for(lambda e: e == {"type": "speaker", "participant": b.id})
            await chair.inbox.wait_for(lambda e: e["type"] == "slots" and e["slots"]["main"] == b.id)
            await chair.site.until(lambda: chair.site.fills("main")[-3:] == [3, 3, 3])
            assert service.room_state("r")["speaker"] == b.id  # type: ignore[index]
            levels[b.site], levels[a.site] = silent, 10              # now a speaks
            await chair.inbox.wait_for(lambda e: e == {"type": "speaker", "participant": a.id})
            await chair.site.until(lambda: chair.site.fills("main")[-3:] == [2, 2, 2])
    finally:
        await close_all(chair, a, b)


async def test_an_observer_receives_only(service: media.MediaService) -> None:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    inbox = Inbox()
    o = await service.join_room(room_id="r", site_id="obs", site_name="Obs", role="observer", on_event=inbox)
    site = Site(o.layout(), fill=9)
    try:
        await site.connect(o.answer)
        assert {line.direction for line in site.lines} == {"recvonly"}
        assert service._forwarders["r"].endpoint(o.id).sources == {}  # type: ignore[union-attr]
        async with Pump([chair.site, a.site]):
            await site.until(lambda: 2 in site.fills("main") and 1 in site.fills("chair"))
            await site.until(lambda: {1, 2} <= set(site.fills("audio-0") + site.fills("audio-1")))
        assert o.id not in a.p.snapshot()["slots"].values()
    finally:
        await site.close()
        await close_all(chair, a)


def test_the_servers_own_ice_agents_use_stun_only() -> None:
    from media.config import MediaConfig
    from media.forwarder import RoomForwarder

    servers = [{"urls": ["stun:stun.example.gov.vn:3478", "turn:turn.example.gov.vn:3478?transport=udp"],
                "username": "u", "credential": "p"}, {"urls": ["turns:turn.example.gov.vn:5349"]}]
    forwarder = RoomForwarder(Room("r"), MediaConfig(), servers, on_change=lambda speaker, changed: None)
    assert forwarder.settings.ice_servers == [{"urls": ["stun:stun.example.gov.vn:3478"], "username": "u",
                                               "credential": "p"}]
