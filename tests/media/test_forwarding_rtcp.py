"""RTCP through the SFU with real aiortc peers on 127.0.0.1: NACK recovery under injected loss
(upstream: the SFU NACKs the publisher; downstream: the SFU answers from its cache with RTX),
Sender Reports translated into a slot's timestamp space, Receiver Reports and REMB toward
publishers, and a subscriber whose REMB is low dropping to thumbnails and returning when it recovers."""

from __future__ import annotations

import asyncio

import pytest

import media
from media import forwarder, rtcp
from tests.media.sfu_client import Pump, complete
from tests.media.test_forwarding import Member, close_all, join


async def three(service: media.MediaService) -> tuple[Member, Member, Member]:
    chair = await join(service, "hn", "chair", fill=1)
    a = await join(service, "hue", fill=2)
    b = await join(service, "dn", fill=3)
    return chair, a, b


async def test_upstream_loss_is_nacked_and_recovered_for_subscribers(service: media.MediaService) -> None:
    chair, a, b = await three(service)
    try:
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 10)
            nxt = a.site._seq["camera"]
            lost = {(nxt + 6) & 0xFFFF, (nxt + 7) & 0xFFFF}
            a.site.drop_sending |= {("camera", s) for s in lost}
            await a.site.until(lambda: lost <= set(a.site.nacked.get("camera", [])))
            await b.site.until(lambda: lost <= set(b.site.received["main"].seqs()))
        assert complete(b.site.received["main"].seqs())
    finally:
        await close_all(chair, a, b)


async def test_downstream_loss_is_answered_from_the_cache_with_rtx(service: media.MediaService) -> None:
    chair, a, b = await three(service)
    try:
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 10)
            last = b.site.received["main"].seqs()[-1]
            lost = {(last + 5) & 0xFFFF, (last + 9) & 0xFFFF}
            b.site.drop_receiving |= {("main", s) for s in lost}
            await b.site.until(lambda: lost <= set(b.site.received["main"].recovered))
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 40)
        assert complete(b.site.received["main"].seqs())
        assert not a.site.nacked.get("camera"), "the SFU asked the publisher for what it had cached"
        rtx_ssrc = b.site.slot_line("main").remote_rtx
        assert rtx_ssrc, "the SFU's answer declares an RTX stream for the slot"
    finally:
        await close_all(chair, a, b)


async def test_a_nack_naming_the_epoch_before_a_switch_is_answered(service: media.MediaService) -> None:
    chair, a, b = await three(service)
    try:
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: b.site.fills("main").count(2) >= 10)
            before = b.site.received["main"].packets[-3][1]         # a packet of a's epoch
            await chair.p.set_floor(chair.id)
            await b.site.until(lambda: b.site.fills("main")[-3:] == [1, 1, 1])
            line = b.site.slot_line("main")
            b.site.peer.send_rtcp(rtcp.build_rr(line.local_ssrc) +
                                  rtcp.build_nack(line.local_ssrc, line.remote_ssrcs[0], [before]))
            await b.site.until(lambda: before in b.site.received["main"].recovered)
        again = [p for p in b.site.received["main"].packets if p[1] == before]
        assert len(again) == 2 and again[0][2] == again[1][2] and again[1][4] == again[0][4]
    finally:
        await close_all(chair, a, b)


async def test_sender_reports_are_translated_into_the_slot_timestamps(service: media.MediaService) -> None:
    chair, a, b = await three(service)
    try:
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: 2 in b.site.fills("main"))
            await chair.p.set_floor(chair.id)       # b's main slot: the chair, then a again,
            await b.site.until(lambda: 1 in b.site.fills("main"))
            await chair.p.set_floor(a.id)           # so a's packets carry a non-zero offset
            await b.site.until(lambda: b.site.fills("main")[-5:] == [2] * 5)
        # one more frame of a, recognisable by its size, and a's SR naming that frame's time
        frame_ts = a.site._ts["camera"]
        a.site.send_video("camera", packets=1, size=77)
        await b.site.until(lambda: any(len(p[4]) == 77 + 7 for p in b.site.received["main"].packets))
        out_ts = next(p[2] for p in b.site.received["main"].packets if len(p[4]) == 77 + 7)
        assert out_ts != frame_ts, "no offset: the test would prove nothing"
        ntp = rtcp.ntp_from_unix(1_800_000_000.5)
        a.site.send_sender_report("camera", ntp, frame_ts)
        main_ssrc = b.site.slot_line("main").remote_ssrcs[0]

        def translated() -> list[rtcp.SenderReport]:
            return [r for r in b.site.reports if isinstance(r, rtcp.SenderReport) and r.ssrc == main_ssrc]
        await b.site.until(lambda: bool(translated()))
        sr = translated()[-1]
        assert sr.ntp == ntp
        assert sr.rtp_ts == out_ts, "the SR's RTP time does not name the same frame in the slot"
        assert sr.packet_count > 0 and sr.octet_count > 0
    finally:
        await close_all(chair, a, b)


