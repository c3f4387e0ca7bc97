"""Checks of bench._sfu_janus: its pure parts always, and one tiny real Janus VideoRoom run
(private network namespace, HTTP API, aiortc peers) where Debian's janus is installed and we
are root."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from aiortc.rtp import unpack_header_extensions

from bench import _sfu_fixtures as fixtures
from bench import _sfu_janus as janus


def test_config_loads_only_videoroom_and_http_on_loopback_without_stun(tmp_path: Path) -> None:
    files = janus.janus_config_files(tmp_path, 18088, (20000, 21999))
    assert set(files) == {"janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg"}
    core = files["janus.jcfg"]
    assert f'plugins_folder = "{tmp_path / "plugins"}"' in core
    assert f'transports_folder = "{tmp_path / "transports"}"' in core
    assert 'rtp_port_range = "20000-21999"' in core
    assert "ignore_mdns = true" in core
    assert "stun_server" not in core and "nat_1_1" not in core and "turn_" not in core
    http = files["janus.transport.http.jcfg"]
    assert "port = 18088" in http and 'ip = "127.0.0.1"' in http
    assert "https = false" in http and "admin_http = false" in http
    # Balanced braces: libconfig rejects the file otherwise (Janus would fall back to defaults).
    for text in files.values():
        assert text.count("{") == text.count("}")


def test_subscription_plan_skips_self_and_spreads_load() -> None:
    feeds = [11, 12, 13, 14, 15]
    plans = [janus.subscription_plan(site, feeds, video_feeds=3, audio_feeds=2) for site in range(5)]
    assert plans[0] == ([12, 13, 14], [12, 13])
    assert plans[4] == ([11, 12, 13], [11, 12])
    for site, (video, audio) in enumerate(plans):
        assert feeds[site] not in video and feeds[site] not in audio
    # Every publisher is watched by the same number of subscribers.
    watched = [sum(f in video for video, _ in plans) for f in feeds]
    assert watched == [3] * 5


def test_subscription_plan_small_meeting_takes_everyone_else() -> None:
    video, audio = janus.subscription_plan(1, [7, 8], video_feeds=1, audio_feeds=1)
    assert (video, audio) == ([7], [7])


def test_process_tree_cpu_includes_descendants() -> None:
    # A child that burns CPU: the tree's CPU time covers it, the child alone shows it too.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\nprint('done',flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        alone = janus.process_tree_cpu_seconds(child.pid)
        tree = janus.process_tree_cpu_seconds(os.getpid())
        assert alone >= 0.2
        assert tree >= alone
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_detect_reports_a_reason_or_none() -> None:
    reason = janus.detect()
    assert reason is None or (isinstance(reason, str) and reason)


@pytest.mark.skipif(janus.detect() is not None, reason=f"Janus not measurable here: {janus.detect()}")
def test_janus_videoroom_forwards_to_every_subscriber(tmp_path: Path) -> None:
    fixture = fixtures.load_or_build(tmp_path, seconds=0.5, width=160, height=96)
    lines: list[str] = []
    result = janus.run_janus(fixture, sites=2, warmup=0.5, window=1.5, progress=lines.append, cpu=None, gallery=0, audio_slots=1)
    assert (result["publishers"], result["video_streams"], result["audio_streams"]) == (3, 6, 3)
    assert result["forwarded_packets_per_s"] > 0
    assert result["received_fps_per_video_stream"] > 0
    assert result["cpu_us_per_packet"] > 0
    assert any("127.0.0.1" in line for line in lines if "candidates" in line)


def test_audio_level_extension_renumbered_to_negotiated_id() -> None:
    header = fixtures.build_rtp_header(111, False, 7, 960, 0x1234, extension=True)
    packet = header + fixtures.audio_level_extension(30) + b"opus"
    renumbered = janus.set_one_byte_extension_id(packet, fixtures.AUDIO_LEVEL_EXT_ID, 2)
    assert len(renumbered) == len(packet)
    profile, words = struct.unpack_from("!HH", renumbered, 12)
    assert unpack_header_extensions(profile, renumbered[16 : 16 + 4 * words]) == [(2, bytes([0x80 | 30]))]
    assert renumbered[:12] == packet[:12] and renumbered.endswith(b"opus")
    # Packets without that extension (video) are returned as they are.
    video = fixtures.build_rtp_header(96, True, 8, 3000, 0x5678) + b"vp8"
    assert janus.set_one_byte_extension_id(video, fixtures.AUDIO_LEVEL_EXT_ID, 2) is video


def test_udp_socket_drops_split_by_owner(tmp_path: Path) -> None:
    # A /proc stand-in: process 42 owns socket inode 1001; /proc/net/udp lists two sockets.
    (tmp_path / "42" / "fd").mkdir(parents=True)
    os.symlink("socket:[1001]", tmp_path / "42" / "fd" / "7")
    os.symlink("/dev/null", tmp_path / "42" / "fd" / "0")
    (tmp_path / "net").mkdir()
    header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
    row = "  {sl}: 0100007F:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0000000000000000 {drops}\n"
    (tmp_path / "net" / "udp").write_text(
        header + row.format(sl=1, port=20001, inode=1001, drops=12) + row.format(sl=2, port=40000, inode=2002, drops=5)
    )
    assert janus.udp_socket_drops(42, proc=tmp_path) == (12, 5)
    assert janus.udp_socket_drops(43, proc=tmp_path) == (0, 17)  # no such process: all "other"
    own, other = janus.udp_socket_drops(os.getpid())  # the real table parses
    assert own >= 0 and other >= 0


def test_config_event_loops_only_when_asked(tmp_path: Path) -> None:
    assert "\tevent_loops = " not in janus.janus_config_files(tmp_path, 1, (2, 3))["janus.jcfg"]
    core = janus.janus_config_files(tmp_path, 1, (2, 3), event_loops=1)["janus.jcfg"]
    assert "\tevent_loops = 1\n" in core and core.count("{") == core.count("}")
