"""Harness pieces of bench.mail (no timing asserted)."""

from __future__ import annotations

import os
import smtplib

from bench.mail import SinkProcess, _no_chroot, ratio, tree_cpu


def test_no_chroot_rewrites_service_lines_only() -> None:
    assert _no_chroot("smtp      unix  -       -       y       -       -       smtp") == "smtp unix - - n - - smtp"
    assert _no_chroot("#comment y") == "#comment y"
    assert _no_chroot("  -o smtpd_tls=yes") == "  -o smtpd_tls=yes"


def test_ratio_is_null_without_a_peer() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(2.0, None) is None and ratio(None, 1.0) is None


def test_tree_cpu_counts_this_process() -> None:
    sum(i * i for i in range(200_000))
    assert tree_cpu(os.getpid()) > 0
    assert tree_cpu(2**22 + 12345) == 0


def test_sink_reports_the_expected_count() -> None:
    sink = SinkProcess()
    try:
        sink.expect(2)
        with smtplib.SMTP("127.0.0.1", sink.port) as c:
            for _ in range(2):
                c.sendmail("a@x.example", ["b@y.example"], b"Subject: t\r\n\r\nbody\r\n")
        done = sink.wait_done(10)
        assert done is not None and done[2] == 2 and done[0] <= done[1]
    finally:
        sink.stop()
