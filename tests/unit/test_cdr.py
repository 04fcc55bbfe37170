"""CDRs: the record built from a Call's Cdr, the two-step write (call end, then media
quality), batching and shutdown of the background writer, and `sbc cdr export`."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
import timeit
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from media.pipeline import SrtpCounters, StreamReport
from media.quality import QualityReport
from sbc import cli
from sbc.b2bua.api import Cdr
from sbc.cdr import (
    CdrError,
    CdrRecord,
    CdrWriter,
    CdrWriterClosed,
    MediaQuality,
    Outcome,
    QualityUpdate,
    SqliteCdrStore,
    WallClock,
    open_readonly,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _cdr(**changes: Any) -> Cdr:
    values: dict[str, Any] = dict(
        call_key="node1-42",
        direction="outbound",
        a_call_id="a-callid@pbx",
        b_call_id="b-callid@sbc",
        caller="201",
        callee="0301234567",
        callee_rewritten="+49301234567",
        target="carrier1",
        start=100.0,
        answer=103.5,
        end=163.5,
        status=200,
        ended_by="b",
        reason="Normal call clearing",
    )
    values.update(changes)
    return Cdr(**values)


def _record(n: int = 0, **changes: Any) -> CdrRecord:
    record = CdrRecord.from_cdr(
        _cdr(call_key=f"node1-{n}", **changes),
        WallClock(T0 - 100.0),
        origin="pbx-main",
        caller_rewritten="+4930999201",
        record_id=f"rec-{n}",
    )
    return record


def _quality(source: str, codec: str = "PCMA", mos: float | None = 4.3) -> QualityReport:
    values: dict[str, Any] = {f.name: 0 for f in fields(QualityReport)}
    values.update(
        source=source,
        ssrc=1234,
        codec=codec,
        duration_s=60.0,
        packets=3000,
        expected=3010,
        lost=10,
        loss_fraction=10 / 3010,
        jitter_ms=2.5,
        max_jitter_ms=7.0,
        rtt_ms=42.0,
        remote_loss_fraction=None,
        remote_cumulative_lost=None,
        remote_jitter_ms=None,
        sender_packets=None,
        sender_octets=None,
        r_factor=None,
        mos=mos,
    )
    return QualityReport(**values)


def _streams(srtp_a: bool = True) -> tuple[StreamReport, ...]:
    counters = SrtpCounters("AES_CM_128_HMAC_SHA1_80", 3, 0, 0, 0, 0)
    return (
        StreamReport(
            stream=0,
            from_a=_quality("a", "PCMA", 4.3),
            from_b=_quality("b", "PCMA", 3.1),
            srtp_a=counters if srtp_a else None,
            srtp_b=None,
            digits_heard=0,
            digits_played=0,
        ),
    )


def _read(path: Path) -> list[CdrRecord]:
    store = open_readonly(path)
    try:
        return list(store.read())
    finally:
        store.close()


# ----- the record --------------------------------------------------------------------------


def test_record_from_cdr_converts_the_monotonic_clock_and_names_both_sides() -> None:
    record = _record(7)
    assert (record.start, record.answer, record.end) == (T0, T0 + 3.5, T0 + 63.5)
    assert record.duration == 60.0
    assert record.setup_time == 3.5
    assert (record.trunk, record.pbx) == ("carrier1", "pbx-main")
    assert record.outcome is Outcome.ANSWERED
    assert record.caller_rewritten == "+4930999201"
    inbound = CdrRecord.from_cdr(
        _cdr(direction="inbound", target="pbx-main"), WallClock(0), origin="carrier1"
    )
    assert (inbound.trunk, inbound.pbx) == ("carrier1", "pbx-main")
    assert inbound.caller_rewritten == inbound.caller  # no rewriting given: as received


def test_wall_clock_takes_its_offset_once() -> None:
    clock = WallClock.capture(monotonic=lambda: 10.0, wall=lambda: T0)
    assert clock.to_wall(12.5) == T0 + 2.5


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({}, Outcome.ANSWERED),
        ({"answer": None, "status": 487, "ended_by": "a"}, Outcome.CANCELLED),
        ({"answer": None, "status": 486, "ended_by": "b"}, Outcome.FAILED),
        ({"answer": None, "status": 408, "ended_by": "sbc"}, Outcome.FAILED),
    ],
)
def test_outcome(changes: dict[str, Any], outcome: Outcome) -> None:
    record = _record(**changes)
    assert record.outcome is outcome
    if outcome is not Outcome.ANSWERED:
        assert record.duration == 0.0 and record.setup_time is None


def test_rejected_record_names_its_rule() -> None:
    record = CdrRecord.rejected(
        at=T0,
        status=403,
        reason="Calls to premium numbers are not allowed",
        rule="deny_prefix",
        a_call_id="x@pbx",
        caller="201",
        callee="0900123",
        call_key="node1-9",
        direction="outbound",
        pbx="pbx-main",
    )
    assert record.outcome is Outcome.REJECTED
    assert (record.rule, record.ended_by, record.duration) == ("deny_prefix", "sbc", 0.0)


# ----- the writer --------------------------------------------------------------------------


def test_every_field_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    full = _record(1, b_call_id=None).with_media(MediaQuality.from_streams(_streams()))
    full = CdrRecord(**{**{f.name: getattr(full, f.name) for f in fields(full)}, "rule": "r1"})
    bare = _record(2, answer=None, status=503, ended_by="sbc")
    writer = CdrWriter.sqlite(path)
    writer.call_ended(full)
    writer.call_ended(bare)
    writer.close()
    assert _read(path) == [full, bare]
    assert full.srtp_a is True and full.srtp_b is False and full.codec_b == "PCMA"


def test_quality_arrives_after_the_record_and_updates_the_same_row(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter.sqlite(path, flush_interval=0.01)
    writer.call_ended(_record(1))
    _wait(lambda: writer.written == 1)  # the row exists before the media closes
    writer.media_quality("node1-1", _streams(srtp_a=False))
    writer.close()
    [record] = _read(path)
    assert record.quality == MediaQuality.from_streams(_streams(srtp_a=False))
    assert (record.codec_a, record.codec_b, record.srtp_a, record.srtp_b) == (
        "PCMA",
        "PCMA",
        False,
        False,
    )
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*), mos_min, loss_max FROM cdr").fetchone() == (
        1,
        3.1,
        pytest.approx(10 / 3010),
    )


def test_quality_before_its_record_is_merged_when_the_record_comes(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter.sqlite(path, batch_size=1)  # each item its own batch
    writer.media_quality("node1-1", _streams())
    writer.call_ended(_record(1))
    writer.close()
    [record] = _read(path)
    assert record.quality is not None and len(record.quality) == 2


def test_records_are_written_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter.sqlite(path, batch_size=100, flush_interval=30.0)
    for n in range(250):
        writer.call_ended(_record(n))
    writer.close()
    assert (writer.written, writer.batches) == (250, 3)


def test_a_partial_batch_is_written_after_the_flush_interval(tmp_path: Path) -> None:
    writer = CdrWriter.sqlite(tmp_path / "cdr.sqlite", batch_size=100, flush_interval=0.02)
    writer.call_ended(_record(1))
    _wait(lambda: writer.written == 1)  # no close(): time alone flushed it
    writer.close()


def test_close_writes_a_queue_of_ten_thousand_records(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter.sqlite(path)
    for n in range(10_000):
        writer.call_ended(_record(n))
    writer.close()
    assert writer.dropped == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(DISTINCT record_id) FROM cdr").fetchone() == (10_000,)


def test_wal_mode_synchronous_normal_schema_version_and_indexes(tmp_path: Path) -> None:
    store = SqliteCdrStore(tmp_path / "cdr.sqlite")
    db = store.connection
    assert store.journal_mode() == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert [tuple(r) for r in db.execute("SELECT version FROM schema_version")] == [(1,)]
    indexes = {row[1] for row in db.execute("PRAGMA index_list(cdr)")}
    assert {"cdr_start_time", "cdr_call_key"} <= indexes
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    store.close()
    with pytest.raises(CdrError, match="schema version 99"):
        SqliteCdrStore(tmp_path / "cdr.sqlite")


def test_closed_twice_or_used_after_close_is_an_error(tmp_path: Path) -> None:
    writer = CdrWriter.sqlite(tmp_path / "cdr.sqlite")
    writer.close()
    with pytest.raises(CdrWriterClosed, match="closed twice"):
        writer.close()
    with pytest.raises(CdrWriterClosed, match="after close"):
        writer.call_ended(_record())
    with pytest.raises(CdrWriterClosed):
        writer.media_quality("node1-0", ())


class _StuckStore:
    """A disk that does not answer until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.records: list[CdrRecord] = []

    def write(self, records: Sequence[CdrRecord], updates: Sequence[QualityUpdate]) -> list[str]:
        self.release.wait(10)
        self.records.extend(records)
        return []

    def close(self) -> None:
        pass


