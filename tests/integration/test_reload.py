"""Configuration reload on SIGHUP with real peers: calls up during the reload finish on the
settings they started with, new calls get the new ones, and a reload that is invalid or
would need a restart is refused while the running configuration stays."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.calls import PBX_HOST, CallLab
from tests.support.gateway import FakeGateway
from tests.support.net import UdpClient, free_port
from tests.support.sipmsg import sip_request, status_of
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

CALLS = 50
GATEWAY_HOST = "127.0.0.21"  # the fake registrar (as in test_calls.py)
DENY_882 = "fraud: {rules: [{scope: pbx, name: pbx, deny: ['+882']}]}\n"


def _wait_for_count(lab: CallLab, pattern: str, count: int, timeout: float = 15.0) -> None:
    """Until the SBC has logged `count` lines matching `pattern` (awaited, not polled)."""
    assert lab.sbc is not None
    index = 0
    for _ in range(count):
        line = lab.sbc.wait_for_log(pattern, timeout=timeout, start=index)
        index = lab.sbc.log_lines().index(line, index) + 1


def _invite_status(lab: CallLab, number: str) -> int | None:
    """The final status a plain INVITE from the PBX to `number` gets (no SDP needed: the
    policy answers before any call exists)."""
    client = UdpClient(PBX_HOST)
    try:
        request = sip_request("INVITE", lab.internal_addr, source=client.address)
        request = request.replace(b"sip:sbc@", f"sip:{number}@".encode())
        client.send(request, lab.internal_addr)
        while (data := client.recv(3.0)) is not None:
            status = status_of(data)
            if status is not None and status >= 200:
                return status
        return None
    finally:
        client.close()


def test_reload_during_live_calls_drops_none_and_applies_to_new_calls(tmp_path: Path) -> None:
    lab = CallLab(tmp_path)
    with lab:
        assert lab.sbc is not None
        pair = lab.start_outbound(
            "call_out_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-m", str(CALLS), "-r", "50", "-l", str(CALLS), "-d", "3000"),
            itsp_args=("-m", str(CALLS)),
            timeout=30.0,
        )
        try:
            # Every call answered before the reload: then reload under them.
            _wait_for_count(lab, r"event=call\.answered ", CALLS)
            line = lab.reload(lab.config_text() + DENY_882, r"event=config\.reloaded ")
            outcome = pair.wait(callee_grace=10.0)
        except BaseException:
            pair.kill()
            raise
        assert f"live_calls={CALLS}" in line, line
        # The new rule holds for new calls.
        refused = _invite_status(lab, "+88212345")
        log = lab.log_text()
    assert outcome.ok, outcome.describe()
    assert outcome.pbx.result.successful == CALLS, outcome.describe()
    assert refused == 403
    assert "rule=fraud.pbx.pbx.deny" in log


def test_invalid_or_restart_only_reload_is_refused_and_the_old_config_stays(
    tmp_path: Path,
) -> None:
    lab = CallLab(tmp_path)
    with lab:
        assert lab.sbc is not None
        bad = lab.config_text() + "fraud: {rules: [{scope: pbx, name: nosuchpbx}]}\n"
        line = lab.reload(bad, r"event=config\.reload_refused ")
        assert "fraud.rules[0].name" in line and "nosuchpbx" in line, line
        moved = lab.config_text().replace(", timeout: 60", ", timeout: 61")
        assert moved != lab.config_text()
        line = lab.reload(moved, r"event=config\.reload_refused ")
        assert "media: changed; this takes a restart" in line, line
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
        log = lab.log_text()
    assert outcome.ok, outcome.describe()
    assert "event=config.reloaded" not in log


def test_a_reload_keeps_unchanged_registrations_and_removes_dropped_ones(
    tmp_path: Path,
) -> None:
    # The registrar (a fake gateway that accepts any binding) counts REGISTERs: a reload
    # that leaves the registration as it was sends none; one that drops it un-REGISTERs.
    port = free_port(GATEWAY_HOST)
    trunk = (
        f'{{name: reg, interface: external, proxy: "sip:{GATEWAY_HOST}:{port}",'
        " credentials: {username: alice, password: s3cret},"
        " registrations: [{user: alice, expires: 600}]}"
    )
    with (
        FakeGateway(GATEWAY_HOST, port, register_status=200) as registrar,
        CallLab(tmp_path, trunks_before=[trunk]) as lab,
    ):
        assert lab.sbc is not None
        lab.sbc.wait_for_log(r"event=trunk\.registration .*trunk=reg .*state=registered")
        before = registrar.count("REGISTER")
        lab.reload(lab.config_text() + DENY_882, r"event=config\.reloaded ")
        assert registrar.count("REGISTER") == before, "an unchanged registration re-registered"
        lab.trunks_before = ()
        start = len(lab.sbc.log_lines())
        lab.reload(lab.config_text(), r"event=config\.reloaded ")
        lab.sbc.wait_for_log(r"event=trunk\.registration_removed .*trunk=reg", start=start)
        lab.sbc.wait_for_log(
            r"event=trunk\.registration .*trunk=reg .*state=unregistered", start=start
        )
    assert registrar.count("REGISTER") == before + 1


def test_a_reload_binds_new_listeners_and_closes_removed_ones(tmp_path: Path) -> None:
    lab = CallLab(tmp_path)
    with lab:
        host, port = lab.internal_addr
        tcp_port = free_port(host)
        old = f'listen: ["udp:{host}:{port}"]'
        new = f'listen: ["udp:{host}:{port}", "tcp:{host}:{tcp_port}"]'
        text = lab.config_text()
        assert old in text
        line = lab.reload(text.replace(old, new), r"event=config\.listeners ")
        assert f"added=internal/tcp:{host}:{tcp_port}" in line, line
        # The new TCP listener answers OPTIONS over a real connection.
        with socket.create_connection((host, tcp_port), timeout=3) as conn:
            conn.sendall(sip_request("OPTIONS", (host, tcp_port), transport="TCP"))
            conn.settimeout(3)
            assert status_of(conn.recv(65535)) == 200
        line = lab.reload(text, r"event=config\.listeners ")
        assert f"removed=internal/tcp:{host}:{tcp_port}" in line, line
        with pytest.raises(OSError):
            socket.create_connection((host, tcp_port), timeout=3).close()
        # UDP calls went on through all of it.
        outcome = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
    assert outcome.ok, outcome.describe()
