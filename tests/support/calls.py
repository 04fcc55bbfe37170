"""End-to-end call tests: a `CallLab` runs the real SBC between a SIPp "PBX" (127.0.0.10, on the
SBC's internal side) and a SIPp "ITSP" (127.0.0.20, external side), and reads back every
SIP message each SIPp sent and received from its -trace_msg file.

`CallLab(tmp_path, direct=True)` runs the same scenario pairs without the SBC (the PBX talks to
the ITSP and back), which checks the scenarios themselves where the flow is end-to-end the same.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support.net import PortPicker, free_port
from tests.support.process import SbcProcess
from tests.support.sipp import SCENARIOS, SIPP, SippResult, _last_stats_row, _read

PBX_HOST = "127.0.0.10"
ITSP_HOST = "127.0.0.20"
SBC_INTERNAL = "127.0.0.1"
SBC_EXTERNAL = "127.0.0.2"
OUTBOUND_NUMBER = "15551234567"  # matches the outbound route '^\+?\d+$'
INBOUND_DID = "+15557654321"

# Distinctive strings the scenarios put in their messages (topology tests look for them).
PBX_USER_AGENT = "PBX-Internal-Secret/7.7"
PBX_X_HEADER = "pbx-secret-routing-data"
ITSP_SERVER = "ITSP-Carrier-Softswitch/9.9"
ITSP_USER_AGENT = "ITSP-Carrier-Dialer/9.9"

DEFAULT_TRUNK_CODECS = ("PCMU", "PCMA", "telephone-event")

_TRACE_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
# "UDP message received [727] bytes :" / "UDP message sent (619 bytes):"
_TRACE_HEAD = re.compile(r"^\w+ message (received|sent) [\[(]\d+\]? bytes\)? ?:\s*$")


# ---------------------------------------------------------------------------- SIP messages


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message from a SIPp -trace_msg file, as text with CRLF-free lines."""

    direction: str  # "received" or "sent"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request method, or for a response the method in its CSeq."""
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq.split() else ""

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        return int(self.first_line.split()[1])

    @property
    def head(self) -> str:
        return self.text.split("\n\n", 1)[0]

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1].strip() if len(parts) == 2 else ""

    def headers(self, name: str) -> list[str]:
        """Every value of header `name` (full name, case-insensitive), in order."""
        values = []
        for line in self.head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                values.append(value.strip())
        return values

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    def describe(self) -> str:
        return f"{self.direction}: {self.first_line}"


def parse_trace(text: str) -> list[TracedMessage]:
    """The messages of a SIPp -trace_msg file, in order."""
    messages = []
    for chunk in _TRACE_SEPARATOR.split(text.replace("\r\n", "\n")):
        lines = chunk.strip("\n").split("\n")
        match = _TRACE_HEAD.match(lines[0]) if lines else None
        if match is None:
            continue
        body = "\n".join(lines[1:]).strip("\n")
        if body:
            messages.append(TracedMessage(match.group(1), body + "\n"))
    return messages


@dataclass(frozen=True, slots=True)
class MediaAddress:
    """The connection address and port of one m= line of an SDP body."""

    kind: str
    host: str
    port: int
    formats: tuple[str, ...]
    attributes: tuple[str, ...]

    @property
    def direction(self) -> str:
        for value in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if value in self.attributes:
                return value
        return "sendrecv"  # RFC 4566 §6: the default


def sdp_media(body: str) -> list[MediaAddress]:
    """The m= sections of an SDP body with their effective c= address (media-level c= wins
    over the session-level one) and their a= lines."""
    session_host = ""
    sections: list[tuple[str, int, tuple[str, ...], list[str], list[str]]] = []
    for raw in body.split("\n"):
        line = raw.strip()
        kind, _, value = line.partition("=")
        if kind == "m":
            fields = value.split()
            sections.append((fields[0], int(fields[1]), tuple(fields[3:]), [], []))
        elif kind == "c":
            host = value.split()[-1].split("/")[0]
            if sections:
                sections[-1][3].append(host)
            else:
                session_host = host
        elif kind == "a" and sections:
            sections[-1][4].append(value)
    return [
        MediaAddress(kind, hosts[-1] if hosts else session_host, port, formats, tuple(attrs))
        for kind, port, formats, hosts, attrs in sections
    ]


