"""Flood benchmark: one untrusted source (127.0.0.66) floods the SBC's internal interface with
~20,000 OPTIONS/s (one pre-built datagram sent in a tight loop) for ~10 s while the trusted
SIPp PBX (127.0.0.10) places calls at 20 calls/s through the SBC to the SIPp ITSP (127.0.0.20).
The edge guard (default settings: 100 messages per 2 s) blocks the flooder within its first
few hundred datagrams; from then on every one is dropped before parsing.

A measurement, not a pass/fail test. It reports the flood rate the sender achieved, what
the flooder got back, the SBC's CPU with and without the flood, the PBX's calls completed
and failed, SIP retransmissions and setup times (INVITE -> 200 at the PBX), and the UDP
datagrams the kernel dropped because a socket's receive buffer was full (machine-wide, from
/proc/net/snmp: anything else running at the same time counts there too).

Same calls twice on one SBC: a baseline without the flood, then with it. Run it with
`python -m bench.flood` (`make bench` runs it with the others); BENCH_FLOOD_RATE=N floods at
N datagrams/s instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.calls import (  # noqa: E402
    HOLD_MS,
    SBC_INTERNAL,
    SIPP,
    BenchSbc,
    Run,
    raise_fd_limit,
    run_calls,
)
from tests.support.sipmsg import sip_request  # noqa: E402

FLOODER_HOST = "127.0.0.66"  # no PBX network, no trunk: untrusted
# Datagrams per second asked of the sender; BENCH_FLOOD_RATE=N asks for another rate.
FLOOD_RATE = int(os.environ.get("BENCH_FLOOD_RATE", "20000"))
CALL_RATE = 20.0  # PBX calls per second
CALL_SECONDS = 10.0  # calls are placed for this long, the flood lasts as long as they do
WARMUP_CALLS = 40
SENDER_MAX_SECONDS = 60.0  # the sender stops on its own after this, whatever happens


# ---------------------------------------------------------------------------- the sender


def sender(host: str, target_host: str, target_port: int, rate: float) -> int:
    """The flooder (its own process, so it has a core's worth of GIL to itself): sends one
    pre-built OPTIONS to the target at `rate` per second until SIGTERM, reading (and
    counting) any answers on the way; prints one JSON line of figures at the end."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    target = (target_host, target_port)
    datagram = sip_request(
        "OPTIONS", target, source=sock.getsockname(), headers=(("User-Agent", "flood/1.0"),)
    )
    batch = max(1, int(rate / 1000))  # one batch per millisecond
    sent = answers = errors = 0
    print("ready", flush=True)
    started = time.monotonic()
    sendto, recv = sock.sendto, sock.recv
    while not stop:
        elapsed = time.monotonic() - started
        if elapsed > SENDER_MAX_SECONDS:
            break
        due = int(elapsed * rate) + batch
        if sent >= due:
            time.sleep(0.0005)  # ahead of the pace: give the CPU back
            continue
        for _ in range(min(due - sent, 50 * batch)):
            try:
                sendto(datagram, target)
                sent += 1
            except OSError:  # ENOBUFS/EAGAIN: the local queue is full; count, go on
                errors += 1
                break
        try:
            while True:
                recv(65535)
                answers += 1
        except BlockingIOError:
            pass
    wall = time.monotonic() - started
    print(
        json.dumps(
            {
                "sent": sent,
                "seconds": wall,
                "answers": answers,
                "send_errors": errors,
                "asked": rate,
            }
        ),
        flush=True,
    )
    return 0


@dataclass(slots=True)
class FloodFigures:
    sent: int
    seconds: float
    answers: int
    send_errors: int
    asked: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else float("nan")


class Flooder:
    """The sender process, started before the calls and stopped after them."""

    def __init__(self, target: tuple[str, int], rate: float) -> None:
        self.command = [
            sys.executable, "-m", "bench.flood", "--send",
            FLOODER_HOST, target[0], str(target[1]), str(rate),
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "ready": bound, about to send
        if line.strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"the flood sender did not start: {line!r}")

    def stop(self) -> FloodFigures:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"the flood sender gave no figures (exit {process.returncode})")
        return FloodFigures(**json.loads(lines[-1]))


# ---------------------------------------------------------------------------- readings


