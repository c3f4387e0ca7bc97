"""Mail relay benchmark: durable accept rate, end-to-end delivery rate and CPU per message,
for our relay (``lienthong serve``) and a private Postfix instance under the same load.

    python -m bench.mail [--quick] [--messages N] [--repeats R] [--no-postfix] [--workers N]
                         [--no-separate-delivery]

Both servers get the same client, ``smtp-source`` (Postfix's load tool), at 1 and 20
concurrent sessions with 5 KB and 100 KB messages, and relay to the same discarding sink
(``bench._mail_sink``, a small asyncio SMTP sink process of its own that discards DATA in bulk).

* accept/s: messages / wall time of the smtp-source run (it ends after the last 250; both
  servers fsync before 250).
* delivered/s: messages / (first send -> last message at the sink).
* CPU s per 1000 messages: utime+stime of the server's whole process tree (the master or
  ``lienthong`` process, its live children, and its reaped children via cutime/cstime) from
  before the first send to the last message at the sink.

Our relay is driven through its inbound MX listener: the recipient domain is hosted (created
with ``lienthong mail agency add --next-hop 127.0.0.1:SINKPORT``), so the message goes through
the same spool and delivery worker as submitted mail, without TLS/AUTH (smtp-source speaks
neither, and Postfix relays for mynetworks without AUTH too, so both do equal work).
Postfix relays for 127.0.0.0/8 with ``relayhost = [127.0.0.1]:SINKPORT``.

Our relay runs with ``mail.workers = 0`` unless ``--workers`` says otherwise: one accept process
per core (a dedicated relay host's setting; the shipped default is 1), as Postfix runs its
smtpd, cleanup, qmgr and smtp processes on every core; and with ``mail.separate_delivery``
unless ``--no-separate-delivery``: the accept processes are all children and the main process
delivers, as Postfix's smtp processes deliver apart from smtpd (with one session sending one
message per connection, the next message's session no longer shares a core with the
previous one's delivery).  CPU counts the child processes too.

Runs alternate ours/Postfix; medians over repeats; ratios are ours / Postfix from this run.
Progress on stderr; one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZES = {"5k": 5 * 1024, "100k": 100 * 1024}
DOMAIN = "bench.example"


def log(msg: str) -> None:
    print(f"[bench.mail {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- CPU accounting over a process tree -------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, own CPU + reaped children's CPU in seconds) from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / CLK_TCK


def tree_cpu(root: int) -> float:
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total


# --- the sink ---------------------------------------------------------------------------

class SinkProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench._mail_sink"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError("sink did not start")
        self.port = int(line[1])

    def expect(self, n: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"EXPECT {n}\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def wait_done(self, timeout: float) -> tuple[float, float, int] | None:
        import select
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        parts = self.proc.stdout.readline().split()
        if not parts or parts[0] != "DONE":
            return None
        return float(parts[1]), float(parts[2]), int(parts[3])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- servers ------------------------------------------------------------------------------

class Server:
    name = ""
    pid = 0
    port = 0

    def set_next_hop(self, sink_port: int) -> None: ...
    def stop(self) -> None: ...


def _no_chroot(line: str) -> str:
    """A master.cf service line with chroot off (a private instance has no chroot jail)."""
    fields = line.split()
    if not line[:1].strip() or line.startswith("#") or len(fields) < 8:
        return line
    fields[4] = "n"
    return " ".join(fields)


class PostfixServer(Server):
    name = "postfix"

    def __init__(self, root: Path) -> None:
        self.dir = root / "postfix"
        self.conf = self.dir / "etc"
        self.conf.mkdir(parents=True)
        self.port = free_port()
        shutil.copy("/etc/postfix/master.cf", self.conf / "master.cf")
        # Our own smtpd on a loopback port instead of the system's port 25 line.
        master = (self.conf / "master.cf").read_text().splitlines()
        master = [line for line in master if not line.startswith("smtp      inet")]
        master = [_no_chroot(line) for line in master]
        master.append(f"127.0.0.1:{self.port} inet n - n - - smtpd")
        (self.conf / "master.cf").write_text("\n".join(master) + "\n")
        self.sink_port = 0
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        self._write_main(0)
        subprocess.run(["postfix", "-c", str(self.conf), "check"], check=True, capture_output=True)
        subprocess.run(["postfix", "-c", str(self.conf), "start"], check=True, capture_output=True)
        pidfile = self.dir / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid = int(pidfile.read_text().strip())

    def _write_main(self, sink_port: int) -> None:
        main = f"""
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.example
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port or 9}
smtp_tls_security_level = none
smtpd_tls_security_level = none
disable_dns_lookups = yes
smtp_host_lookup = native
maillog_file = {self.dir}/maillog
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_relay_restrictions = permit_mynetworks, reject
default_process_limit = 100
smtp_destination_concurrency_limit = 20
default_destination_concurrency_limit = 20
message_size_limit = 52428800
alias_maps =
alias_database =
biff = no
maillog_file_prefixes = {self.dir}
"""
        (self.conf / "main.cf").write_text(main)

    def set_next_hop(self, sink_port: int) -> None:
        self._write_main(sink_port)
        subprocess.run(["postfix", "-c", str(self.conf), "reload"], check=True, capture_output=True)
        # Let smtp(8) processes pick up the new relayhost.
        time.sleep(0.5)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)


class OurServer(Server):
    name = "ours"

    def __init__(self, root: Path, workers: int | None = None, separate_delivery: bool = False) -> None:
        self.state = root / "lienthong"
        self.state.mkdir()
        self.port = free_port()
        self.config = root / "lienthong.toml"
        self.config.write_text(f"""
