from __future__ import annotations

import json

import pytest

from bench import media_cores


def test_bench_runs_and_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert media_cores.main(["--quick", "--number", "50"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert result["per_subscriber_video_rewrite_us"] > 0
    assert result["peer_aiortc_rtppacket_parse_serialize_us"] > 0
    assert result["aiortc_rtppacket_ratio"] > 0
    assert result["slot_reassignment_35_participants_us"] > 0 and result["slot_reassignment_scaling_150_over_35"] > 0
    assert all(v is None or isinstance(v, (int, float)) for k, v in result.items() if k.endswith("_us"))
