"""SIPp against the real `sbc run` process: OPTIONS load on both interfaces and transports,
and an INVITE from no configured PBX that is answered 100 + 403 and ACKed (SIPp cannot do TLS in Debian's build:
TLS is covered with Python's ssl client in test_sbc_signalling)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SbcProcess, ipv6_available, run_sipp
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

IPV6 = ipv6_available()
PBX_HOST = "127.0.0.10"
ITSP_HOST = "127.0.0.20"


@pytest.fixture(scope="module")
def sbc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SbcProcess]:
    # T1 = 0.2 s: Timer G resends a 403 whose ACK was not absorbed well within the INVITE
    # scenario's final 0.5 s pause.
    # The OPTIONS load below (150/s from one address) is what the edge guard blocks as a
    # flood from a stranger: these load generators are declared trusted, as a monitoring
    # system would be. The flood defence itself is tested in test_security.py.
    trusted = f"security: {{trusted: ['{PBX_HOST}/32', '{ITSP_HOST}/32']}}\n"
    with SbcProcess(
        tmp_path_factory.mktemp("sbc"), ipv6=IPV6, sip={"t1": 0.2}, extra_yaml=trusted
    ) as process:
        yield process


@pytest.mark.parametrize(("side", "source"), [("internal", PBX_HOST), ("external", ITSP_HOST)])
def test_sipp_options_load_over_udp_all_answered(
    sbc: SbcProcess, tmp_path: Path, side: str, source: str
) -> None:
    result = run_sipp(
        "options_uac.xml",
        sbc.addr(side, "udp"),
        tmp_path,
        calls=300,
        rate=150,
        local_ip=source,
        timeout=30,
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 300, result.describe()
    assert result.failed == 0
    assert result.count("DeadCallMsgs") == 0 and result.count("OutOfCallMsgs") == 0


def test_sipp_options_over_tcp(sbc: SbcProcess, tmp_path: Path) -> None:
    result = run_sipp(
        "options_uac.xml",
        sbc.addr("internal", "tcp"),
        tmp_path,
        transport="tcp",
        calls=100,
        rate=100,
        local_ip=PBX_HOST,
        timeout=30,
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 100, result.describe()


@pytest.mark.skipif(not IPV6, reason="IPv6 loopback ::1 is not available")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_options_over_ipv6(sbc: SbcProcess, tmp_path: Path, transport: str) -> None:
    result = run_sipp(
        "options_uac.xml",
        sbc.addr("internal6", transport),
        tmp_path,
        transport=transport,
        calls=20,
        rate=50,
        timeout=30,
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 20, result.describe()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_invite_from_unknown_source_gets_100_then_403_and_ack_is_absorbed(
    sbc: SbcProcess, tmp_path: Path, transport: str
) -> None:
    result = run_sipp(
        "invite_uac_rejected.xml",
        sbc.addr("internal", transport),
        tmp_path,
        transport=transport,
        calls=5,
        rate=10,
        local_ip=PBX_HOST,
        timeout=30,
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 5, result.describe()
    # Had the server not matched the ACK to the INVITE transaction, Timer G would resend the
    # 403 during the scenario's final pause and SIPp would answer it with another ACK,
    # counted as a retransmission (checked: an ACK on another branch makes this 1 per call).
    assert result.count("Retransmissions") == 0, result.describe()
    assert result.count("DeadCallMsgs") == 0, result.describe()
    assert result.count("OutOfCallMsgs") == 0, result.describe()