[general]
state_dir = "{self.state}"
[tls]
cert = ""
key = ""
[web]
host = "127.0.0.1"
port = {free_port()}
[media]
udp_port_min = 0
udp_port_max = 0
[mail]
hostname = "relay.bench.example"
submission_listen = ""
smtps_listen = ""
mx_listen = "127.0.0.1:{self.port}"
scan_interval = 0.5
max_message_size = 52428800
rate_messages_per_minute = 1000000
remote_smtp_port = 25
per_destination_concurrency = 20
total_concurrency = 50
""" + ("" if workers is None else f"workers = {workers}\n")
  + ("separate_delivery = true\n" if separate_delivery else ""))
        self.cli = [sys.executable, "-m", "lienthong", "--log-level", "warning"] if False else [
            sys.executable, "-m", "lienthong"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.sink_port = 0

    def _cli(self, *args: str) -> None:
        subprocess.run([*self.cli, *args, "--config", str(self.config)], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)

    def set_next_hop(self, sink_port: int) -> None:
        # The next hop is stored per hosted domain; a fresh sink per run means a fresh domain.
        domain = f"s{sink_port}.{DOMAIN}"
        self._cli("mail", "agency", "add", f"bench{sink_port}", "--domain", domain,
                  "--next-hop", f"127.0.0.1:{sink_port}")
        self.sink_port = sink_port
        if self.proc is None:
            self.proc = subprocess.Popen([*self.cli, "serve", "--config", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=open(self.state / "serve.log", "ab"))
            self.pid = self.proc.pid
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"lienthong serve exited; see {self.state / 'serve.log'}")
                    time.sleep(0.1)
            else:
                raise RuntimeError("lienthong serve did not open its MX listener")

    def recipient_domain(self) -> str:
        return f"s{self.sink_port}.{DOMAIN}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- one run ------------------------------------------------------------------------------

@dataclass
class RunResult:
    server: str
    size: str
    sessions: int
    messages: int
    accept_per_s: float | None
    delivered_per_s: float | None
    cpu_s_per_1k: float | None
    note: str = ""


def one_run(server: Server, sink: SinkProcess, size: str, sessions: int, messages: int,
            timeout: float) -> RunResult:
    sink.expect(messages)
    if True:
        rcpt_domain = server.recipient_domain() if isinstance(server, OurServer) else "remote.example"
        cpu0 = tree_cpu(server.pid)
        t0 = time.time()
        src = subprocess.run(
            ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(SIZES[size]),
             "-f", f"sender@agency.{DOMAIN}", "-t", f"user@{rcpt_domain}", "-M", "bench-client",
             f"127.0.0.1:{server.port}"],
            capture_output=True, text=True, timeout=timeout)
        t_accept = time.time() - t0
        if src.returncode != 0:
            return RunResult(server.name, size, sessions, messages, None, None, None,
                             f"smtp-source failed: {(src.stderr or src.stdout).strip()[:300]}")
        done = sink.wait_done(timeout)
        cpu1 = tree_cpu(server.pid)
        if done is None:
            return RunResult(server.name, size, sessions, messages, messages / t_accept, None,
                             None, "not every message reached the sink before the timeout")
        _, last, _ = done
        return RunResult(server.name, size, sessions, messages, messages / t_accept,
                         messages / (last - t0), (cpu1 - cpu0) * 1000 / messages)


# --- main ---------------------------------------------------------------------------------

def ensure_postfix(allow_install: bool) -> str | None:
    """None when Postfix is usable, else the reason it is skipped."""
    if shutil.which("postfix") and shutil.which("smtp-source"):
        return None
    if allow_install and os.geteuid() == 0 and shutil.which("apt-get"):
        log("postfix missing: installing Debian's postfix with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
                       env=env, capture_output=True)
        if shutil.which("postfix") and shutil.which("smtp-source"):
            return None
    return "postfix/smtp-source not installed (and could not be installed)"


def median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced run, under a minute")
    ap.add_argument("--messages", type=int, help="messages per run")
    ap.add_argument("--repeats", type=int, help="runs per server and case")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--workers", type=int, default=0,
                    help="our mail.workers (default 0: one accept process per core, as Postfix uses every core)")
    ap.add_argument("--separate-delivery", action=argparse.BooleanOptionalAction, default=True,
                    help="our mail.separate_delivery (default on: the main process only delivers)")
    args = ap.parse_args(argv)
    if args.quick:
        cases = [("5k", 20), ("100k", 20), ("5k", 1)]
        messages, repeats = args.messages or 300, args.repeats or 1
    else:
        cases = [(s, c) for s in SIZES for c in (20, 1)]
        messages, repeats = args.messages or 2000, args.repeats or 3
    skip_reason = "--no-postfix" if args.no_postfix else ensure_postfix(True)
    if skip_reason:
        log(f"skipping Postfix: {skip_reason}; Postfix figures and ratios are null")
    if not shutil.which("smtp-source"):
        print(json.dumps({"error": "smtp-source (Debian postfix) is needed as the load client"}))
        return 1
    timeout = 120.0 if args.quick else 600.0
    root = Path(tempfile.mkdtemp(prefix="bench-mail-"))
    root.chmod(0o755)  # Postfix's daemons run as the postfix user
    servers: list[Server] = []
    results: list[RunResult] = []
    notes: list[str] = []
    sink = SinkProcess()
    try:
        try:
            servers.append(OurServer(root, args.workers, args.separate_delivery))
            servers[-1].set_next_hop(sink.port)
        except Exception as exc:  # reported, not raised: the Postfix half still runs
            notes.append(f"ours: {exc}")
        if not skip_reason:
            try:
                servers.append(PostfixServer(root))
                servers[-1].set_next_hop(sink.port)
                log(f"private postfix up, master pid {servers[-1].pid}, port {servers[-1].port}")
            except Exception as exc:
                skip_reason = f"private postfix failed to start: {exc}"
                log(skip_reason)
        for rep in range(repeats):
            for size, sessions in cases:
                for server in servers if rep % 2 == 0 else list(reversed(servers)):
                    n = messages if sessions > 1 else max(50, messages // 5)
                    try:
                        r = one_run(server, sink, size, sessions, n, timeout)
                    except Exception as exc:
                        r = RunResult(server.name, size, sessions, n, None, None, None, f"error: {exc}")
                    results.append(r)
                    log(f"{r.server:7} {size:>4} x{sessions:<2} n={n}: accept/s={r.accept_per_s and round(r.accept_per_s, 1)} "
                        f"delivered/s={r.delivered_per_s and round(r.delivered_per_s, 1)} "
                        f"cpu_s/1k={r.cpu_s_per_1k and round(r.cpu_s_per_1k, 3)} {r.note}")
    finally:
        for server in servers:
            server.stop()
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)

    cases_out: dict[str, Any] = {}
    for size, sessions in cases:
        key = f"{size}_c{sessions}"
        fig: dict[str, Any] = {}
        for name in ("ours", "postfix"):
            rs = [r for r in results if r.server == name and r.size == size and r.sessions == sessions]
            fig[name] = {
                "accept_per_s": median([r.accept_per_s for r in rs]),
                "delivered_per_s": median([r.delivered_per_s for r in rs]),
                "cpu_s_per_1k": median([r.cpu_s_per_1k for r in rs]),
                "notes": sorted({r.note for r in rs if r.note}),
            }
        for k in ("accept_per_s", "delivered_per_s", "cpu_s_per_1k"):
            fig[f"ratio_{k}"] = ratio(fig["ours"][k], fig["postfix"][k])
        cases_out[key] = fig
    head = cases_out["5k_c20"]
    out = {
        "bench": "mail",
        "accept_per_s": head["ours"]["accept_per_s"],
        "delivered_per_s": head["ours"]["delivered_per_s"],
        "cpu_s_per_1k": head["ours"]["cpu_s_per_1k"],
        "postfix_accept_ratio": head["ratio_accept_per_s"],
        "postfix_delivered_ratio": head["ratio_delivered_per_s"],
        "postfix_cpu_ratio": head["ratio_cpu_s_per_1k"],
        "postfix_skipped": skip_reason,
        "cases": cases_out,
        "params": {"quick": args.quick, "messages": messages, "repeats": repeats,
                   "client": "smtp-source", "sink": "bench._mail_sink (asyncio, bulk DATA, discards)",
                   "ours_path": "MX listener, hosted domain with next hop = sink",
                   "postfix_path": "smtpd relay for mynetworks, relayhost = sink",
                   "ours_workers": args.workers, "ours_separate_delivery": args.separate_delivery},
        "notes": notes,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
