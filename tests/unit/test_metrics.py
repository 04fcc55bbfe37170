"""sbc.metrics: every event method moves its series, collectors read live state, and the
exposition (text and HTTP) carries it all."""

from __future__ import annotations

import asyncio
import http.client
import timeit
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbc.metrics import MOS_BUCKETS, SETUP_BUCKETS, Metrics
from sbc.sip.message import Request, Response, parse

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _request(method: str = "INVITE") -> Request:
    message = parse(INVITE.replace(b"INVITE", method.encode()))
    assert isinstance(message, Request)
    return message


def _response(status: int) -> Response:
    message = parse(
        f"SIP/2.0 {status} Whatever\r\n".encode()
        + b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
        b"From: <sip:alice@example.com>;tag=1\r\n"
        b"To: <sip:bob@example.com>;tag=2\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(message, Response)
    return message


@dataclass
class _Cdr:
    direction: str
    status: int
    start: float
    answer: float | None
    end: float


@dataclass
class _Block:
    kind: str
    reason: str


@dataclass
class _Worker:
    index: int
    alive: bool
    sessions: int
    streams: int
    restarts: int


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# ---------------------------------------------------------------------- signalling


def test_messages_by_method_status_class_and_transport(metrics: Metrics) -> None:
    metrics.message_in(_request(), "udp")
    metrics.message_in(_request(), "udp")
    metrics.message_in(_request("BYE"), "tcp")
    metrics.message_out(_response(180), "udp")
    metrics.message_out(_response(183), "udp")
    metrics.message_out(_response(486), "tls")
    total = "sbc_sip_messages_total"
    assert value(metrics, total, direction="in", method="INVITE", transport="udp") == 2
    assert value(metrics, total, direction="in", method="BYE", transport="tcp") == 1
    assert value(metrics, total, direction="out", method="1xx", transport="udp") == 2
    assert value(metrics, total, direction="out", method="4xx", transport="tls") == 1


def test_invented_methods_share_one_series_and_are_not_cached(metrics: Metrics) -> None:
    for name in ("FOO", "BAR", "BAZ"):
        metrics.message_in(_request(name), "udp")
    total = "sbc_sip_messages_total"
    assert value(metrics, total, direction="in", method="OTHER", transport="udp") == 3
    assert not metrics._sip_in  # nothing a peer invents grows the cache


def test_parse_errors_timeouts_rejections_blocks(metrics: Metrics) -> None:
    metrics.parse_error("udp")
    metrics.transaction_failed("INVITE", "timeout")
    metrics.transaction_failed("XYZ", "transport")
    metrics.admission_rejected("max_calls")
    metrics.admission_rejected("max_calls")
    metrics.security_blocked("source", "flood")
    assert value(metrics, "sbc_sip_parse_errors_total", transport="udp") == 1
    failures = "sbc_sip_transaction_failures_total"
    assert value(metrics, failures, method="INVITE", kind="timeout") == 1
    assert value(metrics, failures, method="OTHER", kind="transport") == 1
    assert value(metrics, "sbc_admission_rejections_total", rule="max_calls") == 2
    assert value(metrics, "sbc_security_blocks_total", kind="source", reason="flood") == 1


# ---------------------------------------------------------------------- calls


def test_call_attempts_outcomes_and_duration(metrics: Metrics) -> None:
    metrics.call_attempt("outbound")
    metrics.call_attempt("outbound")
    metrics.call_ended(_Cdr("outbound", 200, 10.0, 12.0, 72.0))
    metrics.call_ended(_Cdr("outbound", 486, 10.0, None, 11.0))
    assert value(metrics, "sbc_call_attempts_total", direction="outbound") == 2
    outcomes = "sbc_call_outcomes_total"
    assert value(metrics, outcomes, direction="outbound", status_class="2xx") == 1
    assert value(metrics, outcomes, direction="outbound", status_class="4xx") == 1
    # Only the answered call has a duration: 60 s.
    assert value(metrics, "sbc_call_duration_seconds_count", direction="outbound") == 1
    assert value(metrics, "sbc_call_duration_seconds_sum", direction="outbound") == 60.0
    assert value(metrics, "sbc_call_duration_seconds_bucket", direction="outbound", le="30.0") == 0
    assert value(metrics, "sbc_call_duration_seconds_bucket", direction="outbound", le="60.0") == 1


def test_setup_times_per_stage(metrics: Metrics) -> None:
    metrics.call_progress("inbound", 0.3)
    metrics.call_answered("inbound", 4.0)
    hist = "sbc_call_setup_seconds_bucket"
    assert value(metrics, hist, direction="inbound", stage="progress", le="0.25") == 0
    assert value(metrics, hist, direction="inbound", stage="progress", le="0.5") == 1
    assert value(metrics, hist, direction="inbound", stage="answer", le="3.0") == 0
    assert value(metrics, hist, direction="inbound", stage="answer", le="5.0") == 1


def test_bucket_ranges_fit_sip_and_mos() -> None:
    assert SETUP_BUCKETS[0] == 0.01 and SETUP_BUCKETS[-1] == 30.0
    assert list(SETUP_BUCKETS) == sorted(SETUP_BUCKETS)
    assert MOS_BUCKETS[0] == 1.0 and MOS_BUCKETS[-1] == 4.5
    assert list(MOS_BUCKETS) == sorted(MOS_BUCKETS)


def test_active_calls_read_live(metrics: Metrics) -> None:
    live: dict[tuple[str, str], int] = {("carrier", "outbound"): 2}
    metrics.watch_calls(lambda: live)
    assert value(metrics, "sbc_calls_active", trunk="carrier", direction="outbound") == 2
    live[("carrier", "outbound")] = 0
    live[("pbx1", "inbound")] = 1
    assert value(metrics, "sbc_calls_active", trunk="carrier", direction="outbound") == 0
    assert value(metrics, "sbc_calls_active", trunk="pbx1", direction="inbound") == 1


def test_service_stats_read_live(metrics: Metrics) -> None:
    stats = {"calls": 3, "transactions": 7, "media_sessions": 2, "media_ports_in_use": 8}
    metrics.watch_service(lambda: {**stats, "new_stat": 1})
    assert value(metrics, "sbc_calls_live") == 3
    assert value(metrics, "sbc_sip_transactions_live") == 7
    assert value(metrics, "sbc_media_sessions_active") == 2
    assert value(metrics, "sbc_media_ports_in_use") == 8
    assert "sbc_new_stat" not in metrics.metric_names()


# ---------------------------------------------------------------------- trunks, guard


def test_trunk_and_registration_states(metrics: Metrics) -> None:
    states = {
        "carrier": "up",
        "carrier 192.0.2.5:5060": "up",
        "carrier 192.0.2.6:5060": "down",
        "backup": "down",
        "carrier sip:100@carrier.example": "registered",
    }
    metrics.watch_trunks(lambda: states)
    assert value(metrics, "sbc_trunk_up", trunk="carrier") == 1
    assert value(metrics, "sbc_trunk_up", trunk="backup") == 0
    gateway = "sbc_trunk_gateway_up"
    assert value(metrics, gateway, trunk="carrier", gateway="192.0.2.6:5060") == 0
    reg = "sbc_registration_state"
    aor = "sip:100@carrier.example"
    assert value(metrics, reg, trunk="carrier", aor=aor, state="registered") == 1
    assert value(metrics, reg, trunk="carrier", aor=aor, state="failed") == 0
    states["carrier sip:100@carrier.example"] = "failed"
    assert value(metrics, reg, trunk="carrier", aor=aor, state="registered") == 0
    assert value(metrics, reg, trunk="carrier", aor=aor, state="failed") == 1


def test_active_blocks_read_live(metrics: Metrics) -> None:
    blocks = [_Block("source", "flood"), _Block("source", "flood"), _Block("username", "auth")]
    metrics.watch_blocks(lambda: blocks)
    active = "sbc_security_blocks_active"
    assert value(metrics, active, kind="source", reason="flood") == 2
    assert value(metrics, active, kind="username", reason="auth") == 1
    blocks.clear()
    assert value(metrics, active, kind="source", reason="flood") is None


def test_transport_counters_read_live(metrics: Metrics) -> None:
    counters = {"refused_per_ip_limit": 4, "idle_closed": 0}
    metrics.watch_transport(lambda: counters)
    events = "sbc_transport_events_total"
    assert value(metrics, events, event="refused_per_ip_limit") == 4
    counters["idle_closed"] = 9
    assert value(metrics, events, event="idle_closed") == 9


# ---------------------------------------------------------------------- media


def test_media_deltas_accumulate_per_worker(metrics: Metrics) -> None:
    metrics.media_deltas(0, {"packets": 100, "bytes": 17200, "dropped_source": 3})
    metrics.media_deltas(0, {"packets": 50, "dropped_no_remote": 1, "future_counter": 5})
    metrics.media_deltas(1, {"packets": 7, "send_errors": 2})
    assert value(metrics, "sbc_media_packets_total", worker="0") == 150
    assert value(metrics, "sbc_media_packets_total", worker="1") == 7
    assert value(metrics, "sbc_media_bytes_total", worker="0") == 17200
    dropped = "sbc_media_packets_dropped_total"
    assert value(metrics, dropped, worker="0", reason="source") == 3
    assert value(metrics, dropped, worker="0", reason="no_remote") == 1
    assert value(metrics, "sbc_media_send_errors_total", worker="1") == 2


def test_media_quality_at_teardown(metrics: Metrics) -> None:
    metrics.media_quality({"packets": 1000, "loss_fraction": 0.02, "jitter_ms": 12.0, "mos": 4.1})
    metrics.media_quality({"packets": 10, "loss_fraction": -0.1, "jitter_ms": 1.0, "mos": None})
    metrics.media_quality({"packets": 0, "loss_fraction": 0.0, "jitter_ms": 0.0, "mos": None})
    assert value(metrics, "sbc_media_packet_loss_ratio_count") == 2
    assert value(metrics, "sbc_media_packet_loss_ratio_bucket", le="0.0") == 1  # clamped
    assert value(metrics, "sbc_media_jitter_seconds_bucket", le="0.01") == 1
    assert value(metrics, "sbc_media_jitter_seconds_bucket", le="0.02") == 2
    assert value(metrics, "sbc_media_mos_count") == 1
    assert value(metrics, "sbc_media_mos_bucket", le="4.0") == 0
    assert value(metrics, "sbc_media_mos_bucket", le="4.2") == 1


def test_media_workers_read_live(metrics: Metrics) -> None:
    workers = [_Worker(0, True, 3, 4, 0), _Worker(1, False, 0, 0, 2)]
    metrics.watch_workers(lambda: workers)
    assert value(metrics, "sbc_media_worker_up", worker="0") == 1
    assert value(metrics, "sbc_media_worker_up", worker="1") == 0
    assert value(metrics, "sbc_media_streams_active", worker="0") == 4
    assert value(metrics, "sbc_media_worker_sessions", worker="0") == 3
    assert value(metrics, "sbc_media_worker_restarts_total", worker="1") == 2


# ---------------------------------------------------------------------- exposition


def test_render_parses_and_names_follow_conventions(metrics: Metrics) -> None:
    metrics.message_in(_request(), "udp")
    metrics.call_answered("outbound", 1.0)
    metrics.watch_trunks(lambda: {"carrier": "up"})
    families = list(text_string_to_metric_families(metrics.render().decode()))
    names = {family.name for family in families}
    assert "sbc_sip_messages" in names and "sbc_call_setup_seconds" in names
    assert any(name.startswith("process_") for name in names)  # ProcessCollector
    for name in names:
        assert name.startswith(("sbc_", "process_")), name


def test_metric_names_lists_selectable_series(metrics: Metrics) -> None:
    names = metrics.metric_names()
    # Listed even with no samples yet and no live source watched.
    for expected in (
        "sbc_sip_messages_total",
        "sbc_call_setup_seconds_bucket",
        "sbc_call_duration_seconds_count",
        "sbc_calls_active",
        "sbc_registration_state",
        "sbc_trunk_up",
        "sbc_media_mos_bucket",
        "sbc_media_worker_restarts_total",
        "sbc_security_blocks_active",
        "process_resident_memory_bytes",
    ):
        assert expected in names, expected
    assert all(name.startswith(("sbc_", "process_")) for name in names)


def test_registries_are_independent() -> None:
    first, second = Metrics(process=False), Metrics(process=False)
    first.call_attempt("inbound")
    assert value(first, "sbc_call_attempts_total", direction="inbound") == 1
    assert value(second, "sbc_call_attempts_total", direction="inbound") is None


def _scrape(port: int) -> bytes:
    """GET /metrics, retrying the connect a few times (the server thread is starting)."""
    last: Exception | None = None
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200
            return response.read()
        except ConnectionError as exc:
            last = exc
        finally:
            connection.close()
    raise AssertionError(f"metrics endpoint never answered: {last}")


def test_http_scrape_on_loopback(metrics: Metrics) -> None:
    metrics.call_attempt("outbound")
    port = metrics.start_http("127.0.0.1", 0)
    try:
        assert port > 0
        body = _scrape(port).decode()
    finally:
        metrics.stop_http()
    assert 'sbc_call_attempts_total{direction="outbound"} 1.0' in body


def test_scrape_from_another_thread_reads_on_the_loop(metrics: Metrics) -> None:
    seen: list[Any] = []

    def states() -> dict[str, str]:
        seen.append(asyncio.get_running_loop())  # raises off the loop thread
        return {"carrier": "up"}

    async def scrape() -> bytes:
        metrics.bind_loop(asyncio.get_running_loop())
        return await asyncio.get_running_loop().run_in_executor(None, metrics.render)

    metrics.watch_trunks(states)
    body = asyncio.run(scrape())
    assert b'sbc_trunk_up{trunk="carrier"} 1.0' in body
    assert len(seen) == 1


def test_cost_of_per_message_count(metrics: Metrics, capsys: pytest.CaptureFixture[str]) -> None:
    request, response = _request(), _response(200)
    metrics.message_in(request, "udp")
    metrics.message_out(response, "udp")
    rounds = 100_000
    seconds = timeit.timeit(lambda: metrics.message_in(request, "udp"), number=rounds)
    per_response = timeit.timeit(lambda: metrics.message_out(response, "udp"), number=rounds)
    with capsys.disabled():
        print(
            f"\nmetrics.message_in: {seconds / rounds * 1e9:.0f} ns/request, "
            f"message_out: {per_response / rounds * 1e9:.0f} ns/response (lambda call included)"
        )