def test_a_full_queue_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    store = _StuckStore()
    writer = CdrWriter(lambda: store, batch_size=1, max_queue=5)
    started = time.perf_counter()
    for n in range(50):
        writer.call_ended(_record(n))
    assert time.perf_counter() - started < 1.0  # never waited for the stuck disk
    assert 40 <= writer.dropped <= 45
    assert "cdr.queue_full" in caplog.text
    store.release.set()
    writer.close()
    assert len(store.records) + writer.dropped == 50


def test_call_ended_is_cheap(tmp_path: Path) -> None:
    writer = CdrWriter.sqlite(tmp_path / "cdr.sqlite", max_queue=1_000_000)
    record = _record(1)
    cdr = _cdr()
    clock = WallClock(0.0)
    number = 20_000
    put = timeit.timeit(lambda: writer.call_ended(record), number=number) / number
    build = (
        timeit.timeit(lambda: CdrRecord.from_cdr(cdr, clock, origin="pbx-main"), number=number)
        / number
    )
    writer.close()
    print(f"\ncall_ended: {put * 1e6:.2f} us/record; from_cdr: {build * 1e6:.2f} us/record")


# ----- export ------------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter.sqlite(path)
    for n in range(3):  # started 2023-11-14T22:13:20Z + 0, 1, 2 hours
        record = _record(n, start=100.0 + 3600 * n, answer=None, end=110.0 + 3600 * n)
        writer.call_ended(record)
    writer.media_quality("node1-2", _streams())
    writer.close()
    return path


