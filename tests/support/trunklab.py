"""Trunk-selection tests with real SIPp peers: a `TrunkLab` runs the real SBC with one
outbound route over N trunks, each trunk a SIPp ITSP (uas) on its own loopback address, and
places calls from one SIPp PBX (uac) through it.

Built for many short calls: no -trace_msg (a file write per message is slow at 100 calls/s),
the SBC at log level info; what each SIPp did is read from its final -trace_stat row (calls
answered, failed) and its -trace_counts file (messages per scenario step, retransmissions).
Trunk SIPps run until `finish_trunks()` asks them to end (SIGUSR1: SIPp finishes its calls
and exits), since how many calls each one gets is what the tests measure.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support.calls import _even_port, _wait_bound
from tests.support.net import PortPicker
from tests.support.process import SbcProcess
from tests.support.sipp import SCENARIOS, SIPP, _last_stats_row, _read

PBX_HOST = "127.0.0.10"
SBC_INTERNAL = "127.0.0.1"
SBC_EXTERNAL = "127.0.0.2"
NUMBER = "15551234567"  # matches the outbound route '^\+?\d+$'
TRUNK_CODECS = ("PCMU", "PCMA", "telephone-event")
UAC_SCENARIO = "weighted_uac.xml"
UAS_SCENARIO = "weighted_uas.xml"  # answers every call
REJECT_SCENARIO = "weighted_503_uas.xml"  # answers every INVITE 503
# SIPp handles more messages per loop than its defaults allow (as bench/calls.py does).
SIPP_LOOPS = ("-max_recv_loops", "10000", "-max_sched_loops", "10000")
MEDIA_BLOCK = 1000  # media ports per lab: 500 RTP/RTCP pairs, reused oldest-freed first


@dataclass(frozen=True, slots=True)
class TrunkSpec:
    """One trunk of the route: its name, the loopback address its SIPp listens on, the uas
    scenario it plays, and extra YAML keys of its config entry (e.g. "weight: 3")."""

    name: str
    host: str
    scenario: str = UAS_SCENARIO
    options: str = ""


@dataclass(slots=True)
class SippTally:
    """What one SIPp run counted: its exit code, its final -trace_stat row and its final
    -trace_counts row (columns like '0_INVITE_Recv', '1_503_Sent', '0_INVITE_Retrans')."""

    role: str
    returncode: int
    stats: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    stderr: str = ""
    errors: str = ""

    def stat(self, column: str) -> int:
        """A cumulative statistic, e.g. stat('SuccessfulCall') reads 'SuccessfulCall(C)'."""
        value = self.stats.get(f"{column}(C)", self.stats.get(column, "0"))
        return int(value or 0)

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.stat("Retransmissions")

    def count(self, suffix: str) -> int:
        """The sum of the -trace_counts columns ending in `suffix`, e.g. 'INVITE_Recv' (the
        step number prefix is left out: a scenario may have that message more than once)."""
        return sum(int(v or 0) for k, v in self.counts.items() if k.endswith(suffix))

    def describe(self) -> str:
        return (
            f"[{self.role}] sipp exit {self.returncode}, successful={self.successful} "
            f"failed={self.failed} retransmissions={self.retransmissions}\n"
            f"counts: {self.counts}\nstderr:\n{self.stderr[-1500:]}\n"
            f"errors:\n{self.errors[-1500:]}"
        )


@dataclass(slots=True)
class _Trunk:
    spec: TrunkSpec
    port: int
    media_port: int
    workdir: Path
    process: subprocess.Popen[str] | None = None
    tally: SippTally | None = None


class TrunkLab:
    """The SBC with one outbound route (`strategy`) over `trunks`, each a SIPp uas.

    Use as a context manager: the trunk SIPps start (and bind) before the SBC; `place_calls`
    runs the PBX SIPp to completion; `finish_trunks` ends the trunk SIPps and reads their
    tallies. Every process still running is killed on exit, and the SBC is stopped (checked
    for a clean exit with no error lines unless the block raised).
    """

    def __init__(
        self,
        tmp_path: Path,
        trunks: Sequence[TrunkSpec],
        *,
        strategy: str = "priority",
        sip: dict[str, object] | None = None,
        trunk_timeout: float = 60.0,
        extra_yaml: str = "",
    ) -> None:
        """`extra_yaml`: more top-level config appended as is (e.g. admission, fraud)."""
        if SIPP is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        self.tmp_path = tmp_path
        self.strategy = strategy
        self.sip = dict(sip or {})
        self.trunk_timeout = trunk_timeout  # SIPp -timeout of the trunks: a safety net only
        self.extra_yaml = extra_yaml
        picker = PortPicker()
        used = picker.used
        self.internal_port = picker.port(SBC_INTERNAL)
        self.external_port = picker.port(SBC_EXTERNAL)
        self.pbx_port = picker.port(PBX_HOST)
        self.pbx_media = _even_port(PBX_HOST, used, span=4)  # SIPp -mp binds it and +2
        self.trunks: list[_Trunk] = []
        for spec in trunks:
            workdir = tmp_path / f"trunk_{spec.name}"
            workdir.mkdir()
            port = picker.port(spec.host)
            self.trunks.append(_Trunk(spec, port, _even_port(spec.host, used, span=4), workdir))
        # Relay ports on the SBC's own addresses, below Linux's ephemeral range and apart
        # from CallLab's (30000 up); spread by the SIP port so labs seldom share a block.
        low = 10000 + (self.internal_port % 20) * MEDIA_BLOCK
        self.media_range = (low, low + MEDIA_BLOCK - 1)
        self.sbc: SbcProcess | None = None
        self._pbx_runs = 0

    # ------------------------------------------------------------------ configuration

    def config_text(self) -> str:
        sip = ""
        if self.sip:
            sip = "sip: {" + ", ".join(f"{k}: {v}" for k, v in self.sip.items()) + "}\n"
        entries = []
        for trunk in self.trunks:
            spec = trunk.spec
            extra = f", {spec.options}" if spec.options else ""
            entries.append(
                f'  - {{name: {spec.name}, interface: external, proxy: "sip:{spec.host}:'
                f'{trunk.port}", codecs: [{", ".join(TRUNK_CODECS)}]{extra}}}\n'
            )
        names = ", ".join(t.spec.name for t in self.trunks)
        low, high = self.media_range
        return (
            "node: trunk-lab\n"
            "log: {level: info, format: kv}\n"
            f"{sip}"
            "interfaces:\n"
            f'  internal: {{listen: ["udp:{SBC_INTERNAL}:{self.internal_port}"], '
            f"media_address: {SBC_INTERNAL}}}\n"
            f'  external: {{listen: ["udp:{SBC_EXTERNAL}:{self.external_port}"], '
            f"advertise: {SBC_EXTERNAL}, media_address: {SBC_EXTERNAL}}}\n"
            f'pbxs: [{{name: pbx, interface: internal, address: "{PBX_HOST}:{self.pbx_port}", '
            f"trusted_sources: [{PBX_HOST}/32]}}]\n"
            "trunks:\n"
            f"{''.join(entries)}"
            "routes:\n"
            f"  outbound: [{{match: '^\\+?\\d+$', trunks: [{names}], "
            f"strategy: {self.strategy}}}]\n"
            "  inbound: [{match: '.*', pbx: pbx}]\n"
            f"media: {{port_range: [{low}, {high}], timeout: 60}}\n"
            f"{self.extra_yaml}"
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> TrunkLab:
        try:
            for trunk in self.trunks:
                trunk.process = self._spawn_trunk(trunk)
                _wait_bound(trunk.spec.host, trunk.port, trunk.process)
            self.sbc = SbcProcess(
                self.tmp_path, log_level="info", config_text=self.config_text()
            ).start()
        except BaseException:
            self.kill_trunks()
            raise
        return self

    def stop(self, *, check: bool = True) -> None:
        try:
            self.kill_trunks()
        finally:
            if self.sbc is not None:
                self.sbc.stop(check=check)

    def __enter__(self) -> TrunkLab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(check=exc_type is None)  # do not hide a failure behind the stop check

    def log_text(self) -> str:
        return self.sbc.log_text() if self.sbc is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ SIPp

    def place_calls(
        self, calls: int, *, rate: float = 100.0, hold_ms: int = 100, timeout: float = 30.0
    ) -> SippTally:
        """Run the PBX SIPp until it has placed `calls` calls at `rate` calls/s, each held
        `hold_ms` before its BYE; bounded by SIPp's -timeout (and a kill a bit later)."""
        self._pbx_runs += 1
        workdir = self.tmp_path / f"pbx{self._pbx_runs}"
        workdir.mkdir()
        return self.run_pbx(
            workdir, UAC_SCENARIO, NUMBER, calls, rate=rate, hold_ms=hold_ms, timeout=timeout
        )

    def run_pbx(
        self,
        workdir: Path,
        scenario: str,
        number: str,
        calls: int,
        *,
        rate: float = 100.0,
        hold_ms: int = 100,
        timeout: float = 30.0,
        extra: Sequence[str] = (),
    ) -> SippTally:
        """The PBX SIPp running `scenario` (tests/scenarios) in `workdir` toward `number`;
        `extra`: more SIPp options (e.g. -l, message tracing)."""
        assert SIPP is not None
        command = [
            SIPP,
            f"{SBC_INTERNAL}:{self.internal_port}",
            "-sf", str(SCENARIOS / scenario),
            "-t", "u1",
            "-i", PBX_HOST,
            "-p", str(self.pbx_port),
            "-mp", str(self.pbx_media),
            "-s", number,
            "-m", str(calls),
            "-r", f"{rate:g}",
            "-d", str(hold_ms),
            "-timeout", f"{timeout:g}s",
            "-recv_timeout", "5000",
            "-nostdin",
            *extra,
            *SIPP_LOOPS,
            *self._trace_args(workdir, "pbx"),
        ]  # fmt: skip
        (workdir / "pbx_command.txt").write_text(" ".join(command) + "\n")
        try:
            completed = subprocess.run(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout + 10,
            )
        except subprocess.TimeoutExpired as exc:
            return self._tally("pbx", workdir, -9, f"sipp killed after {timeout + 10:g} s: {exc}")
        return self._tally("pbx", workdir, completed.returncode, completed.stderr)

    def finish_trunks(self, timeout: float = 10.0) -> dict[str, SippTally]:
        """End every trunk SIPp (SIGUSR1: it finishes the calls it has, then exits) and read
        what each counted, by trunk name."""
        for trunk in self.trunks:
            if trunk.process is not None and trunk.process.poll() is None:
                trunk.process.send_signal(signal.SIGUSR1)
        tallies = {}
        for trunk in self.trunks:
            process = trunk.process
            assert process is not None, "the lab was not started"
            try:
                code = process.wait(timeout)
                note = ""
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                code = -9
                note = f"\nsipp killed: still running {timeout:g} s after SIGUSR1"
            stderr = _read(trunk.workdir / "stderr.txt") + note
            trunk.tally = self._tally(trunk.spec.name, trunk.workdir, code, stderr)
            tallies[trunk.spec.name] = trunk.tally
        return tallies

    def kill_trunks(self) -> None:
        for trunk in self.trunks:
            process = trunk.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)

    def _spawn_trunk(self, trunk: _Trunk) -> subprocess.Popen[str]:
        assert SIPP is not None
        command = [
            SIPP,
            f"{SBC_EXTERNAL}:{self.external_port}",
            "-sf", str(SCENARIOS / trunk.spec.scenario),
            "-t", "u1",
            "-i", trunk.spec.host,
            "-p", str(trunk.port),
            "-mp", str(trunk.media_port),
            "-timeout", f"{self.trunk_timeout:g}s",
            "-recv_timeout", "5000",  # a call stuck waiting ends; SIGUSR1 then ends SIPp
            "-nostdin",
            *SIPP_LOOPS,
            *self._trace_args(trunk.workdir, trunk.spec.name),
        ]  # fmt: skip
        (trunk.workdir / "command.txt").write_text(" ".join(command) + "\n")
        # stderr to a file: a pipe nobody reads until the end could fill up and stall SIPp.
        with (trunk.workdir / "stderr.txt").open("w") as stderr:
            return subprocess.Popen(
                command,
                cwd=trunk.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )

    @staticmethod
    def _trace_args(workdir: Path, role: str) -> list[str]:
        # -trace_counts has no file option: it writes SCENARIO_PID_counts.csv into the cwd,
        # which is this SIPp's own workdir.
        return [
            "-trace_stat", "-stf", str(workdir / f"{role}_stats.csv"), "-fd", "1",
            "-trace_counts",
            "-trace_err", "-error_file", str(workdir / f"{role}_errors.log"),
        ]  # fmt: skip

    @staticmethod
    def _tally(role: str, workdir: Path, code: int, stderr: str) -> SippTally:
        counts_files = sorted(workdir.glob("*_counts.csv"))
        return SippTally(
            role,
            code,
            stats=_last_stats_row(workdir / f"{role}_stats.csv"),
            counts=_last_stats_row(counts_files[-1]) if counts_files else {},
            stderr=stderr,
            errors=_read(workdir / f"{role}_errors.log"),
        )
