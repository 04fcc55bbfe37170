"""Topology hiding (TRAPS 6), audited on every message each side received: after an outbound
and an inbound call through the SBC, nothing of the PBX (address, ports, Call-ID, tags,
branches, User-Agent, X-Internal header, SDP origin) reaches the ITSP, and nothing of the ITSP
(address, ports, Server/User-Agent, tags, Call-ID, branches, SDP origin) reaches the PBX."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.calls import (
    ITSP_HOST,
    ITSP_SERVER,
    ITSP_USER_AGENT,
    PBX_HOST,
    PBX_USER_AGENT,
    PBX_X_HEADER,
    SBC_INTERNAL,
    CallLab,
    CallOutcome,
    SippRun,
    TracedMessage,
)
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


@dataclass(frozen=True, slots=True)
class Calls:
    lab: CallLab
    outbound: CallOutcome
    inbound: CallOutcome


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calls]:
    with CallLab(tmp_path_factory.mktemp("topology")) as lab:
        outbound = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "200"))
        inbound = lab.run_inbound("call_in_itsp.xml", "call_in_pbx.xml", itsp_args=("-d", "200"))
        yield Calls(lab, outbound, inbound)


def _address(host: str) -> str:
    # 127.0.0.1 must not match inside 127.0.0.10, nor 127.0.0.2 inside 127.0.0.20.
    return r"(?<![\d.])" + re.escape(host) + r"(?![\d])"


def _port(port: int) -> str:
    # As written in SIP (host:port, rport=, received) and SDP (m=audio PORT, a=rtcp:PORT).
    return rf"(?:[:=]|m=\w+ ){port}(?!\d)"


def _token(text: str) -> str:
    return r"(?<![\w.-])" + re.escape(text) + r"(?![\w-])"


def _identifiers(run: SippRun) -> set[str]:
    """Call-IDs, From/To tags and Via branches in the messages `run` sent itself."""
    found: set[str] = set()
    for message in run.sent:
        found.update(message.headers("Call-ID"))
        for name in ("From", "To"):
            for value in message.headers(name):
                tag = re.search(r";\s*tag=([^;>\s]+)", value)
                # Only tags this side created: theirs are the SBC's, echoed back.
                if tag and ("pbxtag" in tag.group(1) or "itsp" in tag.group(1)):
                    found.add(tag.group(1))
        if message.is_request:
            for value in message.headers("Via"):
                branch = re.search(r";\s*branch=([^;,\s]+)", value)
                if branch:
                    found.add(branch.group(1))
    return found


def _leaks(received: list[TracedMessage], patterns: dict[str, str]) -> list[str]:
    leaks = []
    for message in received:
        for what, pattern in patterns.items():
            match = re.search(pattern, message.text)
            if match:
                line = message.text[: match.start()].count("\n")
                text_line = message.text.split("\n")[line]
                leaks.append(f"{what} in {message.first_line!r}: {text_line.strip()!r}")
    return leaks


def _pbx_secrets(calls: Calls) -> dict[str, str]:
    lab = calls.lab
    patterns = {
        "PBX address": _address(PBX_HOST),
        "SBC internal address": _address(SBC_INTERNAL),
        "PBX User-Agent": re.escape(PBX_USER_AGENT),
        "PBX X-Internal header": r"(?im)^X-Internal\s*:|" + re.escape(PBX_X_HEADER),
        "PBX SDP origin": r"(?m)^o=pbxuser ",
        "PBX SDP session name": _token("pbx-session"),
        "SBC internal SIP port": _port(lab.internal_port),
    }
    for name, port in (("SIP", lab.pbx_port), ("RTP", lab.pbx_rtp), ("video", lab.pbx_video)):
        patterns[f"PBX {name} port {port}"] = _port(port)
    for call in (calls.outbound, calls.inbound):
        for identifier in _identifiers(call.pbx):
            patterns[f"PBX identifier {identifier}"] = _token(identifier)
    return patterns


def _itsp_secrets(calls: Calls) -> dict[str, str]:
    lab = calls.lab
    patterns = {
        "ITSP address": _address(ITSP_HOST),
        "ITSP Server header": re.escape(ITSP_SERVER),
        "ITSP User-Agent": re.escape(ITSP_USER_AGENT),
        "ITSP SDP origin": r"(?m)^o=carrier ",
        "ITSP SDP session name": _token("carrier-session"),
        "ITSP Contact": r"sip:carrier@",
        "SBC external SIP port": _port(lab.external_port),
    }
    for name, port in (("SIP", lab.itsp_port), ("RTP", lab.itsp_rtp), ("video", lab.itsp_video)):
        patterns[f"ITSP {name} port {port}"] = _port(port)
    for call in (calls.outbound, calls.inbound):
        for identifier in _identifiers(call.itsp):
            patterns[f"ITSP identifier {identifier}"] = _token(identifier)
    return patterns


def _check_calls_ran(calls: Calls) -> None:
    for call in (calls.outbound, calls.inbound):
        assert call.ok, call.describe()


def test_identifiers_collected_from_both_sides(calls: Calls) -> None:
    # Guards the audit itself: an empty list of secrets would make the leak checks vacuous.
    _check_calls_ran(calls)
    pbx = set().union(*(_identifiers(c.pbx) for c in (calls.outbound, calls.inbound)))
    itsp = set().union(*(_identifiers(c.itsp) for c in (calls.outbound, calls.inbound)))
    assert any(i.startswith("pbxcall-") for i in pbx) and any("pbxtag" in i for i in pbx), pbx
    assert any(i.startswith("itspcall-") for i in itsp) and any("itsptag" in i for i in itsp)
    assert any(i.startswith("z9hG4bK") for i in pbx) and any(i.startswith("z9hG4bK") for i in itsp)


def test_nothing_of_the_pbx_reaches_the_itsp(calls: Calls) -> None:
    _check_calls_ran(calls)
    received = calls.outbound.itsp.received + calls.inbound.itsp.received
    assert received
    leaks = _leaks(received, _pbx_secrets(calls))
    assert not leaks, "PBX details leaked to the ITSP:\n" + "\n".join(leaks)


def test_nothing_of_the_itsp_reaches_the_pbx(calls: Calls) -> None:
    _check_calls_ran(calls)
    received = calls.outbound.pbx.received + calls.inbound.pbx.received
    assert received
    leaks = _leaks(received, _itsp_secrets(calls))
    assert not leaks, "ITSP details leaked to the PBX:\n" + "\n".join(leaks)


def test_audit_flags_everything_when_the_parties_talk_directly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Without the SBC each side sees the other as it is: the audit must say so.
    lab = CallLab(tmp_path_factory.mktemp("direct"), direct=True).start()
    outbound = lab.run_outbound("call_out_pbx.xml", "call_out_itsp.xml", pbx_args=("-d", "100"))
    inbound = lab.run_inbound("call_in_itsp.xml", "call_in_pbx.xml", itsp_args=("-d", "100"))
    direct = Calls(lab, outbound, inbound)
    _check_calls_ran(direct)
    to_itsp = "\n".join(
        _leaks(outbound.itsp.received + inbound.itsp.received, _pbx_secrets(direct))
    )
    to_pbx = "\n".join(_leaks(outbound.pbx.received + inbound.pbx.received, _itsp_secrets(direct)))
    for what in ("PBX address", "PBX User-Agent", "PBX X-Internal", "PBX SDP origin", "pbxcall-"):
        assert what in to_itsp, what
    for what in ("ITSP address", "ITSP Server header", "ITSP User-Agent", "itspcall-", "itsptag"):
        assert what in to_pbx, what


def test_audit_catches_a_leak(calls: Calls) -> None:
    # A message copied from the PBX verbatim must trip the audit (the checks can fail).
    _check_calls_ran(calls)
    leaked = calls.outbound.pbx.sent[0]
    assert _leaks([leaked], _pbx_secrets(calls))
    echoed = calls.inbound.itsp.sent[0]
    assert _leaks([echoed], _itsp_secrets(calls))