def test_export_csv_since_until(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(
        [
            "cdr",
            "export",
            "--db",
            str(database),
            "--since",
            "2023-11-14T23:00:00Z",
            "--until",
            "2023-11-15T00:13:20+00:00",
        ]
    )
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["record_id"] for row in rows] == ["rec-1"]
    assert rows[0]["start_iso"] == "2023-11-14T23:13:20.000+00:00"
    assert rows[0]["outcome"] == "failed" and rows[0]["trunk"] == "carrier1"


def test_export_json(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cdr", "export", "--db", str(database), "--since", "2023-11-14T23:00", "--format"]
    assert cli.main([*argv, "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["record_id"] for r in records] == ["rec-1", "rec-2"]
    assert records[0]["quality"] is None
    assert [q["mos"] for q in records[1]["quality"]] == [4.3, 3.1]
    assert records[1]["srtp_a"] is True


def test_export_empty_range_prints_the_header(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["cdr", "export", "--db", str(database), "--since", "2030-01-01"]) == 0
    assert capsys.readouterr().out.startswith("record_id,call_key,")


def test_export_of_a_missing_database_fails_without_creating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite"
    assert cli.main(["cdr", "export", "--db", str(missing), "--since", "2023-01-01"]) == 1
    assert "no such CDR database" in capsys.readouterr().err
    assert not missing.exists()


def test_export_rejects_a_bad_date(database: Path) -> None:
    with pytest.raises(SystemExit):
        cli.main(["cdr", "export", "--db", str(database), "--since", "yesterday"])


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
