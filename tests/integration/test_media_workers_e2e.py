"""Media workers end to end: the real `sbc` process with `media: {workers: 2}` between a SIPp
PBX and a SIPp ITSP (tests/support/calls.py), its relay running in two `python -m
media.worker` child processes.

Which worker relays a call is read from outside, as an operator would: each worker's command
line names its `--index` and its `--ports LOW-HIGH` slice of the port range, and the relay
ports the SBC advertised in the SDP fall in the slice of the worker that holds the call.

- A worker SIGKILLed mid-call: both parties get a BYE from the SBC, the SBC logs media.lost
  and call.ended for the call, restarts the worker on the same slice, and new calls relay RTP
  both ways (one of them through the restarted worker).
- 200 concurrent calls spread evenly (within 10%) over the two workers.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.calls import (
    ITSP_HOST,
    PBX_HOST,
    SBC_EXTERNAL,
    SBC_INTERNAL,
    CallLab,
    CallOutcome,
    MediaAddress,
    RunningPair,
    TracedMessage,
    parse_trace,
    sdp_media,
)
from tests.support.process import SbcProcess
from tests.support.rtp import RtpEndpoint, send_until_received
from tests.support.sipp import SIPP, _read

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

T1 = 0.05  # s: retransmissions and transaction timers stay short


# ---------------------------------------------------------------------------- the workers


@dataclass(frozen=True, slots=True)
class WorkerProcess:
    """A `python -m media.worker` child of the SBC, as its command line describes it."""

    pid: int
    index: int
    low: int
    high: int

    def holds(self, port: int) -> bool:
        return self.low <= port <= self.high


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone meanwhile
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]) if len(fields) > 1 else None


def _children(pid: int) -> list[int]:
    """Child processes of `pid`: every task's `children` file when the kernel has them,
    else a scan of /proc for processes whose parent is `pid`."""
    found: set[int] = set()
    tasks = Path(f"/proc/{pid}/task")
    children_files = list(tasks.glob("*/children")) if tasks.is_dir() else []
    if children_files:
        for path in children_files:
            try:
                found.update(int(value) for value in path.read_text().split())
            except OSError:
                continue  # the thread ended meanwhile
        return sorted(found)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent_pid(int(entry.name)) == pid:
            found.add(int(entry.name))
    return sorted(found)


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE` in an argument list."""
    for position, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and position + 1 < len(args):
            return args[position + 1]
    return None


def media_workers(sbc: SbcProcess) -> dict[int, WorkerProcess]:
    """The living media workers of the SBC, by index, from their command lines (a worker
    killed but not yet reaped has an empty command line and is left out)."""
    workers: dict[int, WorkerProcess] = {}
    for child in _children(sbc.pid):
        try:
            raw = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        args = raw.decode(errors="replace").split("\0")
        if "media.worker" not in args:
            continue
        index, ports = _option(args, "--index"), _option(args, "--ports")
        assert index is not None and ports is not None, f"worker {child}: {args}"
        low, high = (int(part) for part in ports.split("-"))
        workers[int(index)] = WorkerProcess(child, int(index), low, high)
    return workers


