"""Starting and stopping `sbc run`: refuse to run half-configured (bad config, a listener that
cannot bind), report readiness once, stop cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.support import SbcProcess, SbcStartError, free_port, sip_request, udp_exchange
from tests.support.process import run_sbc
from tests.support.sipmsg import status_of


def test_bad_config_exits_1_with_file_line_message_and_binds_nothing(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"interfaces:\n  internal:\n    listen: [udp:127.0.0.1:{port}]\nsip:\n  t1: -3\n"
    )
    result = run_sbc("run", "-c", str(config))
    assert result.returncode == 1, result.stderr
    assert f"{config}:5:" in result.stderr, result.stderr
    assert "sip.t1" in result.stderr
    assert "sbc.ready" not in result.stderr
    assert "listener" not in result.stderr


def test_listener_that_cannot_bind_stops_startup_and_is_named(tmp_path: Path) -> None:
    free, busy = free_port("127.0.0.1"), free_port("127.0.0.2")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.2", busy))
        config = (
            "interfaces:\n"
            "  internal:\n"
            f"    listen: [udp:127.0.0.1:{free}]\n"
            "  external:\n"
            f"    listen: [udp:127.0.0.2:{busy}]\n"
        )
        process = SbcProcess(tmp_path, config_text=config)
        with pytest.raises(SbcStartError):
            process.start(timeout=15)
    assert process.process is not None
    assert process.process.wait(10) == 1
    log = process.log_text()
    assert "event=sbc.listener_failed" in log
    assert f"external/udp:127.0.0.2:{busy}" in log
    assert "sbc.ready" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    sbc = SbcProcess(tmp_path).start()
    try:
        target = sbc.addr("internal", "udp")
        assert status_of(udp_exchange(sip_request("OPTIONS", target), target)) == 200
        assert sbc.ready_line is not None
        for side in ("internal", "external"):
            for transport in ("udp", "tcp"):
                host, port = sbc.addr(side, transport)
                assert f"{side}/{transport}:{host}:{port}" in sbc.ready_line
        assert sbc.process is not None
        sbc.process.send_signal(signum)
        assert sbc.process.wait(10) == 0, sbc.log_text()
        sbc.wait_for_log(r"event=sbc\.stopped")
    finally:
        sbc.kill()
    # Every socket is released: the same ports bind again at once.
    host, port = sbc.addr("internal", "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, port))


def test_check_config_does_not_start_listeners(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    config = tmp_path / "ok.yaml"
    config.write_text(f"interfaces:\n  internal:\n    listen: [udp:127.0.0.1:{port}]\n")
    result = run_sbc("check-config", str(config))
    assert result.returncode == 0, result.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))