def udp_drops() -> int:
    """Datagrams the kernel dropped for a full socket receive buffer (all sockets)."""
    try:
        with open("/proc/net/snmp") as handle:
            rows = [line.split() for line in handle if line.startswith("Udp:")]
    except OSError:
        return 0
    if len(rows) < 2:
        return 0
    return int(dict(zip(rows[0][1:], rows[1][1:], strict=False)).get("RcvbufErrors", 0))


@dataclass(slots=True)
class Phase:
    name: str
    run: Run
    drops: int
    flood: FloodFigures | None = None


def run_phase(sbc: BenchSbc, workdir: Path, name: str, flood: bool) -> Phase:
    calls = int(CALL_RATE * CALL_SECONDS)
    drops = udp_drops()
    flooder = Flooder((SBC_INTERNAL, sbc.internal_port), FLOOD_RATE) if flood else None
    figures = None
    if flooder is not None:
        flooder.start()
    try:
        run = run_calls(sbc, workdir, name, calls, CALL_RATE)
    finally:
        if flooder is not None:
            figures = flooder.stop()
    return Phase(name, run, udp_drops() - drops, figures)


# ---------------------------------------------------------------------------- report


def describe(phase: Phase) -> str:
    run = phase.run
    u, s = run.uac, run.uas
    text = (
        f"  {phase.name}: PBX calls {u.successful}/{run.calls} completed, {u.failed} failed; "
        f"retransmissions {u.retransmissions} (PBX) + {s.retransmissions} (ITSP); "
        f"setup mean {run.setup_ms:.1f} ms, worst 1-s mean {run.worst_setup_ms:.1f} ms; "
        f"SBC CPU {run.sbc_cpu:.2f} s over {run.wall:.1f} s = {100 * run.sbc_cpu / run.wall:.0f}% "
        f"({run.cpu_ms_per_call:.2f} ms per call); kernel UDP receive-buffer drops {phase.drops}"
    )
    if not run.clean:
        text += f"\n    problems: {run.problems()}"
    return text


def main() -> int:
    if SIPP is None:
        print("sipp is not installed (Debian package sip-tester): skipped")
        return 0
    raise_fd_limit()
    print(f"command: {sys.executable} -m bench.flood  (make bench runs it with the others)")
    with tempfile.TemporaryDirectory(prefix="sbc-bench-flood-") as tmp:
        workdir = Path(tmp)
        sbc = BenchSbc(workdir, "sbc-flood", log_level="info", profile=None)
        try:
            sbc.start()
            print(
                f"SBC pid {sbc.pid}, default security settings (flood: 100 messages per 2 s); "
                f"flooder {FLOODER_HOST} -> {SBC_INTERNAL}:{sbc.internal_port} at {FLOOD_RATE}/s asked; PBX calls "
                f"at {CALL_RATE:g}/s for {CALL_SECONDS:g} s, {HOLD_MS} ms each",
                flush=True,
            )
            warm = run_calls(sbc, workdir, "warmup", WARMUP_CALLS, CALL_RATE)
            if not warm.clean:
                print(f"warm-up failed: {warm.problems()}\nSBC log:\n{sbc.log_tail()}")
                return 1
            baseline = run_phase(sbc, workdir, "baseline", flood=False)
            flooded = run_phase(sbc, workdir, "flood", flood=True)
        finally:
            sbc.stop()
        log = sbc.log_bytes().decode(errors="replace").splitlines()
    blocked = [line for line in log if "event=security.blocked" in line]
    print()
    print(describe(baseline))
    print(describe(flooded))
    figures = flooded.flood
    if figures is not None:
        print(
            f"  flooder: {figures.sent} datagrams in {figures.seconds:.1f} s = "
            f"{figures.rate:.0f}/s sent (asked {figures.asked:g}/s), "
            f"{figures.send_errors} send errors, {figures.answers} answers received"
        )
    print(f"  security.blocked lines: {len(blocked)}")
    for line in blocked:
        print(f"    {line.split('event=', 1)[-1]}")
    base, flood = baseline.run, flooded.run
    extra_cpu = flood.sbc_cpu - base.sbc_cpu
    if figures is not None and figures.sent:
        print(
            f"  the flood cost the SBC {extra_cpu:.2f} CPU s more than the baseline: "
            f"{1e6 * extra_cpu / figures.sent:.2f} us per flood datagram"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--send":
        _, _, source, target_host, target_port, asked = sys.argv
        sys.exit(sender(source, target_host, int(target_port), float(asked)))
    sys.exit(main())