# ---------------------------------------------------------------------------- SIPp processes


@dataclass(slots=True)
class SippSide:
    """One SIPp process of a pair: its scenario, address and extra arguments."""

    role: str  # "pbx" or "itsp": names the trace files
    scenario: str
    host: str
    port: int
    media_port: int  # SIPp's own RTP echo socket (-mp); never the ports in the SDP
    keys: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    transport: str = "u1"  # SIPp -t: u1 (one UDP socket) or t1 (one TCP connection)

    @property
    def kind(self) -> socket.SocketKind:
        return socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM

    def trace_path(self, workdir: Path) -> Path:
        return workdir / f"{self.role}_messages.log"


@dataclass(slots=True)
class SippRun:
    """A finished SIPp run: its statistics and every message it sent and received."""

    role: str
    result: SippResult
    messages: list[TracedMessage]
    trace_path: Path

    @property
    def received(self) -> list[TracedMessage]:
        return [m for m in self.messages if m.direction == "received"]

    @property
    def sent(self) -> list[TracedMessage]:
        return [m for m in self.messages if m.direction == "sent"]

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0 and self.result.successful >= 1

    def received_requests(self, method: str) -> list[TracedMessage]:
        return [m for m in self.received if m.is_request and m.method == method]

    def received_responses(self, method: str, status: int | None = None) -> list[TracedMessage]:
        return [
            m
            for m in self.received
            if not m.is_request and m.method == method and (status is None or m.status == status)
        ]

    def sent_responses(self, method: str, status: int | None = None) -> list[TracedMessage]:
        return [
            m
            for m in self.sent
            if not m.is_request and m.method == method and (status is None or m.status == status)
        ]

    def flow(self) -> str:
        return "\n".join(f"  {m.describe()}" for m in self.messages)

    def describe(self) -> str:
        return f"[{self.role}] {self.result.describe()}\nflow:\n{self.flow()}"


@dataclass(slots=True)
class CallOutcome:
    """Both SIPp runs of one call and the SBC log (empty in direct mode)."""

    pbx: SippRun
    itsp: SippRun
    sbc_log: str = ""

    @property
    def ok(self) -> bool:
        return self.pbx.ok and self.itsp.ok

    def describe(self) -> str:
        log = "\n".join(self.sbc_log.splitlines()[-60:])
        return f"{self.pbx.describe()}\n{self.itsp.describe()}\nsbc log (tail):\n{log}"