def wait_for_workers(
    sbc: SbcProcess, count: int, timeout: float = 10.0
) -> dict[int, WorkerProcess]:
    """The workers once `count` of them run (they are up before sbc.ready: this only waits
    out a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = media_workers(sbc)
        if len(workers) == count:
            return workers
        assert time.monotonic() < deadline, f"{len(workers)} media workers, not {count}"
        time.sleep(0.05)  # polling /proc: no event tells us a fork happened


def owner_of(workers: dict[int, WorkerProcess], port: int) -> WorkerProcess:
    """The one worker whose port slice holds `port`."""
    owners = [worker for worker in workers.values() if worker.holds(port)]
    assert len(owners) == 1, f"port {port} is in the slice of {len(owners)} workers: {workers}"
    return owners[0]


def _random_port_range(size: int) -> str:
    """`size` ports below the ephemeral range, at a random even place so parallel runs rarely
    meet (a worker whose port is taken moves to its next pair anyway)."""
    base = random.randrange(20000, 32000 - size, 2)
    return f"[{base}, {base + size - 1}]"


# ---------------------------------------------------------------------------- calls


def _answer_to_pbx(message: TracedMessage) -> bool:
    return message.direction == "received" and message.status == 200 and message.method == "INVITE"


def _invite_to_itsp(message: TracedMessage) -> bool:
    return message.direction == "received" and message.is_request and message.method == "INVITE"


def relay_addresses(pair: RunningPair) -> tuple[MediaAddress, MediaAddress]:
    """(the relay toward the PBX, from the 200 it got; the relay toward the ITSP, from the
    INVITE it got): the audio stream of each."""
    answer = pair.wait_for_message("pbx", _answer_to_pbx)
    invite = pair.wait_for_message("itsp", _invite_to_itsp)
    toward_pbx, toward_itsp = sdp_media(answer.body)[0], sdp_media(invite.body)[0]
    assert (toward_pbx.host, toward_itsp.host) == (SBC_INTERNAL, SBC_EXTERNAL)
    assert toward_pbx.port > 0 and toward_itsp.port > 0
    return toward_pbx, toward_itsp


def check_rtp_both_ways(
    pbx: RtpEndpoint, itsp: RtpEndpoint, toward_pbx: MediaAddress, toward_itsp: MediaAddress
) -> None:
    outbound = os.urandom(160)
    sent, got = send_until_received(pbx, itsp, (toward_pbx.host, toward_pbx.port), outbound)
    assert got.packet.payload == sent.payload
    assert got.source == (toward_itsp.host, toward_itsp.port), got.source
    inbound = os.urandom(160)
    sent, got = send_until_received(itsp, pbx, (toward_itsp.host, toward_itsp.port), inbound)
    assert got.packet.payload == sent.payload
    assert got.source == (toward_pbx.host, toward_pbx.port), got.source


def assert_ok(outcome: CallOutcome) -> None:
    assert outcome.ok, outcome.describe()


def log_value(line: str, key: str) -> str:
    found = re.search(rf'\b{key}=("(?:[^"\\]|\\.)*"|\S+)', line)
    assert found, f"no {key}= in {line!r}"
    return found.group(1).strip('"')


def stats(sbc: SbcProcess) -> dict[str, int]:
    """What `kill -USR1` reports in its sbc.stats line."""
    start = len(sbc.log_lines())
    os.kill(sbc.pid, signal.SIGUSR1)
    line = sbc.wait_for_log(r"event=sbc\.stats ", start=start)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)(?=\s|$)", line)}


# ---------------------------------------------------------------------------- worker death


def test_worker_killed_mid_call_ends_the_call_and_is_replaced(tmp_path: Path) -> None:
    # 15 s for any <recv>: both parties wait for the SBC's BYE while the test works mid-call.
    with (
        CallLab(tmp_path, sip={"t1": T1}, media={"workers": 2}, recv_timeout=15.0) as lab,
        RtpEndpoint(PBX_HOST, lab.pbx_rtp, ssrc=0x11110001) as pbx_rtp,
        RtpEndpoint(ITSP_HOST, lab.itsp_rtp, ssrc=0x22220002) as itsp_rtp,
    ):
        sbc = lab.sbc
        assert sbc is not None
        workers = wait_for_workers(sbc, 2)
        assert sorted(workers) == [0, 1], workers
        slices = {index: (w.low, w.high) for index, w in workers.items()}

        # Neither party hangs up: each waits for a BYE from the SBC and answers it.
        with lab.outbound("call_itspbye_pbx.xml", "call_out_itsp.xml", timeout=20.0) as pair:
            toward_pbx, toward_itsp = relay_addresses(pair)
            pair.wait_for_message("itsp", lambda m: m.direction == "received" and m.method == "ACK")
            check_rtp_both_ways(pbx_rtp, itsp_rtp, toward_pbx, toward_itsp)
            victim = owner_of(workers, toward_itsp.port)
            # Both legs of a session live on one worker.
            assert owner_of(workers, toward_pbx.port) == victim, (toward_pbx, toward_itsp)
            call = log_value(sbc.wait_for_log(r"event=call\.new "), "call")

            mark = len(sbc.log_lines())
            os.kill(victim.pid, signal.SIGKILL)

            died = sbc.wait_for_log(
                rf"event=media\.worker_died .*\bworker={victim.index}\b", start=mark
            )
            assert log_value(died, "pid") == str(victim.pid), died
            assert log_value(died, "sessions") == "1", died
            lost = sbc.wait_for_log(
                rf"event=media\.lost .*\bcall={re.escape(call)}(\s|$)", start=mark
            )
            assert "media worker" in lost, lost
            ended = sbc.wait_for_log(
                rf"event=call\.ended .*\bcall={re.escape(call)}(\s|$)", start=mark
            )
            assert "media relay lost" in log_value(ended, "reason"), ended
            assert log_value(ended, "ended_by") == "sbc", ended
            assert log_value(ended, "status") == "200", ended
            outcome = pair.wait()
        assert_ok(outcome)

        # Both parties were hung up by the SBC (neither sent a BYE), with an RFC 3326 Reason.
        for run in (outcome.pbx, outcome.itsp):
            byes = run.received_requests("BYE")
            assert byes, f"no BYE reached the {run.role}\n{outcome.describe()}"
            reason = byes[0].header("Reason") or ""
            assert "media relay lost" in reason, f"{run.role} BYE Reason: {reason!r}"
            assert not [m for m in run.sent if m.is_request and m.method == "BYE"]
        # The other worker was untouched.
        survivor = 1 - victim.index
        assert not [
            line
            for line in sbc.log_lines()[mark:]
            if re.search(rf"event=media\.worker_died .*\bworker={survivor}\b", line)
        ], "the other worker died too"

        # The pool starts a new process on the same slice.
        ready = sbc.wait_for_log(
            rf"event=media\.worker_ready .*\bworker={victim.index}\b.*\brestarts=1\b", start=mark
        )
        restarted = wait_for_workers(sbc, 2)
        assert restarted[victim.index].pid != victim.pid
        assert log_value(ready, "pid") == str(restarted[victim.index].pid), ready
        assert (restarted[victim.index].low, restarted[victim.index].high) == slices[victim.index]
        assert restarted[survivor] == workers[survivor]
        assert not Path(f"/proc/{victim.pid}/cmdline").exists() or (
            _parent_pid(victim.pid) != sbc.pid
        ), "the killed worker was never reaped"
        assert stats(sbc)["calls"] == 0

        # New calls relay RTP both ways; ties between idle workers alternate, so within three
        # calls one goes through the restarted worker.
        used: list[int] = []
        for _ in range(3):
            with lab.outbound(
                "call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "500")
            ) as pair:
                toward_pbx, toward_itsp = relay_addresses(pair)
                check_rtp_both_ways(pbx_rtp, itsp_rtp, toward_pbx, toward_itsp)
                used.append(owner_of(restarted, toward_itsp.port).index)
                assert owner_of(restarted, toward_pbx.port).index == used[-1]
                outcome = pair.wait()
            assert_ok(outcome)
            if used[-1] == victim.index:
                break
        assert victim.index in used, f"no new call went through the restarted worker: {used}"
        deaths = [line for line in sbc.log_lines() if "event=media.worker_died" in line]
        assert len(deaths) == 1, "\n".join(deaths)


# ---------------------------------------------------------------------------- balancing

CONCURRENT = 200


def _count_received(path: Path, predicate: Callable[[TracedMessage], bool]) -> set[str]:
    """Call-IDs of the messages in a trace that satisfy `predicate`."""
    return {
        message.header("Call-ID") or ""
        for message in parse_trace(_read(path))
        if predicate(message)
    }


def test_concurrent_calls_spread_evenly_over_two_workers(tmp_path: Path) -> None:
    calls = CONCURRENT
    hold_ms = 10_000  # every call is up together for several seconds, even on a busy box
    # Each call holds two port pairs (one per leg): 4 ports, 400 per worker at the peak.
    media = {"workers": 2, "port_range": _random_port_range(2000)}
    with CallLab(tmp_path, media=media, recv_timeout=25.0) as lab:
        sbc = lab.sbc
        assert sbc is not None
        workers = wait_for_workers(sbc, 2)
        pair = lab.start_outbound(
            "weighted_uac.xml",
            "weighted_uas.xml",
            pbx_args=("-m", str(calls), "-l", str(calls), "-r", "100", "-d", str(hold_ms)),
            itsp_args=("-m", str(calls)),
            timeout=40.0,
        )
        try:
            itsp_trace = pair.sides["itsp"].trace_path(pair.workdir)
            pbx_trace = pair.sides["pbx"].trace_path(pair.workdir)
            # All calls up: the ITSP has every ACK, and no BYE has been sent yet.
            deadline = time.monotonic() + 15.0
            while True:
                acked = _count_received(
                    itsp_trace, lambda m: m.direction == "received" and m.method == "ACK"
                )
                if len(acked) >= calls:
                    break
                for role, process in pair.processes.items():
                    assert process.poll() is None, f"{role} SIPp ended early\n{lab.log_tail()}"
                assert time.monotonic() < deadline, (
                    f"only {len(acked)} of {calls} calls were up after 15 s\n{lab.log_tail()}"
                )
                time.sleep(0.25)  # polling SIPp's trace file: there is no event to wait on
            live = stats(sbc)
            byes = _count_received(
                pbx_trace, lambda m: m.direction == "sent" and m.is_request and m.method == "BYE"
            )
            assert not byes, "calls ended before all were up: raise hold_ms"
            assert live["calls"] == calls and live["media_sessions"] == calls, live

            # Count each call's relay ports (the INVITE to the ITSP, the 200 to the PBX) per
            # worker slice.
            itsp_ports = {
                m.header("Call-ID"): sdp_media(m.body)[0].port
                for m in parse_trace(_read(itsp_trace))
                if _invite_to_itsp(m)
            }
            pbx_ports = {
                m.header("Call-ID"): sdp_media(m.body)[0].port
                for m in parse_trace(_read(pbx_trace))
                if _answer_to_pbx(m)
            }
            assert len(itsp_ports) == calls and len(pbx_ports) == calls
            assert len(set(itsp_ports.values())) == calls, "two live calls share a relay port"
            external = Counter(owner_of(workers, p).index for p in itsp_ports.values())
            internal = Counter(owner_of(workers, p).index for p in pbx_ports.values())
            assert external == internal, (external, internal)
            split = {index: external[index] for index in sorted(workers)}
            low, high = int(calls / 2 * 0.9), int(calls / 2 * 1.1)
            assert all(low <= n <= high for n in split.values()), f"per worker: {split}"

            outcome = pair.wait(callee_grace=10.0)
        except BaseException:
            pair.kill()
            raise
        context = outcome.describe()
        assert outcome.pbx.result.returncode == 0, context
        assert (outcome.pbx.result.successful, outcome.pbx.result.failed) == (calls, 0), context
        assert outcome.itsp.result.successful == calls, context
        # No worker died under the load.
        assert "event=media.worker_died" not in sbc.log_text()
