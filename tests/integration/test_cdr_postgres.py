"""CDRs in a real PostgreSQL: a throwaway cluster started by this module with Debian's initdb
and pg_ctl (installed by `make test`), one fresh database per test. Round trip field for
field, the two-step quality update, close() flushing a queue, `sbc cdr export --dsn`, and
the configuration (`cdr: {dsn: ...}` instead of `path`)."""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import psycopg  # in the `test` extra: a missing driver is an error, not a skip
import pytest

from sbc import cli
from sbc.cdr import CdrError, CdrRecord, CdrWriter, MediaQuality
from sbc.cdr_postgres import PostgresCdrStore, open_readonly
from sbc.config import ConfigError, load_config
from tests.unit.test_cdr import _record, _streams, _wait


def _binaries() -> tuple[str, str] | None:
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        pg_ctl = os.path.join(os.path.dirname(initdb), "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A cluster in a temp dir on 127.0.0.1 and an ephemeral port; yields the admin DSN."""
    found = _binaries()
    if found is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) missing: `make test` installs them"
        )
    initdb, pg_ctl = found
    # initdb refuses to run as root: as root the cluster belongs to the postgres user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = tempfile.mkdtemp(prefix="sbc-pg-")  # not under pytest's 0700 root-owned tmp
    data = os.path.join(base, "data")
    if as_user:
        shutil.chown(base, "postgres", "postgres")
    started = time.monotonic()
    subprocess.run(
        [*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    initialised = time.monotonic()
    port = 0
    for _attempt in range(3):  # the port may be taken between finding and binding it
        port = _free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-o", options, "-l", f"{base}/log", "-w", "start"],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            break
    else:
        log = Path(base, "log").read_text() if Path(base, "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {result.stderr}\n{log}")
    print(
        f"\npostgres: initdb {initialised - started:.2f}s,"
        f" start {time.monotonic() - initialised:.2f}s, port {port}"
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


_databases = itertools.count()


@pytest.fixture
def dsn(postgres_server: str) -> str:
    """A new, empty database for each test."""
    name = f"cdr_test_{next(_databases)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


def _read(dsn: str, **kwargs: Any) -> list[CdrRecord]:
    store = open_readonly(dsn)
    try:
        return list(store.read(**kwargs))
    finally:
        store.close()


def test_every_field_round_trips_with_postgres_types(dsn: str) -> None:
    full = _record(1, b_call_id=None).with_media(MediaQuality.from_streams(_streams()))
    full = CdrRecord(**{**{f.name: getattr(full, f.name) for f in fields(full)}, "rule": "r1"})
    bare = _record(2, answer=None, status=503, ended_by="sbc")
    rejected = CdrRecord.rejected(
        at=1_700_000_500.25,
        status=403,
        reason="Forbidden",
        rule="deny-premium",
        a_call_id="x@pbx",
        caller="201",
        callee="0900123",
    )
    writer = CdrWriter.postgres(dsn)
    for record in (full, bare, rejected):
        writer.call_ended(record)
    writer.close()
    assert _read(dsn) == [full, bare, rejected]
    for got, want in zip(_read(dsn), [full, bare, rejected], strict=True):
        for f in fields(CdrRecord):  # field for field, so a failure names the field
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    with psycopg.connect(dsn) as db:
        types: dict[str, str] = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'cdr'"
            ).fetchall()
        )
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        indexes = {
            r[0] for r in db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'cdr'")
        }
        row = db.execute(
            "SELECT srtp_a, srtp_b, quality->0->>'codec', mos_min FROM cdr WHERE record_id = 'rec-1'"
        ).fetchone()
    assert (types["start_time"], types["status"], types["srtp_a"], types["quality"]) == (
        "double precision",
        "integer",
        "boolean",
        "jsonb",
    )
    assert {"cdr_start_time", "cdr_call_key"} <= indexes
    assert row == (True, False, "PCMA", 3.1)


def test_quality_arrives_after_the_record_and_updates_the_same_row(dsn: str) -> None:
    writer = CdrWriter.postgres(dsn, flush_interval=0.01)
    writer.call_ended(_record(1))
    writer.call_ended(_record(2))
    _wait(lambda: writer.written == 2)  # the rows exist before the media closes
    writer.media_quality("node1-1", _streams(srtp_a=False))
    writer.media_quality("node1-99", _streams())  # no such record: kept as an orphan
    writer.close()
    first, second = _read(dsn)
    assert first.quality == MediaQuality.from_streams(_streams(srtp_a=False))
    assert (first.codec_a, first.codec_b, first.srtp_a, first.srtp_b) == (
        "PCMA",
        "PCMA",
        False,
        False,
    )
    assert first == _record(1).with_media(MediaQuality.from_streams(_streams(srtp_a=False)))
    assert second == _record(2)  # untouched
    with psycopg.connect(dsn) as db:
        totals = db.execute("SELECT count(*), min(mos_min), max(loss_max) FROM cdr").fetchone()
    assert totals is not None
    count, mos_min, loss_max = totals
    assert (count, mos_min) == (2, 3.1)
    assert loss_max == pytest.approx(10 / 3010)


def test_quality_before_its_record_is_merged_when_the_record_comes(dsn: str) -> None:
    writer = CdrWriter.postgres(dsn, batch_size=1)  # each item its own batch
    writer.media_quality("node1-1", _streams())
    writer.call_ended(_record(1))
    writer.close()
    [record] = _read(dsn)
    assert record.quality is not None and len(record.quality) == 2


def test_close_flushes_two_thousand_records_in_batches(dsn: str) -> None:
    writer = CdrWriter.postgres(dsn, batch_size=100, flush_interval=30.0)
    started = time.perf_counter()
    for n in range(2_000):
        writer.call_ended(_record(n))
    queued = time.perf_counter()
    writer.close()
    done = time.perf_counter()
    print(
        f"\n2000 records: queued in {(queued - started) * 1e3:.1f} ms,"
        f" written by close() in {(done - queued) * 1e3:.1f} ms"
    )
    assert (writer.written, writer.batches, writer.dropped) == (2_000, 20, 0)
    with psycopg.connect(dsn) as db:
        assert db.execute("SELECT count(DISTINCT record_id) FROM cdr").fetchone() == (2_000,)


def test_a_second_store_on_an_existing_schema_and_a_wrong_version(dsn: str) -> None:
    PostgresCdrStore(dsn).close()
    PostgresCdrStore(dsn).close()  # schema already there: reused, one version row
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(CdrError, match="schema version 99"):
        PostgresCdrStore(dsn)


def test_an_unreachable_server_fails_at_construction() -> None:
    with pytest.raises(CdrError, match="cannot connect") as info:
        CdrWriter.postgres(
            f"postgresql://nobody:secret@127.0.0.1:{_free_port()}/cdr?connect_timeout=2"
        )
    assert "secret" not in str(info.value)


@pytest.fixture
def exported(dsn: str) -> str:
    writer = CdrWriter.postgres(dsn)
    for n in range(3):  # started 2023-11-14T22:13:20Z + 0, 1, 2 hours
        writer.call_ended(_record(n, start=100.0 + 3600 * n, answer=None, end=110.0 + 3600 * n))
    writer.media_quality("node1-2", _streams())
    writer.close()
    return dsn


def test_export_csv_with_dsn(exported: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cdr", "export", "--dsn", exported, "--since", "2023-11-14T23:00:00Z"]
    assert cli.main([*argv, "--until", "2023-11-15T00:13:20+00:00"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["record_id"] for row in rows] == ["rec-1"]
    assert rows[0]["start_iso"] == "2023-11-14T23:13:20.000+00:00"
    assert rows[0]["outcome"] == "failed" and rows[0]["trunk"] == "carrier1"


def test_export_json_with_dsn(exported: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cdr", "export", "--dsn", exported, "--since", "2023-11-14T23:00", "--format"]
    assert cli.main([*argv, "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["record_id"] for r in records] == ["rec-1", "rec-2"]
    assert records[0]["quality"] is None
    assert [q["mos"] for q in records[1]["quality"]] == [4.3, 3.1]
    assert records[1]["srtp_a"] is True


def test_export_never_creates_a_schema(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cdr", "export", "--dsn", dsn, "--since", "2023-01-01"]) == 1
    assert "not a CDR database" in capsys.readouterr().err
    with psycopg.connect(dsn) as db:
        assert db.execute("SELECT to_regclass('cdr')").fetchone() == (None,)


def test_export_takes_db_or_dsn_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["cdr", "export", "--db", "x", "--dsn", "postgresql://h/d", "--since", "2023"])
    assert "not allowed with argument" in capsys.readouterr().err


# ----- configuration (no server needed) ----------------------------------------------------


def _config(tmp_path: Path, cdr: str) -> Path:
    example = Path(__file__).parents[2] / "config" / "sbc.yaml"
    text = example.read_text()
    start = text.index("\ncdr:")
    end = text.index("\nmetrics:")
    path = tmp_path / "sbc.yaml"
    path.write_text(text[:start] + f"\ncdr: {cdr}" + text[end:])
    for name in ("pbx.secret", "api.token"):  # whatever the example names next to itself
        source = example.parent / name
        if source.exists():
            shutil.copy(source, tmp_path / name)
    return path


def test_config_dsn_instead_of_path(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "{dsn: 'postgresql://sbc@db.example/cdr'}"))
    assert (config.cdr.path, config.cdr.dsn) == (None, "postgresql://sbc@db.example/cdr")


@pytest.mark.parametrize(
    ("cdr", "message"),
    [
        ("{path: cdr.sqlite, dsn: 'postgresql://h/d'}", "cdr.dsn"),
        ("{dsn: 'not a dsn'}", "cdr.dsn"),
        ("{batch_size: 10}", "cdr.path"),
    ],
)
def test_config_needs_exactly_one_of_path_and_dsn(tmp_path: Path, cdr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, cdr))
