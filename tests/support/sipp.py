"""Run SIPp scenarios (tests/scenarios/*.xml) against the SBC, always bounded in time, and
read back its exit code and final statistics."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SIPP = shutil.which("sipp")

# sipp -t values per transport: one socket for all calls.
_SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1", "tls": "l1"}


@dataclass(slots=True)
class SippResult:
    """What one SIPp run produced. `stats` is the last row of its -trace_stat CSV (cumulative
    columns end in '(C)'); `errors` the unexpected-message log."""

    returncode: int
    stats: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    errors: str = ""

    def count(self, column: str) -> int:
        """A cumulative counter, e.g. count('SuccessfulCall') reads 'SuccessfulCall(C)'."""
        value = self.stats.get(f"{column}(C)", self.stats.get(column, "0"))
        return int(value or 0)

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    def describe(self) -> str:
        return (
            f"sipp exit {self.returncode}, successful={self.successful} failed={self.failed}\n"
            f"stderr:\n{self.stderr[-2000:]}\nerrors:\n{self.errors[-2000:]}"
        )


def run_sipp(
    scenario: str | Path,
    target: tuple[str, int],
    workdir: Path,
    *,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10.0,
    limit: int | None = None,
    local_ip: str | None = None,
    local_port: int | None = None,
    timeout: float = 30.0,
    recv_timeout_ms: int | None = 5000,
    extra: tuple[str, ...] = (),
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    name: str = "sipp",
) -> SippResult:
    """Run `scenario` (a path, or a file name in tests/scenarios) against `target` until
    `calls` calls have completed, at `rate` calls/s.

    SIPp's global -timeout stops it after `timeout` seconds (the subprocess is killed a few
    seconds later if it still runs); -recv_timeout fails a call that waits too long for a
    message. Statistics go to WORKDIR/NAME_stats.csv, unexpected messages to
    WORKDIR/NAME_errors.log.
    """
    if SIPP is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester)")
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / path
    host, port = target
    remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    stats_file = workdir / f"{name}_stats.csv"
    errors_file = workdir / f"{name}_errors.log"
    local = local_ip or ("::1" if ":" in host else "127.0.0.1")
    # SIPp takes 5060 when it is free: pick a port so parallel runs cannot collide.
    port_arg = local_port if local_port is not None else free_port(local)
    command = [
        SIPP,
        remote,
        "-sf", str(path),
        "-t", _SIPP_TRANSPORT[transport],
        "-i", local,
        "-p", str(port_arg),
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-timeout", f"{timeout:g}s",
        "-nostdin",
        "-trace_stat", "-stf", str(stats_file), "-fd", "1",
        "-trace_err", "-error_file", str(errors_file),
    ]  # fmt: skip
    if limit is not None:
        command += ["-l", str(limit)]
    if recv_timeout_ms is not None:
        command += ["-recv_timeout", str(recv_timeout_ms)]
    if transport == "tls":
        if tls_cert is None or tls_key is None:
            raise ValueError("SIPp over TLS needs tls_cert and tls_key (its client certificate)")
        command += ["-tls_cert", str(tls_cert), "-tls_key", str(tls_key)]
    command += list(extra)
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
        return SippResult(
            returncode=-9,
            stderr=f"sipp killed after {timeout + 10:g} s: {exc}",
            errors=_read(errors_file),
        )
    return SippResult(
        returncode=completed.returncode,
        stats=_last_stats_row(stats_file),
        stdout=completed.stdout,
        stderr=completed.stderr,
        errors=_read(errors_file),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last_stats_row(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", errors="replace") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}