async def test_publishers_get_receiver_reports_and_remb(service: media.MediaService) -> None:
    chair, a, b = await three(service)
    try:
        await chair.p.set_floor(a.id)        # everyone's main slot: a's camera
        async with Pump([chair.site, a.site, b.site]):
            camera = a.site.ssrc("camera")
            await chair.site.until(lambda: 2 in chair.site.fills("main"))
            chair.site.send_remb(400_000)

            def rr_for_camera() -> bool:
                return any(isinstance(r, rtcp.ReceiverReport) and any(blk.ssrc == camera for blk in r.reports)
                           for r in a.site.reports)

            def low_remb() -> bool:
                return any(isinstance(r, rtcp.Remb) and camera in r.ssrcs and r.bitrate <= 400_000 + 300_000
                           for r in a.site.reports)
            await a.site.until(rr_for_camera)
            await a.site.until(low_remb)
    finally:
        await close_all(chair, a, b)


async def test_a_subscriber_with_a_weak_link_gets_thumbnails_in_its_main_slot(
        service: media.MediaService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder, "LAYER_SETTLE", 0.0)   # the estimate counts from the start
    monkeypatch.setattr(forwarder, "LAYER_UP_AFTER", 0.3)  # and a recovered link is trusted soon
    chair, a, b = await three(service)
    try:
        await chair.p.set_floor(a.id)
        async with Pump([chair.site, a.site, b.site]):
            await b.site.until(lambda: len(b.site.received["main"].packets) >= 10)
            assert all(len(p[4]) > 200 for p in b.site.received["main"].packets)  # full layer: big packets
            # once the SFU has measured a's bitrate (its first report to a), b says its link is weak
            camera = a.site.ssrc("camera")
            await a.site.until(lambda: any(isinstance(r, rtcp.ReceiverReport) and any(x.ssrc == camera for x in r.reports)
                                           for r in a.site.reports))
            b.site.send_remb(60_000)
            got = len(b.site.received["main"].packets)
            await b.site.until(lambda: any(len(p[4]) < 200 for p in b.site.received["main"].packets[got:]))
            await b.site.until(lambda: len(b.site.received["main"].packets) >= got + 20)
            # still a's picture, still one continuous stream
            assert set(b.site.fills("main")[got:]) == {2}
            assert complete(b.site.received["main"].seqs())
            assert b.p.snapshot()["slots"]["main"] == a.id
            # The link recovers: b's estimate (sent every 100 ms, as a browser would) stays far
            # above what full layers need, and its main slot carries a's full layer again.
            got = len(b.site.received["main"].packets)
            for _ in range(100):
                b.site.send_remb(20_000_000)
                if any(len(p[4]) > 200 for p in b.site.received["main"].packets[got:]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("b's main slot never returned to the full layer")
            assert set(b.site.fills("main")[got:]) == {2}
            assert complete(b.site.received["main"].seqs())
    finally:
        await close_all(chair, a, b)


class _Peer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtcp(self, packet: bytes) -> bool:
        self.sent.append(packet)
        return True


class _Endpoint:
    def __init__(self) -> None:
        self.peer = _Peer()
        self.forwarder = type("F", (), {"stats": {"plis": 0}})()


def test_keyframe_requests_one_per_second_while_unanswered_sooner_for_a_slot_that_missed_the_answer() -> None:
    from media.forwarder import KEYFRAME_AGAIN, PLI_INTERVAL, Source
    from media.rtc_adapter import MLine

    line = MLine(index=1, mid="1", kind="video", direction="sendrecv", local_ssrc=1, local_rtx_ssrc=2,
                 remote_ssrcs=(5,), remote_rtx={}, codecs=(), extensions={})
    endpoint = _Endpoint()
    source = Source(endpoint, "thumb", line)  # type: ignore[arg-type]
    plis = endpoint.peer.sent
    assert source.request_keyframe(10.0) and len(plis) == 1
    # unanswered: nobody asks again within the interval, lenient or not
    assert not source.request_keyframe(10.0 + KEYFRAME_AGAIN)
    assert not source.request_keyframe(10.0 + PLI_INTERVAL * 0.9)
    assert source.request_keyframe(10.0 + PLI_INTERVAL) and len(plis) == 2          # the retry
    t = 10.0 + PLI_INTERVAL
    source.last_keyframe = t + 0.05           # answered
    # a slot that switched in after the answer: sooner, but not before KEYFRAME_AGAIN
    assert not source.request_keyframe(t + KEYFRAME_AGAIN * 0.5)
    assert not source.request_keyframe(t + KEYFRAME_AGAIN, strict=True)   # a subscriber's PLI: 1 s
    assert source.request_keyframe(t + KEYFRAME_AGAIN) and len(plis) == 3
    assert not source.request_keyframe(t + KEYFRAME_AGAIN * 2)              # unanswered again
    assert endpoint.forwarder.stats["plis"] == 3
    # each is a compound RR + PLI naming the publisher's SSRC
    assert all(rtcp.parse_compound(p)[-1].media_ssrc == 5 for p in plis)  # type: ignore[union-attr]