class RunningPair:
    """Two SIPp processes running: the caller was started after the callee was listening.
    `wait_for_message` lets a test act mid-call (e.g. send RTP once the 200 OK arrived)."""

    def __init__(
        self, lab: CallLab, workdir: Path, caller: SippSide, callee: SippSide, timeout: float
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.caller = caller.role
        self.callee = callee.role
        self.sides = {caller.role: caller, callee.role: callee}
        self.timeout = timeout
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def wait_for_message(
        self,
        role: str,
        predicate: Callable[[TracedMessage], bool],
        timeout: float = 10.0,
    ) -> TracedMessage:
        """The first message in `role`'s trace satisfying `predicate`; polls the trace file
        (SIPp flushes it per message) until it appears or `timeout` passes."""
        path = self.sides[role].trace_path(self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            for message in parse_trace(_read(path)):
                if predicate(message):
                    return message
            process = self.processes.get(role)
            finished = process is not None and process.poll() is not None
            if finished or time.monotonic() > deadline:
                what = "exited" if finished else f"saw no such message within {timeout:g} s"
                raise AssertionError(
                    f"{role} SIPp {what}; messages so far:\n"
                    + "\n".join(m.describe() for m in parse_trace(_read(path)))
                    + f"\nsbc log (tail):\n{self.lab.log_tail()}"
                )
            time.sleep(0.02)  # polling a file: there is no event to wait on

    def wait(self, callee_grace: float = 5.0) -> CallOutcome:
        """Wait for the caller (bounded by its -timeout), then give the callee `callee_grace`
        seconds to finish: a callee still waiting then (e.g. for a call that never came) is
        killed and counts as failed."""
        runs = {self.caller: self._finish(self.caller, self.timeout + 10)}
        runs[self.callee] = self._finish(self.callee, callee_grace)
        return CallOutcome(runs["pbx"], runs["itsp"], self.lab.log_text())

    def finish(self, role: str, timeout: float = 10.0) -> SippRun:
        """Wait for one SIPp of the pair to end and read its run."""
        return self._finish(role, timeout)

    def _finish(self, role: str, timeout: float) -> SippRun:
        side = self.sides[role]
        process = self.processes[role]
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            code = -9
            stderr += f"\nsipp killed: still running {timeout:g} s after the wait began"
        result = SippResult(
            returncode=code,
            stats=_last_stats_row(self.workdir / f"{role}_stats.csv"),
            stdout=stdout,
            stderr=stderr,
            errors=_read(self.workdir / f"{role}_errors.log"),
        )
        trace = side.trace_path(self.workdir)
        return SippRun(role, result, parse_trace(_read(trace)), trace)

    def kill(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)


# ---------------------------------------------------------------------------- the lab


class CallLab:
    """The SBC between a SIPp PBX and a SIPp ITSP, with its config written from free ports.

    Overrides: `sip` (e.g. {"t1": 0.05}), `calls` (e.g. {"no_answer_timeout": 2}), `media`
    (merged into {port_range, timeout}), `trunk_codecs`. With `direct=True` no SBC runs and
    each SIPp targets the other one (scenario self-checks).
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        sip: dict[str, object] | None = None,
        calls: dict[str, object] | None = None,
        media: dict[str, object] | None = None,
        trunk_codecs: Sequence[str] = DEFAULT_TRUNK_CODECS,
        direct: bool = False,
        recv_timeout: float = 5.0,
        itsp_trunk: str = "",
        trunks_before: Sequence[str] = (),
        pbx_extra: str = "",
        pbx_trusted: str = f"{PBX_HOST}/32",
        extra_yaml: str = "",
    ) -> None:
        """`itsp_trunk`: extra YAML keys for the ITSP's trunk (e.g. credentials);
        `trunks_before`: trunk entries (YAML flow mappings) routed to before it, in order."""
        if SIPP is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        self.tmp_path = tmp_path
        self.direct = direct
        self.sip = dict(sip or {})
        self.calls = dict(calls or {})
        self.itsp_trunk = itsp_trunk
        self.pbx_extra = pbx_extra  # extra YAML keys of the PBX entry (e.g. auth users)
        self.pbx_trusted = pbx_trusted
        self.extra_yaml = extra_yaml  # more top-level config, e.g. dns
        self.trunks_before = tuple(trunks_before)
        self.trunk_codecs = tuple(trunk_codecs)
        self.recv_timeout = recv_timeout  # SIPp -recv_timeout: how long any <recv> may wait
        self._runs = 0
        picker = PortPicker()
        used = picker.used
        self.internal_port = picker.port(SBC_INTERNAL)
        self.external_port = picker.port(SBC_EXTERNAL)
        self.pbx_port = picker.port(PBX_HOST)
        self.itsp_port = picker.port(ITSP_HOST)
        # SDP ports (bound by the Python RTP helper, even numbers so RTCP is +1) and SIPp's
        # own media sockets (-mp binds it and +2) kept apart from them.
        self.pbx_rtp = _even_port(PBX_HOST, used)
        self.pbx_video = _even_port(PBX_HOST, used)
        self.itsp_rtp = _even_port(ITSP_HOST, used)
        self.itsp_video = _even_port(ITSP_HOST, used)
        self.pbx_sipp_media = _even_port(PBX_HOST, used, span=4)
        self.itsp_sipp_media = _even_port(ITSP_HOST, used, span=4)
        # Relay ports live on the SBC's own addresses; spread the range by the SIP port so
        # labs started one after another rarely reuse ports still in TIME_WAIT-like use.
        low = 30000 + (self.internal_port % 100) * 200
        self.media = {"port_range": f"[{low}, {low + 199}]", "timeout": 60, **(media or {})}
        self.sbc: SbcProcess | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def internal_addr(self) -> tuple[str, int]:
        return (SBC_INTERNAL, self.internal_port)

    @property
    def external_addr(self) -> tuple[str, int]:
        return (SBC_EXTERNAL, self.external_port)

    def config_text(self) -> str:
        sip = ""
        if self.sip:
            sip = "sip: {" + ", ".join(f"{k}: {v}" for k, v in self.sip.items()) + "}\n"
        calls = ""
        if self.calls:
            calls = "calls: {" + ", ".join(f"{k}: {v}" for k, v in self.calls.items()) + "}\n"
        media = ", ".join(f"{k}: {v}" for k, v in self.media.items())
        return (
            "node: test-sbc\n"
            "log: {level: debug, format: kv}\n"
            f"{sip}"
            "interfaces:\n"
            f'  internal: {{listen: ["udp:{SBC_INTERNAL}:{self.internal_port}"], '
            f"media_address: {SBC_INTERNAL}}}\n"
            f'  external: {{listen: ["udp:{SBC_EXTERNAL}:{self.external_port}"], '
            f"advertise: {SBC_EXTERNAL}, media_address: {SBC_EXTERNAL}}}\n"
            f'pbxs: [{{name: pbx, interface: internal, address: "{PBX_HOST}:{self.pbx_port}", '
            f"trusted_sources: [{self.pbx_trusted}]"
            f"{', ' + self.pbx_extra if self.pbx_extra else ''}}}]\n"
            f"trunks: [{''.join(t + ', ' for t in self.trunks_before)}"
            f"{{name: itsp, interface: external, "
            f'proxy: "sip:{ITSP_HOST}:{self.itsp_port}", '
            f"codecs: [{', '.join(self.trunk_codecs)}]"
            f"{', ' + self.itsp_trunk if self.itsp_trunk else ''}}}]\n"
            "routes:\n"
            f"  outbound: [{{match: '^\\+?\\d+$', trunks: [{self._outbound_trunks()}]}}]\n"
            "  inbound: [{match: '.*', pbx: pbx}]\n"
            f"media: {{{media}}}\n"
            f"{calls}"
            f"{self.extra_yaml}"
        )

    def _outbound_trunks(self) -> str:
        names = [re.search(r"name:\s*([\w-]+)", t) for t in self.trunks_before]
        return ", ".join([*(m.group(1) for m in names if m), "itsp"])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> CallLab:
        if not self.direct:
            self.sbc = SbcProcess(
                self.tmp_path, log_level="debug", config_text=self.config_text()
            ).start()
        return self

    def stop(self, *, check: bool = True) -> None:
        if self.sbc is not None:
            self.sbc.stop(check=check)

    def __enter__(self) -> CallLab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(check=exc_type is None)

    def log_text(self) -> str:
        return self.sbc.log_text() if self.sbc is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def reload(self, text: str, expect: str) -> str:
        """Write `text` as the SBC's config file, send SIGHUP (as `systemctl reload` does)
        and return the first log line after it matching `expect`."""
        assert self.sbc is not None, "the lab was not started"
        start = len(self.sbc.log_lines())
        self.sbc.config_path.write_text(text)
        os.kill(self.sbc.pid, signal.SIGHUP)
        return self.sbc.wait_for_log(expect, start=start)

    # ------------------------------------------------------------------ calls

    def pbx_side(self, scenario: str, **keys: str) -> SippSide:
        return SippSide(
            "pbx",
            scenario,
            PBX_HOST,
            self.pbx_port,
            self.pbx_sipp_media,
            {"rtp_port": str(self.pbx_rtp), "video_port": str(self.pbx_video), **keys},
        )

    def itsp_side(self, scenario: str, **keys: str) -> SippSide:
        return SippSide(
            "itsp",
            scenario,
            ITSP_HOST,
            self.itsp_port,
            self.itsp_sipp_media,
            {"rtp_port": str(self.itsp_rtp), "video_port": str(self.itsp_video), **keys},
        )

    def start_outbound(
        self,
        pbx_scenario: str,
        itsp_scenario: str,
        *,
        number: str = OUTBOUND_NUMBER,
        pbx_args: tuple[str, ...] = (),
        itsp_args: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> RunningPair:
        """Start the ITSP (uas), then the PBX calling `number` through the SBC."""
        pbx = self.pbx_side(pbx_scenario)
        pbx.extra = ("-s", number, "-cid_str", "pbxcall-%u-%p@%s", *pbx_args)
        itsp = self.itsp_side(itsp_scenario)
        itsp.extra = itsp_args
        target = (ITSP_HOST, self.itsp_port) if self.direct else self.internal_addr
        return self._start_pair(caller=pbx, callee=itsp, target=target, timeout=timeout)

    def start_inbound(
        self,
        itsp_scenario: str,
        pbx_scenario: str,
        *,
        number: str = INBOUND_DID,
        pbx_args: tuple[str, ...] = (),
        itsp_args: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> RunningPair:
        """Start the PBX (uas), then the ITSP calling the DID `number` through the SBC."""
        itsp = self.itsp_side(itsp_scenario)
        itsp.extra = ("-s", number, "-cid_str", "itspcall-%u-%p@%s", *itsp_args)
        pbx = self.pbx_side(pbx_scenario)
        pbx.extra = pbx_args
        target = (PBX_HOST, self.pbx_port) if self.direct else self.external_addr
        return self._start_pair(caller=itsp, callee=pbx, target=target, timeout=timeout)

    def run_outbound(
        self,
        pbx_scenario: str,
        itsp_scenario: str,
        *,
        number: str = OUTBOUND_NUMBER,
        pbx_args: tuple[str, ...] = (),
        itsp_args: tuple[str, ...] = (),
        timeout: float = 10.0,
        callee_grace: float = 5.0,
    ) -> CallOutcome:
        """One outbound call from start to end (see start_outbound and RunningPair.wait)."""
        pair = self.start_outbound(
            pbx_scenario,
            itsp_scenario,
            number=number,
            pbx_args=pbx_args,
            itsp_args=itsp_args,
            timeout=timeout,
        )
        return pair.wait(callee_grace)

    def run_inbound(
        self,
        itsp_scenario: str,
        pbx_scenario: str,
        *,
        number: str = INBOUND_DID,
        pbx_args: tuple[str, ...] = (),
        itsp_args: tuple[str, ...] = (),
        timeout: float = 10.0,
        callee_grace: float = 5.0,
    ) -> CallOutcome:
        """One inbound call from start to end (see start_inbound and RunningPair.wait)."""
        pair = self.start_inbound(
            itsp_scenario,
            pbx_scenario,
            number=number,
            pbx_args=pbx_args,
            itsp_args=itsp_args,
            timeout=timeout,
        )
        return pair.wait(callee_grace)

    @contextlib.contextmanager
    def outbound(
        self,
        pbx_scenario: str,
        itsp_scenario: str,
        *,
        pbx_args: tuple[str, ...] = (),
        itsp_args: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> Iterator[RunningPair]:
        """A running outbound pair for acting mid-call (e.g. RTP once answered); call
        `wait()` inside the block. The processes are killed when the block raises."""
        pair = self.start_outbound(
            pbx_scenario, itsp_scenario, pbx_args=pbx_args, itsp_args=itsp_args, timeout=timeout
        )
        try:
            yield pair
        except BaseException:
            pair.kill()
            raise

    def serve_itsp(self, scenario: str, timeout: float = 10.0) -> RunningPair:
        """Start only the ITSP SIPp (a registrar, say) and wait until it listens; read its run
        with `finish("itsp")`. Start it before the SBC when the SBC talks first."""
        self._runs += 1
        workdir = self.tmp_path / f"call{self._runs}"
        workdir.mkdir()
        itsp = self.itsp_side(scenario)
        pair = RunningPair(self, workdir, itsp, itsp, timeout)
        pair.processes["itsp"] = self._spawn(itsp, self.external_addr, workdir, timeout)
        try:
            _wait_bound(itsp.host, itsp.port, pair.processes["itsp"], kind=itsp.kind)
        except BaseException:
            pair.kill()
            raise
        return pair

    def _start_pair(
        self, *, caller: SippSide, callee: SippSide, target: tuple[str, int], timeout: float
    ) -> RunningPair:
        self._runs += 1
        workdir = self.tmp_path / f"call{self._runs}"
        workdir.mkdir()
        pair = RunningPair(self, workdir, caller, callee, timeout)
        # The callee's remote address only matters for requests it starts on its own; it
        # answers to the Via/source of what it received.
        callee_remote = self.external_addr if callee.role == "itsp" else self.internal_addr
        if self.direct:
            callee_remote = (caller.host, caller.port)
        pair.processes[callee.role] = self._spawn(callee, callee_remote, workdir, timeout)
        try:
            _wait_bound(callee.host, callee.port, pair.processes[callee.role], kind=callee.kind)
            pair.processes[caller.role] = self._spawn(caller, target, workdir, timeout)
        except BaseException:
            pair.kill()
            raise
        return pair

    def _spawn(
        self, side: SippSide, remote: tuple[str, int], workdir: Path, timeout: float
    ) -> subprocess.Popen[str]:
        assert SIPP is not None
        path = Path(side.scenario)
        if not path.is_absolute():
            path = SCENARIOS / path
        command = [
            SIPP,
            f"{remote[0]}:{remote[1]}",
            "-sf", str(path),
            "-t", side.transport,
            "-i", side.host,
            "-p", str(side.port),
            "-mp", str(side.media_port),
            "-m", "1",
            "-timeout", f"{timeout:g}s",
            "-recv_timeout", str(int(min(timeout, self.recv_timeout) * 1000)),
            "-nostdin",
            "-trace_msg", "-message_file", str(side.trace_path(workdir)),
            "-trace_err", "-error_file", str(workdir / f"{side.role}_errors.log"),
            "-trace_stat", "-stf", str(workdir / f"{side.role}_stats.csv"), "-fd", "1",
        ]  # fmt: skip
        for key, value in side.keys.items():
            command += ["-key", key, value]
        command += list(side.extra)
        (workdir / f"{side.role}_command.txt").write_text(" ".join(command) + "\n")
        return subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )


def _even_port(host: str, used: set[int], span: int = 2) -> int:
    """A free even port on `host` whose next `span - 1` ports are free too (RTP + RTCP)."""
    for _ in range(200):
        base = free_port(host, avoid=used)
        if base % 2:
            base += 1
        candidates = range(base, base + span)
        if any(p in used or p > 65535 for p in candidates):
            continue
        if all(_udp_free(host, p) for p in candidates):
            used.update(candidates)
            return base
    raise RuntimeError(f"no run of {span} free UDP ports on {host}")


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_bound(
    host: str,
    port: int,
    process: subprocess.Popen[str],
    timeout: float = 5.0,
    kind: socket.SocketKind = socket.SOCK_DGRAM,
) -> None:
    """Wait until `process` (SIPp) has bound its port (UDP, or TCP with SOCK_STREAM), i.e. it
    is ready for calls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise RuntimeError(f"SIPp exited before listening on {host}:{port}:\n{stderr}")
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return
                raise
        time.sleep(0.02)  # no event to await: SIPp says nothing when it has bound
    raise RuntimeError(f"SIPp did not bind {host}:{port} within {timeout:g} s")
