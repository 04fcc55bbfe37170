"""Call-rate benchmark: the real `sbc run` process on loopback between a SIPp PBX (uac,
127.0.0.10, internal side) and a SIPp ITSP (uas, 127.0.0.20, external side). Every call is
INVITE with SDP, 180, 200 with SDP, ACK, ~1 s of talk, BYE, 200, so each one makes the SBC
open and close a media relay session (4 UDP sockets).

1. Call rate, on one SBC: rising steps of rate*5 calls. A step is held when every call
   succeeded with no SIP retransmission on either SIPp and the SBC was not saturated (busy
   95%+ while the calls were placed: it is then behind, setup times grow every second, and
   the step only passes because it is short). The highest held step is the rate "held with
   zero failures".
2. Memory per call, on a fresh SBC (a process keeps its peak memory, so the rate steps'
   high-water mark would hide any growth): RSS with 1,000 calls up at once, minus RSS before.
3. Leak check, on that second SBC: two runs of 10,000 calls with a settle in between (64*T1,
   Timer L/M/J: every transaction of run 1 expires). Run 1's growth is what its calls and
   their transactions needed at the peak; run 2 starts from the same settled state, so what
   it adds on top of run 1's peak is what the calls left behind.

After the settle the leak check also asks the SBC what is alive (`kill -USR1` logs an
sbc.stats line: calls, dialogs, transactions, media sessions and ports), besides RSS and open
file descriptors (each live call holds 4 media sockets).

Environment: BENCH_CALLS_LOG_LEVEL=warning runs the SBC without its per-call info lines (to
measure what they cost); BENCH_CALLS_PROFILE=FILE runs the rate-step SBC under cProfile and
writes its stats to FILE (read with `python -m pstats FILE`).
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.net import PortPicker, free_port  # noqa: E402
from tests.support.process import sbc_command  # noqa: E402

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAC_SCENARIO = SCENARIOS / "call_uac.xml"  # the PBX placing calls
UAS_SCENARIO = SCENARIOS / "call_uas.xml"  # the ITSP answering them

PBX_HOST = "127.0.0.10"
ITSP_HOST = "127.0.0.20"
SBC_INTERNAL = "127.0.0.1"
SBC_EXTERNAL = "127.0.0.2"
NUMBER = "15551234567"  # matches the outbound route

RATES = (200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000)
STEP_SECONDS = 5.0  # each rate step places rate * STEP_SECONDS calls
HOLD_MS = 1000  # talk time of every call (SIPp -d)
WARMUP_CALLS = 200
MEMORY_CALLS = 1000  # held up at the same time for the memory figure
MEMORY_OVERLAP = 3.0  # seconds during which all of them are up together
LEAK_CALLS = 10_000
LEAK_MAX_SECONDS = 30.0  # fewer leak calls when the held rate is too low for the budget
T1 = 0.5  # RFC 3261 default; transactions outlive their call by 64*T1 (Timer L/M/J)
SETTLE_SECONDS = 64 * T1 + 2.0
MEDIA_PORTS = (10000, 31999)  # 11,000 RTP/RTCP pairs, below Linux's ephemeral range
SOCKETS_PER_CALL = 4  # RTP + RTCP on each leg of the one audio stream
TOTAL_BUDGET = 180.0
# The SBC (one thread) is saturated when it was busy for this share of the time the calls
# were being placed: it is then behind, its socket queues and setup times grow every second,
# and a step only ends without failures because it is short.
SATURATED_CPU = 0.95
# A clean step below this share of the asked rate was limited by SIPp, not by the SBC.
MIN_RATE_SHARE = 0.9
SAMPLE_INTERVAL = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SIPP_LOOPS = ("-max_recv_loops", "10000", "-max_sched_loops", "10000")


# ---------------------------------------------------------------------------- /proc readings


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (fields 14 and 15 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def children_cpu() -> float:
    """CPU time of every child already waited for (here: the SIPp processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> None:
    """Each live call holds 4 sockets in the SBC (which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------- the SBC


class BenchSbc:
    """`sbc run` with a generated config; its log goes to a file (reading it through a pipe
    would make the benchmark process compete for CPU with what it measures)."""

    def __init__(self, workdir: Path, name: str, *, log_level: str, profile: str | None):
        self.workdir = workdir
        self.name = name
        self.log_level = log_level
        self.profile = profile
        picker = PortPicker()
        used = picker.used
        self.internal_port = picker.port(SBC_INTERNAL)
        self.external_port = picker.port(SBC_EXTERNAL)
        self.pbx_port = picker.port(PBX_HOST)
        self.itsp_port = picker.port(ITSP_HOST)
        # SIPp's own media sockets (-mp binds it and +2); the SDP of both scenarios names them.
        self.pbx_media = _even_port_run(PBX_HOST, used)
        self.itsp_media = _even_port_run(ITSP_HOST, used)
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def config_text(self) -> str:
        low, high = MEDIA_PORTS
        return (
            f"node: {self.name}\n"
            f"log: {{level: {self.log_level}, format: kv}}\n"
            f"sip: {{t1: {T1}}}\n"
            "interfaces:\n"
            f'  internal: {{listen: ["udp:{SBC_INTERNAL}:{self.internal_port}"], '
            f"media_address: {SBC_INTERNAL}}}\n"
            f'  external: {{listen: ["udp:{SBC_EXTERNAL}:{self.external_port}"], '
            f"advertise: {SBC_EXTERNAL}, media_address: {SBC_EXTERNAL}}}\n"
            f'pbxs: [{{name: pbx, interface: internal, address: "{PBX_HOST}:{self.pbx_port}", '
            f"trusted_sources: [{PBX_HOST}/32]}}]\n"
            f"trunks: [{{name: itsp, interface: external, "
            f'proxy: "sip:{ITSP_HOST}:{self.itsp_port}", codecs: [PCMU, PCMA, telephone-event]}}]\n'
            "routes:\n"
            "  outbound: [{match: '^\\+?\\d+$', trunks: [itsp]}]\n"
            "  inbound: [{match: '.*', pbx: pbx}]\n"
            # workers: 0 keeps the relay in the SBC process: the figures below (CPU and
            # memory per call, media sockets as the count of live calls) are the signalling
            # process's plus its relay, comparable run to run on a 2-core machine where
            # worker processes would compete with the two SIPp instances.
            f"media: {{port_range: [{low}, {high}], timeout: 60, workers: 0}}\n"
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0) -> BenchSbc:
        self.config_path.write_text(self.config_text())
        command = sbc_command("run", "-c", str(self.config_path))
        if self.profile:
            command[1:1] = ["-m", "cProfile", "-o", self.profile]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        # Ready once both listeners are bound (sbc.ready is an info line: with
        # BENCH_CALLS_LOG_LEVEL=warning there is none to wait for).
        deadline = time.monotonic() + timeout
        for host, port in ((SBC_INTERNAL, self.internal_port), (SBC_EXTERNAL, self.external_port)):
            while not udp_bound(host, port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"sbc did not start; log:\n{self.log_tail()}")
                time.sleep(0.05)  # nothing to wait on but the port
        return self

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.exit_code = -9
        return self.exit_code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except OSError:
            return b""

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_bytes().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def live_counts(self, timeout: float = 5.0) -> str:
        """The SBC's own count of what is alive (`kill -USR1` logs one sbc.stats line)."""
        start = self.log_size()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.log_bytes()[start:]
            for line in data.decode(errors="replace").splitlines():
                if "event=sbc.stats " in line:
                    return line.split("event=sbc.stats ", 1)[1].strip()
            time.sleep(0.05)  # the log is a file: nothing to wait on but its growth
        return "(no sbc.stats line)"

    def log_counts(self, start: int = 0) -> LogCounts:
        data = self.log_bytes()[start:]
        return LogCounts(
            lines=data.count(b"\n"),
            size=len(data),
            warnings=data.count(b"level=warning"),
            errors=data.count(b"level=error"),
            first_problem=_first_problem(data),
        )


@dataclass(slots=True)
class LogCounts:
    lines: int
    size: int
    warnings: int
    errors: int
    first_problem: str


def _first_problem(data: bytes) -> str:
    for line in data.splitlines():
        if b"level=warning" in line or b"level=error" in line:
            text = line.decode(errors="replace")
            return text if len(text) < 240 else text[:240] + "..."
    return ""


def _even_port_run(host: str, used: set[int], span: int = 4) -> int:
    """A free even port on `host` with the next span-1 ports free too (SIPp's -mp)."""
    for _ in range(200):
        base = free_port(host, avoid=used)
        base += base % 2
        ports = range(base, base + span)
        if base + span > 65535 or any(p in used for p in ports):
            continue
        if all(_udp_free(host, p) for p in ports):
            used.update(ports)
            return base
    raise RuntimeError(f"no run of {span} free UDP ports on {host}")


def udp_bound(host: str, port: int) -> bool:
    """Whether some process has bound UDP host:port, read from /proc/net/udp (a test bind
    would race with the process about to bind it)."""
    address = int.from_bytes(socket.inet_aton(host), sys.byteorder)
    local = f"{address:08X}:{port:04X}"
    try:
        with open("/proc/net/udp") as handle:
            return any(line.split()[1] == local for line in handle if ":" in line.split()[0])
    except OSError:
        return False


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------- SIPp runs


@dataclass(slots=True)
class SippStats:
    """The last row of a SIPp -trace_stat file (cumulative columns end in '(C)')."""

    returncode: int
    row: dict[str, str] = field(default_factory=dict)
    periods: list[dict[str, str]] = field(default_factory=list)  # one row per second (-fd 1)

    def count(self, column: str) -> int:
        value = self.row.get(f"{column}(C)", self.row.get(column, "0"))
        try:
            return int(value or 0)
        except ValueError:
            return 0

    def seconds(self, column: str) -> float:
        """A cumulative SIPp duration column."""
        return _duration(self.row.get(f"{column}(C)", ""))

    def worst_period(self, column: str) -> float:
        """The highest one-second mean of a duration column (e.g. ResponseTime1)."""
        values = (_duration(row.get(f"{column}(P)", "")) for row in self.periods)
        return max((value for value in values if value == value), default=0.0)

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions")

    @property
    def unexpected(self) -> int:
        """Messages for no live call (e.g. a retransmission after the call ended)."""
        return self.count("OutOfCallMsgs") + self.count("DeadCallMsgs")


def _duration(value: str) -> float:
    """A SIPp duration, 'HH:MM:SS:uuuuuu', in seconds (NaN when absent)."""
    parts = value.split(":")
    if len(parts) != 4:
        return float("nan")
    hours, minutes, secs, micros = (int(part) for part in parts)
    return hours * 3600 + minutes * 60 + secs + micros / 1e6


def read_stats(path: Path, returncode: int) -> SippStats:
    try:
        with path.open(newline="", errors="replace") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return SippStats(returncode)
    if len(rows) < 2:
        return SippStats(returncode)
    header = rows[0]
    table = [{k: v for k, v in zip(header, row, strict=False) if k} for row in rows[1:]]
    return SippStats(returncode, table[-1], table)


def sipp_commands(
    sbc: BenchSbc, name: str, calls: int, rate: float, hold_ms: int, timeout: float
) -> tuple[list[str], list[str]]:
    """The (uas, uac) command lines of one run; files go to the current directory."""
    assert SIPP is not None
    common = ["-t", "u1", "-nostdin", "-trace_stat", "-fd", "1", "-trace_err", *SIPP_LOOPS]
    uas = [
        SIPP, f"{SBC_EXTERNAL}:{sbc.external_port}",
        "-sf", str(UAS_SCENARIO),
        "-i", ITSP_HOST, "-p", str(sbc.itsp_port), "-mp", str(sbc.itsp_media),
        "-m", str(calls),
        "-timeout", f"{timeout + 10:g}s",
        "-stf", f"{name}_uas.csv", "-error_file", f"{name}_uas_errors.log",
        *common,
    ]  # fmt: skip
    uac = [
        SIPP, f"{SBC_INTERNAL}:{sbc.internal_port}",
        "-sf", str(UAC_SCENARIO),
        "-i", PBX_HOST, "-p", str(sbc.pbx_port), "-mp", str(sbc.pbx_media),
        "-s", NUMBER,
        "-m", str(calls), "-r", f"{rate:g}", "-l", str(calls), "-d", str(hold_ms),
        "-timeout", f"{timeout:g}s", "-recv_timeout", "10000",
        "-stf", f"{name}_uac.csv", "-error_file", f"{name}_uac_errors.log",
        *common,
    ]  # fmt: skip
    return uas, uac


@dataclass(slots=True)
class Run:
    """One batch of calls through the SBC: both SIPp's statistics and the SBC's readings."""

    name: str
    rate: float
    calls: int
    uac: SippStats
    uas: SippStats
    wall: float  # from the uac's start to its exit
    sbc_cpu: float  # SBC CPU seconds over `wall`
    send_cpu: float  # SBC CPU share while the calls were being placed (the first calls/rate s)
    sipp_cpu: float  # both SIPp processes, CPU seconds
    rss_before: int  # KiB
    rss_peak: int
    rss_after: int
    fds_before: int
    fds_peak: int
    log: LogCounts
    commands: tuple[list[str], list[str]]  # (uas, uac)

    @property
    def setup_ms(self) -> float:
        """Mean INVITE -> 200 time seen by the PBX (SIPp rtd 1)."""
        return 1000 * self.uac.seconds("ResponseTime1")

    @property
    def worst_setup_ms(self) -> float:
        """The highest one-second mean setup time: it grows every second when the SBC is
        behind, and jumps for a second when the SBC stalls (a long garbage collection)."""
        return 1000 * self.uac.worst_period("ResponseTime1")

    @property
    def send_rate(self) -> float:
        """Calls started per second: the uac's run less the length of one call."""
        length = self.uac.seconds("CallLength")
        sending = self.wall - (length if length == length else HOLD_MS / 1000)
        return self.calls / sending if sending > 0 else float("nan")

    @property
    def peak_calls(self) -> int:
        """Live calls at the peak, from the SBC's open media sockets."""
        return max(0, self.fds_peak - self.fds_before) // SOCKETS_PER_CALL

    @property
    def clean(self) -> bool:
        u, s = self.uac, self.uas
        return (
            u.returncode == 0
            and s.returncode == 0
            and u.successful == self.calls
            and s.successful == self.calls
            and u.failed == 0
            and s.failed == 0
            and u.retransmissions == 0
            and s.retransmissions == 0
        )

    @property
    def verdict(self) -> str:
        if not self.clean:
            return "FAIL"
        if self.send_cpu >= SATURATED_CPU:
            return "saturated"
        if self.send_rate < MIN_RATE_SHARE * self.rate:
            return "client-limited"
        return "ok"

    @property
    def cpu_ms_per_call(self) -> float:
        done = self.uac.successful or self.calls
        return 1000 * self.sbc_cpu / done

    def problems(self) -> str:
        u, s = self.uac, self.uas
        found = []
        if u.failed or u.successful != self.calls:
            found.append(f"PBX {u.successful}/{self.calls} ok, {u.failed} failed")
        if s.failed or s.successful != self.calls:
            found.append(f"ITSP {s.successful}/{self.calls} ok, {s.failed} failed")
        if u.retransmissions or s.retransmissions:
            found.append(
                f"retransmitted: {u.retransmissions} by the PBX, {s.retransmissions} by the ITSP"
            )
        if u.unexpected or s.unexpected:
            found.append(f"{u.unexpected + s.unexpected} messages for calls already over")
        for who, stats in (("PBX", u), ("ITSP", s)):
            if stats.returncode not in (0, 1):
                found.append(f"{who} SIPp exit {stats.returncode}")
        if self.log.errors or self.log.warnings:
            found.append(f"SBC logged {self.log.errors} errors, {self.log.warnings} warnings")
        return "; ".join(found) or "none"


def run_calls(
    sbc: BenchSbc,
    workdir: Path,
    name: str,
    calls: int,
    rate: float,
    hold_ms: int = HOLD_MS,
    on_sample: Callable[[], None] | None = None,
) -> Run:
    """Start the ITSP uas, wait until it listens, run the PBX uac to completion (sampling the
    SBC's RSS and descriptors), then give the uas a few seconds to finish; always reaps both."""
    timeout = calls / rate + hold_ms / 1000 + 25
    uas_cmd, uac_cmd = sipp_commands(sbc, name, calls, rate, hold_ms, timeout)
    pid = sbc.pid
    log_start = sbc.log_size()
    rss_before = rss_peak = rss_kib(pid)
    fds_before = fds_peak = open_fds(pid)
    cpu_children = children_cpu()
    processes: list[subprocess.Popen[bytes]] = []
    uac_code = uas_code = -9
    try:
        uas = _spawn(uas_cmd, workdir, f"{name}_uas")
        processes.append(uas)
        _wait_bound(ITSP_HOST, sbc.itsp_port, uas)
        cpu0 = cpu_seconds(pid)
        start = time.monotonic()
        uac = _spawn(uac_cmd, workdir, f"{name}_uac")
        processes.append(uac)
        deadline = start + timeout + 10
        sending = calls / rate
        send_cpu = float("nan")
        while uac.poll() is None and time.monotonic() < deadline:
            time.sleep(SAMPLE_INTERVAL)  # sampling /proc: there is nothing to wait on
            rss_peak = max(rss_peak, rss_kib(pid))
            fds_peak = max(fds_peak, open_fds(pid))
            elapsed = time.monotonic() - start
            if send_cpu != send_cpu and elapsed >= sending:
                send_cpu = (cpu_seconds(pid) - cpu0) / elapsed
            if on_sample is not None:
                on_sample()
        wall = time.monotonic() - start
        cpu = cpu_seconds(pid) - cpu0
        if send_cpu != send_cpu:
            send_cpu = cpu / wall
        uac_code = _reap(uac, 0)
        uas_code = _reap(uas, 5)
    finally:
        for process in processes:
            _reap(process, 0)
    return Run(
        name=name,
        rate=rate,
        calls=calls,
        uac=read_stats(workdir / f"{name}_uac.csv", uac_code),
        uas=read_stats(workdir / f"{name}_uas.csv", uas_code),
        wall=wall,
        sbc_cpu=cpu,
        send_cpu=send_cpu,
        sipp_cpu=children_cpu() - cpu_children,
        rss_before=rss_before,
        rss_peak=max(rss_peak, rss_kib(pid)),
        rss_after=rss_kib(pid),
        fds_before=fds_before,
        fds_peak=fds_peak,
        log=sbc.log_counts(log_start),
        commands=(uas_cmd, uac_cmd),
    )


def _spawn(command: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    with (workdir / f"{name}.out").open("wb") as out:
        return subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def _reap(process: subprocess.Popen[bytes], grace: float) -> int:
    """Wait up to `grace` seconds, then kill; the exit code (-9 when killed)."""
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        return -9


def _wait_bound(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until SIPp has bound its UDP port (it says nothing when it has)."""
    deadline = time.monotonic() + 5
    while not udp_bound(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"SIPp exited before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"SIPp did not bind {host}:{port} within 5 s")
        time.sleep(0.02)


# ---------------------------------------------------------------------------- phases


def rate_steps(sbc: BenchSbc, workdir: Path, deadline: float) -> list[Run]:
    steps: list[Run] = []
    for rate in RATES:
        calls = int(rate * STEP_SECONDS)
        if time.monotonic() + STEP_SECONDS + HOLD_MS / 1000 + 3 > deadline:
            print(f"  (stopping before {rate}/s: time budget)", flush=True)
            break
        step = run_calls(sbc, workdir, f"rate{rate}", calls, rate)
        steps.append(step)
        print(
            f"  {rate:>5}/s: {step.uac.successful}/{calls} calls ok, "
            f"{step.uac.failed} failed, {step.uac.retransmissions + step.uas.retransmissions} "
            f"retransmitted, setup {step.setup_ms:.0f} ms, "
            f"SBC CPU {100 * step.send_cpu:.0f}%: {step.verdict}",
            flush=True,
        )
        if step.verdict in ("FAIL", "client-limited") or not sbc.alive():
            break
    return steps


@dataclass(slots=True)
class Memory:
    run: Run
    baseline: int  # KiB, after the warm-up

    @property
    def per_call_kib(self) -> float:
        calls = self.run.peak_calls or self.run.calls
        return (self.run.rss_peak - self.baseline) / calls


def memory_phase(sbc: BenchSbc, workdir: Path, rate: float) -> Memory:
    baseline = rss_kib(sbc.pid)
    # Every call stays up until the last one is set up, and MEMORY_OVERLAP seconds more.
    hold_ms = int(1000 * (MEMORY_CALLS / rate + MEMORY_OVERLAP))
    run = run_calls(sbc, workdir, "memory", MEMORY_CALLS, rate, hold_ms)
    return Memory(run, baseline)


@dataclass(slots=True)
class Leak:
    first: Run
    second: Run
    settled_rss: int  # KiB, after the first run and SETTLE_SECONDS
    settled_fds: int
    base_fds: int  # before any call
    settled_live: str  # the SBC's sbc.stats after the settle: every count should be 0

    @property
    def growth_per_call(self) -> float:
        """KiB the second run added on top of the first one's peak, per call."""
        return (self.second.rss_peak - self.first.rss_peak) / self.second.calls


def leak_phase(sbc: BenchSbc, workdir: Path, rate: float, calls: int, base_fds: int) -> Leak:
    first = run_calls(sbc, workdir, "leak1", calls, rate)
    print(
        f"  run 1: {first.uac.successful}/{calls} calls ok at {rate:g}/s, RSS "
        f"{first.rss_before / 1024:.0f} -> {first.rss_after / 1024:.0f} MiB; "
        f"settling {SETTLE_SECONDS:g} s (64*T1 + 2)",
        flush=True,
    )
    time.sleep(SETTLE_SECONDS)  # the transactions' Timer L/M/J run out; nothing to wait on
    settled_rss, settled_fds = rss_kib(sbc.pid), open_fds(sbc.pid)
    settled_live = sbc.live_counts()
    second = run_calls(sbc, workdir, "leak2", calls, rate)
    print(
        f"  run 2: {second.uac.successful}/{calls} calls ok, RSS "
        f"{second.rss_before / 1024:.0f} -> {second.rss_after / 1024:.0f} MiB",
        flush=True,
    )
    return Leak(first, second, settled_rss, settled_fds, base_fds, settled_live)


# ---------------------------------------------------------------------------- report


def report_steps(steps: list[Run]) -> Run | None:
    print()
    print(
        "setup: INVITE -> 200 at the PBX, mean and worst one-second mean; retrans: SIP "
        "retransmissions by either SIPp (an answer slower than 500 ms), counted as failures; "
        "SBC CPU: while the calls were placed; saturated: no failure, but the SBC was busy "
        f"{100 * SATURATED_CPU:.0f}%+ of that time, so behind (setup times grow): not a rate "
        "it holds"
    )
    print(
        f"{'rate/s':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'retrans':>7} {'sent/s':>7} "
        f"{'setup ms':>8} {'worst s':>7} {'SBC CPU%':>8} {'ms CPU/call':>11} {'SIPp CPU%':>9} "
        f"{'RSS MiB':>7}  result"
    )
    for s in steps:
        print(
            f"{s.rate:>7g} {s.calls:>6} {s.uac.successful:>6} {s.uac.failed:>6} "
            f"{s.uac.retransmissions + s.uas.retransmissions:>7} {s.send_rate:>7.0f} "
            f"{s.setup_ms:>8.0f} {s.worst_setup_ms:>7.0f} {100 * s.send_cpu:>8.0f} "
            f"{s.cpu_ms_per_call:>11.2f} {100 * s.sipp_cpu / s.wall:>9.0f} "
            f"{s.rss_after / 1024:>7.0f}  {s.verdict}"
        )
    print()
    held = [s for s in steps if s.verdict == "ok"]
    best = max(held, key=lambda s: s.rate) if held else None
    if best is None:
        print("No rate was held without failures.")
    else:
        print(
            f"Calls per second held with zero failures: {best.rate:g} calls/s "
            f"({best.calls} calls of {HOLD_MS} ms, sent at {best.send_rate:.0f}/s, "
            f"mean setup {best.setup_ms:.0f} ms, worst second {best.worst_setup_ms:.0f} ms, "
            f"SBC at {100 * best.send_cpu:.0f}% of a core)"
        )
        print(
            f"SBC CPU per call (INVITE/180/200/ACK/BYE/200 on both legs + media session): "
            f"{best.cpu_ms_per_call:.2f} ms -> single-core ceiling ~"
            f"{1000 / best.cpu_ms_per_call:.0f} calls/s"
        )
    saturated = [s for s in steps if s.verdict == "saturated"]
    if saturated:
        print(
            "Zero failures but saturated at "
            + ", ".join(
                f"{s.rate:g}/s (setup {s.setup_ms:.0f} ms mean, {s.worst_setup_ms:.0f} ms worst "
                "second)"
                for s in saturated
            )
            + f": the {STEP_SECONDS:g} s step ended before the queue made SIPp retransmit"
        )
    stalls = [s for s in steps if s.verdict == "ok" and s.worst_setup_ms > 100]
    if stalls:
        print(
            "Stalls below saturation (a second with mean setup over 100 ms): "
            + ", ".join(f"{s.rate:g}/s {s.worst_setup_ms:.0f} ms" for s in stalls)
            + " (the SBC stalled, e.g. for a long garbage collection)"
        )
    last = steps[-1] if steps else None
    if last is not None and not last.clean:
        print(
            f"Fails at {last.rate:g}/s: {last.problems()}; mean setup {last.setup_ms:.0f} ms, "
            f"SBC at {100 * last.send_cpu:.0f}% of a core"
            + (" (CPU-bound)" if last.send_cpu >= SATURATED_CPU else "")
        )
        if last.log.first_problem:
            print(f"  first SBC warning: {last.log.first_problem}")
    elif last is not None and last.verdict == "client-limited":
        print("(SIPp, sharing the CPUs with the SBC, could not send faster)")
    return best


def report_log(sbc: BenchSbc, calls: int) -> None:
    counts = sbc.log_counts()
    if calls:
        print(
            f"SBC log at level {sbc.log_level} (to a file): {counts.lines / calls:.1f} lines, "
            f"{counts.size / calls:.0f} bytes per call ({counts.warnings} warnings, "
            f"{counts.errors} errors in all; BENCH_CALLS_LOG_LEVEL=warning runs without them)"
        )


def report_memory(memory: Memory) -> None:
    run = memory.run
    print(
        f"Memory: {run.peak_calls} calls up at once (SBC media sockets), RSS "
        f"{memory.baseline / 1024:.1f} -> {run.rss_peak / 1024:.1f} MiB: "
        f"{memory.per_call_kib:.1f} KiB per call"
    )
    print(
        "  (a call younger than 64*T1 = 32 s, so its INVITE transactions are still kept "
        "(RFC 6026 Timer L/M); "
        + ("all calls ok" if run.clean else f"problems: {run.problems()}")
        + ")"
    )


def report_leak(leak: Leak) -> None:
    first, second = leak.first, leak.second
    print(
        f"Leak check: run 1 of {first.calls} calls took RSS {first.rss_before / 1024:.0f} -> "
        f"{first.rss_peak / 1024:.0f} MiB (peak); {SETTLE_SECONDS:g} s later "
        f"{leak.settled_rss / 1024:.0f} MiB, {leak.settled_fds} open fds "
        f"({leak.base_fds} before any call)"
    )
    print(f"  live after the settle (SBC's own count, kill -USR1): {leak.settled_live}")
    print(
        f"  run 2 of {second.calls} calls: peak {second.rss_peak / 1024:.0f} MiB, i.e. "
        f"{(second.rss_peak - first.rss_peak) / 1024:+.1f} MiB over run 1's peak = "
        f"{1024 * leak.growth_per_call:+.0f} bytes per call"
    )
    print(
        "  (run 1's growth is what its live calls and transactions needed at the peak (each "
        "call's transactions are kept 32 s); a process rarely gives freed memory back to the "
        "OS, so only run 2 growing past run 1's peak points at a leak)"
    )
    for run in (first, second):
        if not run.clean:
            print(f"  {run.name}: {run.problems()}")


# ---------------------------------------------------------------------------- main


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that reap everything


def main() -> int:
    if SIPP is None:
        print("sipp is not installed (Debian package sip-tester): skipped")
        return 0
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _bench()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bench() -> int:
    started = time.monotonic()
    deadline = started + TOTAL_BUDGET
    log_level = os.environ.get("BENCH_CALLS_LOG_LEVEL", "info")
    profile = os.environ.get("BENCH_CALLS_PROFILE") or None
    raise_fd_limit()
    print(f"command: {sys.executable} -m bench.calls  (make bench runs it with the others)")
    with tempfile.TemporaryDirectory(prefix="sbc-bench-calls-") as tmp:
        workdir = Path(tmp)
        # ---- 1. call rate
        sbc = BenchSbc(workdir, "sbc-rate", log_level=log_level, profile=profile)
        try:
            sbc.start()
            print(
                f"SBC pid {sbc.pid} (log level {log_level}, to a file"
                f"{', under cProfile' if profile else ''}): PBX {PBX_HOST} -> "
                f"{SBC_INTERNAL}:{sbc.internal_port} | {SBC_EXTERNAL}:{sbc.external_port} -> "
                f"ITSP {ITSP_HOST}; calls of {HOLD_MS} ms, {STEP_SECONDS:g} s per rate step",
                flush=True,
            )
            warm = run_calls(sbc, workdir, "warmup", WARMUP_CALLS, 200)
            if not warm.clean:
                print(f"warm-up failed: {warm.problems()}\nSBC log:\n{sbc.log_tail()}")
                return 1
            steps = rate_steps(sbc, workdir, deadline - 100)
        finally:
            sbc.stop()
        if profile:
            print(f"(cProfile stats of the rate-step SBC written to {profile})")
        best = report_steps(steps)
        report_log(sbc, WARMUP_CALLS + sum(s.uac.successful for s in steps))
        shown = best or (steps[0] if steps else None)
        if shown is not None:
            uas, uac = shown.commands
            print(f"SIPp commands of the {shown.rate:g}/s step (run in a temporary directory):")
            print(f"  ITSP: {' '.join(uas)}")
            print(f"  PBX:  {' '.join(uac)}")
        print(flush=True)
        if best is None:
            return 0

        # ---- 2. memory per call and 3. leak check, on a fresh SBC
        # 80% of the held rate: 10,000 calls is a sustained run, longer than a rate step, and
        # the leak check is about what calls leave behind, not about overload (calls that a
        # saturated SIPp abandons stay up until the media timeout reaps them).
        leak_rate = max(100.0, (best.rate * 0.8) // 100 * 100)
        leak_calls = min(LEAK_CALLS, int(leak_rate * LEAK_MAX_SECONDS))
        sbc = BenchSbc(workdir, "sbc-memory", log_level=log_level, profile=None)
        try:
            sbc.start()
            base_fds = open_fds(sbc.pid)
            print(f"Fresh SBC pid {sbc.pid} for memory and leak check", flush=True)
            warm = run_calls(sbc, workdir, "warmup2", WARMUP_CALLS, 200)
            if not warm.clean:
                print(f"warm-up failed: {warm.problems()}")
            memory = memory_phase(sbc, workdir, min(leak_rate, 500))
            report_memory(memory)
            leak = leak_phase(sbc, workdir, leak_rate, leak_calls, base_fds)
            report_leak(leak)
        finally:
            code = sbc.stop()
        problems = sbc.log_counts()
        print(
            f"SBC exit code {code}; {problems.errors} errors, {problems.warnings} warnings "
            "logged" + (f"; first: {problems.first_problem}" if problems.first_problem else "")
        )
    print(
        f"(benchmark took {time.monotonic() - started:.0f} s; the SBC and both SIPp share "
        f"{os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
