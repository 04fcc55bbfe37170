"""Run the real `sbc` process on loopback ports for a test: write its config, start it, wait
for its `sbc.ready` log line, stop it with SIGTERM and check that it exited cleanly."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from tests.support.certs import make_self_signed_cert
from tests.support.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERNAL_HOST = "127.0.0.1"
EXTERNAL_HOST = "127.0.0.2"
IPV6_HOST = "::1"


class SbcStartError(RuntimeError):
    """The process exited or stayed silent instead of reporting sbc.ready."""


def sbc_command(*args: str) -> list[str]:
    """The command line running `sbc ARGS` with this interpreter."""
    return [sys.executable, "-m", "sbc", *args]


def run_sbc(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run `sbc ARGS` to completion (e.g. check-config, or run with a bad config)."""
    return subprocess.run(
        sbc_command(*args),
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class SbcProcess:
    """The SBC as a subprocess with an 'internal' interface on 127.0.0.1 and an 'external'
    one on 127.0.0.2, each listening on UDP and TCP (same port number); optionally TLS on
    the internal side and UDP+TCP on [::1] (internal interface).

    `addr(interface, transport)` gives a listener's (host, port); `log_text()` and
    `wait_for_log(pattern)` read its log (stderr). Use as a context manager, or call
    start() and stop().
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        tls: bool = False,
        ipv6: bool = False,
        log_level: str = "info",
        sip: dict[str, object] | None = None,
        extra_yaml: str = "",
        config_text: str | None = None,
    ) -> None:
        if log_level not in ("debug", "info"):
            raise ValueError(
                "readiness is seen in the info-level sbc.ready line: use info or debug"
            )
        self.tmp_path = tmp_path
        self.tls = tls
        self.ipv6 = ipv6
        self.log_level = log_level
        self.sip = dict(sip or {})
        self.extra_yaml = extra_yaml
        self.listen: dict[tuple[str, str], tuple[str, int]] = {}
        self.cert: Path | None = None
        self.key: Path | None = None
        self.config_path = tmp_path / "sbc.yaml"
        self.config_text = config_text if config_text is not None else self._make_config()
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_line: str | None = None
        self._lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stderr_fd = -1
        self._partial = b""  # a line not finished yet
        self._eof = False

    # ------------------------------------------------------------------ configuration

    def _make_config(self) -> str:
        used: set[int] = set()
        internal = free_port(INTERNAL_HOST)
        used.add(internal)
        external = free_port(EXTERNAL_HOST)
        self.listen[("internal", "udp")] = (INTERNAL_HOST, internal)
        self.listen[("internal", "tcp")] = (INTERNAL_HOST, internal)
        self.listen[("external", "udp")] = (EXTERNAL_HOST, external)
        self.listen[("external", "tcp")] = (EXTERNAL_HOST, external)
        internal_listen = [f"udp:{INTERNAL_HOST}:{internal}", f"tcp:{INTERNAL_HOST}:{internal}"]
        tls_block = ""
        if self.tls:
            self.cert, self.key = make_self_signed_cert(self.tmp_path)
            tls_port = free_port(INTERNAL_HOST, avoid=used)
            used.add(tls_port)
            self.listen[("internal", "tls")] = (INTERNAL_HOST, tls_port)
            internal_listen.append(f"tls:{INTERNAL_HOST}:{tls_port}")
            tls_block = f"    tls:\n      cert: {self.cert}\n      key: {self.key}\n"
        if self.ipv6:
            v6 = free_port(IPV6_HOST)
            self.listen[("internal6", "udp")] = (IPV6_HOST, v6)
            self.listen[("internal6", "tcp")] = (IPV6_HOST, v6)
            internal_listen += [f"udp:[{IPV6_HOST}]:{v6}", f"tcp:[{IPV6_HOST}]:{v6}"]
        sip_block = ""
        if self.sip:
            sip_block = "sip:\n" + "".join(f"  {k}: {v}\n" for k, v in self.sip.items())
        listen_internal = ", ".join(f'"{item}"' for item in internal_listen)
        return (
            "node: test-sbc\n"
            f"log:\n  level: {self.log_level}\n  format: kv\n"
            f"{sip_block}"
            "interfaces:\n"
            "  internal:\n"
            f"    listen: [{listen_internal}]\n"
            f"    media_address: {INTERNAL_HOST}\n"
            f"{tls_block}"
            "  external:\n"
            f'    listen: ["udp:{EXTERNAL_HOST}:{external}", "tcp:{EXTERNAL_HOST}:{external}"]\n'
            f"    media_address: {EXTERNAL_HOST}\n"
            f"{self.extra_yaml}"
        )

    def addr(self, interface: str = "internal", transport: str = "udp") -> tuple[str, int]:
        """(host, port) of a listener; IPv6 listeners are interface 'internal6'."""
        return self.listen[(interface, transport)]

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> SbcProcess:
        self.config_path.write_text(self.config_text)
        process = subprocess.Popen(
            sbc_command("run", "-c", str(self.config_path)),
            cwd=REPO_ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.process = process
        assert process.stderr is not None
        self._stderr_fd = process.stderr.fileno()
        os.set_blocking(self._stderr_fd, False)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self.ready_line = self.wait_for_log(r"event=sbc\.ready\b", timeout)
        except SbcStartError:
            self.kill()
            raise
        return self

    def _read_log(self) -> None:
        """Keep the pipe drained (a full pipe would stall the SBC's writes) until EOF."""
        while True:
            select.select([self._stderr_fd], [], [])  # readable: data or EOF
            with self._lines_changed:
                if not self._drain():
                    return

    def _drain(self) -> bool:
        """Take in what the pipe holds now; False at EOF. Runs with _lines_changed held, by
        the reader thread and by log_lines(), so a line the SBC wrote before the test saw
        its effect (a response on the wire) is always in the list a test reads: the
        SBC flushes each line before it goes on."""
        if self._eof:
            return False
        while True:
            try:
                chunk = os.read(self._stderr_fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                self._eof = True
                if self._partial:
                    self._lines.append(self._partial.decode(errors="replace"))
                    self._partial = b""
                self._lines_changed.notify_all()
                return False
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self._lines.extend(line.decode(errors="replace") for line in complete)
            self._lines_changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first log line (from index `start`) matching regex `pattern`; waits for it.

        Raises SbcStartError when the process exits or the timeout passes first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._lines_changed:
            while True:
                while index < len(self._lines):
                    if regex.search(self._lines[index]):
                        return self._lines[index]
                    index += 1
                exited = self.process is None or self.process.poll() is not None
                reader_done = self._reader is None or not self._reader.is_alive()
                left = deadline - time.monotonic()
                if (exited and reader_done) or left <= 0:
                    what = "exited" if exited else f"gave no match within {timeout:g} s"
                    raise SbcStartError(
                        f"sbc {what} waiting for /{pattern}/; log:\n{self.log_text()}"
                    )
                self._lines_changed.wait(min(left, 0.5))

    def log_lines(self) -> list[str]:
        with self._lines_changed:
            if self._stderr_fd >= 0:
                self._drain()
            return list(self._lines)

    def log_text(self) -> str:
        return "\n".join(self.log_lines())

    @property
    def pid(self) -> int:
        assert self.process is not None, "the process was not started"
        return self.process.pid

    def stop(self, timeout: float = 10.0, *, check: bool = True) -> int:
        """SIGTERM, wait for exit, and (with check) require exit code 0 and sbc.stopped."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"sbc did not exit within {timeout:g} s of SIGTERM; log:\n{self.log_text()}"
            ) from None
        if self._reader is not None:
            self._reader.join(5)
        if check:
            assert code == 0, f"sbc exited with {code}; log:\n{self.log_text()}"
            assert "event=sbc.stopped" in self.log_text(), self.log_text()
            errors = [line for line in self.log_lines() if "level=error" in line]
            assert not errors, "errors logged:\n" + "\n".join(errors)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> SbcProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Do not hide a test failure behind a stop() assertion.
        self.stop(check=exc_type is None)
