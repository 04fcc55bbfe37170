"""Operations with real peers: Prometheus metrics match what SIPp did, one CDR per call
attempt with its duration and outcome (rejected calls included), and SIGTERM during calls
leaves complete records."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbc.cdr import CdrRecord, open_readonly
from sbc.hep import decode
from tests.support.calls import PBX_HOST, CallLab
from tests.support.net import UdpClient, free_port
from tests.support.sipmsg import sip_request, status_of
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

CALLS = 5
HOLD_MS = 1000
DENY = "fraud: {rules: [{scope: pbx, name: pbx, deny: ['+882']}]}\n"


def _lab(tmp_path: Path, metrics_port: int) -> CallLab:
    extra = f"cdr: {{path: cdr.sqlite}}\nmetrics: {{listen: '127.0.0.1:{metrics_port}'}}\n"
    return CallLab(tmp_path, extra_yaml=extra + DENY)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _refused_invite(lab: CallLab, number: str) -> int | None:
    client = UdpClient(PBX_HOST)
    try:
        request = sip_request("INVITE", lab.internal_addr, source=client.address)
        client.send(request.replace(b"sip:sbc@", f"sip:{number}@".encode()), lab.internal_addr)
        while (data := client.recv(3.0)) is not None:
            status = status_of(data)
            if status is not None and status >= 200:
                return status
        return None
    finally:
        client.close()


def _records(tmp_path: Path) -> list[CdrRecord]:
    store = open_readonly(tmp_path / "cdr.sqlite")
    try:
        return list(store.read())
    finally:
        store.close()


def test_metrics_and_cdrs_match_what_the_peers_did(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    lab = _lab(tmp_path, port)
    with lab:
        outcome = lab.run_outbound(
            "call_out_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-m", str(CALLS), "-r", "10", "-l", str(CALLS), "-d", str(HOLD_MS)),
            itsp_args=("-m", str(CALLS)),
        )
        assert _refused_invite(lab, "+88212345") == 403
        assert _refused_invite(lab, "nosuchuser") == 404  # no route: a record too
        assert lab.sbc is not None
        lab.sbc.wait_for_log(r"event=media\.released ")
        samples = _scrape(port)
    assert outcome.ok, outcome.describe()
    out = (("direction", "outbound"),)
    assert samples[("sbc_call_attempts_total", out)] == CALLS
    assert samples[("sbc_call_outcomes_total", (*out, ("status_class", "2xx")))] == CALLS
    assert samples[("sbc_call_setup_seconds_count", (*out, ("stage", "answer")))] == CALLS
    rule = (("rule", "fraud.pbx.pbx.deny"),)
    assert samples[("sbc_admission_rejections_total", rule)] == 1
    invites_in = (("direction", "in"), ("method", "INVITE"), ("transport", "udp"))
    invites_out = (("direction", "out"), ("method", "INVITE"), ("transport", "udp"))
    # From the PBX: its calls and the refused one; toward the ITSP: one per call (each may
    # be retransmitted on a slow machine, hence at least).
    assert samples[("sbc_sip_messages_total", invites_in)] >= CALLS + 1
    assert samples[("sbc_sip_messages_total", invites_out)] >= CALLS
    assert samples[("sbc_calls_live", ())] == 0
    # After SIGTERM every record is on disk: CALLS answered calls and one refusal.
    records = _records(tmp_path)
    answered = [r for r in records if r.outcome.value == "answered"]
    rejected = [r for r in records if r.outcome.value == "rejected"]
    assert len(answered) == CALLS and len(rejected) == 2, records
    for record in answered:
        # SIPp holds each call HOLD_MS after the ACK: the CDR says the same within 1 s.
        assert abs(record.duration - HOLD_MS / 1000) < 1.0, record
        assert record.status == 200 and record.trunk == "itsp" and record.pbx == "pbx"
        assert record.a_call_id and record.b_call_id and record.a_call_id != record.b_call_id
    by_rule = {r.rule: r for r in rejected}
    assert by_rule["fraud.pbx.pbx.deny"].status == 403
    assert by_rule["routing"].status == 404 and by_rule["routing"].callee == "nosuchuser"


def test_sigterm_during_calls_leaves_a_complete_record_per_call(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    lab = _lab(tmp_path, port)
    with lab:
        assert lab.sbc is not None
        pair = lab.start_outbound(
            "call_itspbye_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-m", str(CALLS), "-r", "10", "-l", str(CALLS)),
            itsp_args=("-m", str(CALLS)),
            timeout=20.0,
        )
        try:
            index = 0
            for _ in range(CALLS):
                line = lab.sbc.wait_for_log(r"event=call\.answered ", start=index)
                index = lab.sbc.log_lines().index(line, index) + 1
            lab.sbc.stop()  # SIGTERM with every call up: BYE both ways, then the CDRs
            outcome = pair.wait(callee_grace=10.0)
        except BaseException:
            pair.kill()
            raise
    records = _records(tmp_path)
    assert len(records) == CALLS, records
    for record in records:
        assert record.answer is not None and record.end >= record.answer
        assert record.ended_by == "sbc" and "shutting down" in record.reason.lower(), record
    assert outcome.pbx.received_requests("BYE"), outcome.describe()


def test_sigterm_drains_live_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    # With calls.drain_timeout the SBC waits for live calls to end by themselves (here the
    # PBX hangs up after 1.5 s) and answers new INVITEs 503 meanwhile.
    extra = "cdr: {path: cdr.sqlite}\ncalls: {drain_timeout: 10}\n"
    lab = CallLab(tmp_path, extra_yaml=extra)
    with lab:
        assert lab.sbc is not None and lab.sbc.process is not None
        pair = lab.start_outbound(
            "call_out_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-m", "3", "-r", "10", "-l", "3", "-d", "1500"),
            itsp_args=("-m", "3"),
            timeout=20.0,
        )
        try:
            index = 0
            for _ in range(3):
                line = lab.sbc.wait_for_log(r"event=call\.answered ", start=index)
                index = lab.sbc.log_lines().index(line, index) + 1
            lab.sbc.process.send_signal(signal.SIGTERM)
            lab.sbc.wait_for_log(r"event=sbc\.draining calls=3 ")
            refused = _refused_invite(lab, "15551234567")
            outcome = pair.wait(callee_grace=10.0)
        except BaseException:
            pair.kill()
            raise
    assert refused == 503
    assert outcome.ok, outcome.describe()
    records = [r for r in _records(tmp_path) if r.outcome.value == "answered"]
    assert len(records) == 3 and all(r.ended_by == "a" for r in records), records


def _api(port: int, method: str, path: str, token: str) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_api_and_cli_list_and_hang_up_a_live_call(tmp_path: Path) -> None:
    token = "t0ken-for-the-api-test"
    (tmp_path / "api.token").write_text(token + "\n")
    port = free_port("127.0.0.1")
    extra = f"api: {{listen: '127.0.0.1:{port}', token_file: api.token}}\n"
    lab = CallLab(tmp_path, extra_yaml=extra)
    with lab:
        assert lab.sbc is not None
        pair = lab.start_outbound(
            "call_itspbye_pbx.xml", "call_out_itsp.xml", pbx_args=("-m", "1"), timeout=20.0
        )
        try:
            lab.sbc.wait_for_log(r"event=call\.answered ")
            listed = subprocess.run(
                [sys.executable, "-m", "sbc", "calls", "--api", f"http://127.0.0.1:{port}",
                 "--token-file", str(tmp_path / "api.token")],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            status, calls = _api(port, "GET", "/calls", token)
            assert status == 200 and isinstance(calls, dict)
            (call,) = calls["calls"]
            status, detail = _api(port, "GET", f"/calls/{call['key']}", token)
            assert status == 200 and isinstance(detail, dict) and detail["legs"], detail
            assert _api(port, "GET", "/calls", "wrong-token")[0] == 401
            status, _ = _api(port, "DELETE", f"/calls/{call['key']}", token)
            assert status == 202
            outcome = pair.wait(callee_grace=10.0)
        except BaseException:
            pair.kill()
            raise
        status, trunks = _api(port, "GET", "/trunks", token)
        reloaded = _api(port, "POST", "/reload", token)
    assert listed.returncode == 0 and call["key"] in listed.stdout, listed.stderr
    assert call["phase"] == "answered" and call["direction"] == "outbound"
    assert outcome.ok, outcome.describe()  # both SIPp sides got the SBC's BYE
    assert status == 200 and isinstance(trunks, dict) and trunks["trunks"][0]["name"] == "itsp"
    assert reloaded[0] == 200, reloaded


def test_every_sip_message_of_a_call_is_mirrored_to_the_hep_collector(tmp_path: Path) -> None:
    collector = UdpClient("127.0.0.1")
    try:
        host, port = collector.address
        extra = f"capture: {{hep: '{host}:{port}', hep_id: 4242, hep_password: homer}}\n"
        lab = CallLab(tmp_path, extra_yaml=extra)
        with lab:
            outcome = lab.run_outbound(
                "call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100")
            )
        packets = []
        while (data := collector.recv(0.5)) is not None:
            packets.append(decode(data))
    finally:
        collector.close()
    assert outcome.ok, outcome.describe()
    invites = [p for p in packets if p.payload.startswith(b"INVITE ")]
    # The PBX's INVITE arriving on the internal side and ours leaving on the external side.
    assert {p.dst for p in invites} >= {lab.internal_addr}, [p.dst for p in invites]
    assert any(p.src[0] == lab.external_addr[0] for p in invites), [p.src for p in invites]
    assert all(
        p.capture_id == 4242 and p.auth_key == "homer" and p.proto_type == 1 for p in packets
    )
    byes = [p for p in packets if p.payload.startswith(b"BYE ")]
    assert len(byes) >= 2  # one per leg
