"""Call detail records: one row per call attempt (answered, failed, rejected, cancelled), what
an operator bills and troubleshoots from, written to SQLite by a background thread so the
event loop never waits for the disk.

Ordering guarantee: a record reaches the store in two steps. `CdrWriter.call_ended(record)`
is queued when the call ends; `CdrWriter.media_quality(call_key, streams)` is queued later,
when the relay has closed the media session and returned its statistics. Both go through one
FIFO queue drained by one thread, so the quality update is applied after the row exists. If
the update ever arrives first (or in the same batch), it is kept and merged into the row when
the record comes; an update whose record never comes is logged at close (`cdr.quality_orphan`).
A call whose media never closes cleanly keeps NULL quality columns.

Backends: SQLite (WAL, synchronous=NORMAL; `cdr: {path: ...}`) and PostgreSQL
(sbc/cdr_postgres.py, psycopg 3, imported only when `cdr: {dsn: ...}` is configured). A new
backend implements the `CdrStore` protocol and is handed to `CdrWriter`.
"""

from __future__ import annotations

import csv
import enum
import json
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from sbc.log import get_logger

if TYPE_CHECKING:
    from media.pipeline import StreamReport
    from sbc.b2bua.api import Cdr

log = get_logger("cdr")

SCHEMA_VERSION = 1


class CdrError(Exception):
    """A CDR store or writer cannot do what was asked (closed, schema mismatch)."""


class Outcome(enum.Enum):
    ANSWERED = "answered"
    FAILED = "failed"  # no answer: busy, unreachable, timeout, every target failed
    REJECTED = "rejected"  # refused by the SBC itself before any target (routing, policy)
    CANCELLED = "cancelled"  # the caller gave up before the answer (CANCEL -> 487)


@dataclass(frozen=True, slots=True)
class WallClock:
    """Converts the adapter's monotonic clock (loop.time()) to UNIX time. The offset is taken
    once: converting each reading with time.time() would let an NTP step reorder records."""

    offset: float  # wall - monotonic

    @classmethod
    def capture(
        cls, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> WallClock:
        return cls(wall() - monotonic())

    def to_wall(self, monotonic_time: float) -> float:
        return monotonic_time + self.offset


@dataclass(frozen=True, slots=True)
class MediaQuality:
    """Quality of one direction of one stream: `source` 'a' is media sent by leg A's peer."""

    stream: int
    source: str  # 'a' | 'b'
    codec: str
    packets: int
    lost: int
    loss: float  # fraction in [0, 1]
    jitter_ms: float
    rtt_ms: float | None
    mos: float | None
    srtp_auth_failures: int | None  # None: that leg is plain RTP

    @classmethod
    def from_streams(cls, streams: Iterable[StreamReport]) -> tuple[MediaQuality, ...]:
        items = []
        for stream in streams:
            for source, report, srtp in (
                ("a", stream.from_a, stream.srtp_a),
                ("b", stream.from_b, stream.srtp_b),
            ):
                items.append(
                    cls(
                        stream=stream.stream,
                        source=source,
                        codec=report.codec,
                        packets=report.packets,
                        lost=report.lost,
                        loss=report.loss_fraction,
                        jitter_ms=report.jitter_ms,
                        rtt_ms=report.rtt_ms,
                        mos=report.mos,
                        srtp_auth_failures=None if srtp is None else srtp.auth_failures,
                    )
                )
        return tuple(items)


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One call attempt. Times are UNIX timestamps (s). Fields left None at call end (codecs,
    SRTP, quality) may be filled by the media update."""

    record_id: str
    call_key: str  # '' for a request rejected before routing gave it a key
    direction: str  # 'outbound' | 'inbound' | '' (rejected before routing)
    a_call_id: str
    b_call_id: str | None
    caller: str
    callee: str
    caller_rewritten: str
    callee_rewritten: str
    trunk: str | None
    pbx: str | None
    start: float
    answer: float | None
    end: float
    status: int
    ended_by: str  # 'a' | 'b' | 'sbc'
    reason: str
    outcome: Outcome
    rule: str | None = None  # the policy/routing rule of a rejection
    codec_a: str | None = None
    codec_b: str | None = None
    srtp_a: bool | None = None
    srtp_b: bool | None = None
    quality: tuple[MediaQuality, ...] | None = None  # None: not (yet) reported

    @property
    def duration(self) -> float:
        """Billable seconds: answer to end; 0 for an unanswered call."""
        return 0.0 if self.answer is None else max(0.0, self.end - self.answer)

    @property
    def setup_time(self) -> float | None:
        """INVITE to answer; None for an unanswered call."""
        return None if self.answer is None else max(0.0, self.answer - self.start)

    @classmethod
    def from_cdr(
        cls,
        cdr: Cdr,
        clock: WallClock,
        *,
        origin: str,
        caller_rewritten: str | None = None,
        record_id: str | None = None,
    ) -> CdrRecord:
        """From the Call's Cdr and the setup: `origin` is CallSetup.origin (the PBX of an
        outbound call, the trunk of an inbound one); `cdr.target` is the other side."""
        outbound = cdr.direction == "outbound"
        return cls(
            record_id=record_id or new_record_id(),
            call_key=cdr.call_key,
            direction=cdr.direction,
            a_call_id=cdr.a_call_id,
            b_call_id=cdr.b_call_id,
            caller=cdr.caller,
            callee=cdr.callee,
            caller_rewritten=cdr.caller if caller_rewritten is None else caller_rewritten,
            callee_rewritten=cdr.callee_rewritten,
            trunk=cdr.target if outbound else origin,
            pbx=origin if outbound else cdr.target,
            start=clock.to_wall(cdr.start),
            answer=None if cdr.answer is None else clock.to_wall(cdr.answer),
            end=clock.to_wall(cdr.end),
            status=cdr.status,
            ended_by=cdr.ended_by,
            reason=cdr.reason,
            outcome=_outcome(cdr),
        )

    @classmethod
    def rejected(
        cls,
        *,
        at: float,
        status: int,
        reason: str,
        rule: str,
        a_call_id: str,
        caller: str,
        callee: str,
        call_key: str = "",
        direction: str = "",
        callee_rewritten: str | None = None,
        trunk: str | None = None,
        pbx: str | None = None,
        record_id: str | None = None,
    ) -> CdrRecord:
        """A call the SBC refused itself (routing or policy); `at` is UNIX time."""
        return cls(
            record_id=record_id or new_record_id(),
            call_key=call_key,
            direction=direction,
            a_call_id=a_call_id,
            b_call_id=None,
            caller=caller,
            callee=callee,
            caller_rewritten=caller,
            callee_rewritten=callee if callee_rewritten is None else callee_rewritten,
            trunk=trunk,
            pbx=pbx,
            start=at,
            answer=None,
            end=at,
            status=status,
            ended_by="sbc",
            reason=reason,
            outcome=Outcome.REJECTED,
            rule=rule,
        )

    def with_media(self, quality: tuple[MediaQuality, ...]) -> CdrRecord:
        """The record with the media report merged: codecs and SRTP from the first stream
        where the call end did not know them."""
        first = {q.source: q for q in reversed(quality)}  # lowest stream wins per source
        a, b = first.get("a"), first.get("b")
        return replace(
            self,
            quality=quality,
            codec_a=self.codec_a or (a.codec if a is not None and a.codec else None),
            codec_b=self.codec_b or (b.codec if b is not None and b.codec else None),
            srtp_a=_known(self.srtp_a, a),
            srtp_b=_known(self.srtp_b, b),
        )


def _known(current: bool | None, quality: MediaQuality | None) -> bool | None:
    if current is not None or quality is None:
        return current
    return quality.srtp_auth_failures is not None


def _outcome(cdr: Cdr) -> Outcome:
    if cdr.answer is not None:
        return Outcome.ANSWERED
    # RFC 3261 §9.2: the INVITE of a cancelled call is answered 487 on leg A.
    if cdr.status == 487 and cdr.ended_by == "a":
        return Outcome.CANCELLED
    return Outcome.FAILED


def new_record_id() -> str:
    return uuid.uuid4().hex


# ----- storage -------------------------------------------------------------------------------

_COLUMNS = (
    "record_id",
    "call_key",
    "direction",
    "a_call_id",
    "b_call_id",
    "caller",
    "callee",
    "caller_rewritten",
    "callee_rewritten",
    "trunk",
    "pbx",
    "start_time",
    "answer_time",
    "end_time",
    "duration",
    "setup_time",
    "status",
    "ended_by",
    "reason",
    "outcome",
    "rule",
    "codec_a",
    "codec_b",
    "srtp_a",
    "srtp_b",
    "mos_min",
    "loss_max",
    "quality",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cdr (
    record_id TEXT PRIMARY KEY,
    call_key TEXT NOT NULL,
    direction TEXT NOT NULL,
    a_call_id TEXT NOT NULL,
    b_call_id TEXT,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    caller_rewritten TEXT NOT NULL,
    callee_rewritten TEXT NOT NULL,
    trunk TEXT,
    pbx TEXT,
    start_time REAL NOT NULL,
    answer_time REAL,
    end_time REAL NOT NULL,
    duration REAL NOT NULL,
    setup_time REAL,
    status INTEGER NOT NULL,
    ended_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    rule TEXT,
    codec_a TEXT,
    codec_b TEXT,
    srtp_a INTEGER,
    srtp_b INTEGER,
    mos_min REAL,
    loss_max REAL,
    quality TEXT
);
CREATE INDEX IF NOT EXISTS cdr_start_time ON cdr (start_time);
CREATE INDEX IF NOT EXISTS cdr_call_key ON cdr (call_key);
"""


def _row(record: CdrRecord) -> tuple[Any, ...]:
    quality = record.quality
    moses = [q.mos for q in quality or () if q.mos is not None]
    losses = [q.loss for q in quality or () if q.packets]
    return (
        record.record_id,
        record.call_key,
        record.direction,
        record.a_call_id,
        record.b_call_id,
        record.caller,
        record.callee,
        record.caller_rewritten,
        record.callee_rewritten,
        record.trunk,
        record.pbx,
        record.start,
        record.answer,
        record.end,
        record.duration,
        record.setup_time,
        record.status,
        record.ended_by,
        record.reason,
        record.outcome.value,
        record.rule,
        record.codec_a,
        record.codec_b,
        _bool_column(record.srtp_a),
        _bool_column(record.srtp_b),
        min(moses) if moses else None,  # the worst direction: what "bad call" queries want
        max(losses) if losses else None,
        None if quality is None else json.dumps([_quality_dict(q) for q in quality]),
    )


def _bool_column(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _quality_dict(quality: MediaQuality) -> dict[str, Any]:
    return {f.name: getattr(quality, f.name) for f in fields(quality)}


def _record(row: sqlite3.Row) -> CdrRecord:
    quality = row["quality"]  # JSON text in SQLite
    return record_from_row(row, None if quality is None else json.loads(quality))


def record_from_row(row: Any, quality: list[dict[str, Any]] | None) -> CdrRecord:
    """A record from a stored row (any store: columns by name) and its decoded quality."""
    return CdrRecord(
        record_id=row["record_id"],
        call_key=row["call_key"],
        direction=row["direction"],
        a_call_id=row["a_call_id"],
        b_call_id=row["b_call_id"],
        caller=row["caller"],
        callee=row["callee"],
        caller_rewritten=row["caller_rewritten"],
        callee_rewritten=row["callee_rewritten"],
        trunk=row["trunk"],
        pbx=row["pbx"],
        start=row["start_time"],
        answer=row["answer_time"],
        end=row["end_time"],
        status=row["status"],
        ended_by=row["ended_by"],
        reason=row["reason"],
        outcome=Outcome(row["outcome"]),
        rule=row["rule"],
        codec_a=row["codec_a"],
        codec_b=row["codec_b"],
        # SQLite keeps booleans as 0/1.
        srtp_a=None if row["srtp_a"] is None else bool(row["srtp_a"]),
        srtp_b=None if row["srtp_b"] is None else bool(row["srtp_b"]),
        quality=None if quality is None else tuple(MediaQuality(**item) for item in quality),
    )


@dataclass(frozen=True, slots=True)
class QualityUpdate:
    """The second step of a record: media statistics for the call `call_key`."""

    call_key: str
    quality: tuple[MediaQuality, ...]


class CdrStore(Protocol):
    """A backend: used only from the writer thread, so it needs no locking."""

    def write(self, records: Sequence[CdrRecord], updates: Sequence[QualityUpdate]) -> list[str]:
        """Insert `records`, then apply `updates` in order; returns the call keys of the
        updates that found no record."""
        ...

    def close(self) -> None: ...


class SqliteCdrStore:
    """CDRs in one SQLite file (WAL: exports read while the SBC writes)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        if readonly:  # exports: never create a file or change the database
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._check_version()
            return
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupt.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create_schema()

    def _create_schema(self) -> None:
        with self._db:
            self._db.executescript(_SCHEMA)
            if self._db.execute("SELECT version FROM schema_version").fetchone() is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        self._check_version()

    def _check_version(self) -> None:
        try:
            found = self._db.execute("SELECT version FROM schema_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CdrError(f"not a CDR database: {exc}") from exc
        if found is None or found[0] != SCHEMA_VERSION:
            version = None if found is None else found[0]
            raise CdrError(
                f"CDR database schema version {version}, this SBC reads {SCHEMA_VERSION}"
            )

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def write(self, records: Sequence[CdrRecord], updates: Sequence[QualityUpdate]) -> list[str]:
        missing = []
        placeholders = ", ".join("?" * len(_COLUMNS))
        with self._db:  # one transaction per batch: one fsync-free WAL append
            self._db.executemany(
                f"INSERT OR REPLACE INTO cdr ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [_row(record) for record in records],
            )
            for update in updates:
                rows = self._db.execute(
                    "SELECT * FROM cdr WHERE call_key = ? AND call_key != ''", (update.call_key,)
                ).fetchall()
                if not rows:
                    missing.append(update.call_key)
                for row in rows:
                    merged = _record(row).with_media(update.quality)
                    self._db.execute(
                        f"REPLACE INTO cdr ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                        _row(merged),
                    )
        return missing

    def read(self, since: float | None = None, until: float | None = None) -> Iterator[CdrRecord]:
        """Records started in [since, until), oldest first."""
        sql = "SELECT * FROM cdr WHERE start_time >= ? AND start_time < ? ORDER BY start_time"
        low = float("-inf") if since is None else since
        high = float("inf") if until is None else until
        for row in self._db.execute(sql, (low, high)):
            yield _record(row)

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def open_readonly(path: str | Path) -> SqliteCdrStore:
    """For exports: never creates a file, never takes the writer's lock for long."""
    if not Path(path).is_file():
        raise CdrError(f"{path}: no such CDR database")
    return SqliteCdrStore(path, readonly=True)


# ----- writer ------------------------------------------------------------------------------


class CdrWriterClosed(CdrError):
    pass


_STOP = object()  # queued by close(): everything before it is written, then the thread ends
_FULL_LOG_INTERVAL = 10.0  # s between two cdr.queue_full lines: once is enough to alarm
_MAX_PENDING = 10_000  # quality updates waiting for their record


class CdrWriter:
    """Takes records on the event loop (a non-blocking queue put) and writes them in batches
    from a thread. If the disk cannot keep up and the queue is full, records are dropped and
    counted (`dropped`) with a `cdr.queue_full` warning: the event loop never waits."""

    def __init__(
        self,
        open_store: Callable[[], CdrStore],
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._closed = False
        self._dropped = 0
        self._last_full_log = float("-inf")
        self._pending: dict[str, QualityUpdate] = {}  # updates that came before their record
        self.written = 0
        self.batches = 0
        # The store is opened here so a bad path or schema fails at start-up, not later.
        self._store = open_store()
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    @classmethod
    def sqlite(cls, path: str | Path, **options: Any) -> CdrWriter:
        return cls(lambda: SqliteCdrStore(path), **options)

    @classmethod
    def postgres(cls, dsn: str, **options: Any) -> CdrWriter:
        """A PostgreSQL store: connected (and its schema created) here, so a bad DSN or an
        unreachable server fails at start-up. Raises CdrError without psycopg."""

        def open_store() -> CdrStore:
            from sbc.cdr_postgres import PostgresCdrStore  # optional dependency

            return PostgresCdrStore(dsn)

        return cls(open_store, **options)

    @property
    def dropped(self) -> int:
        return self._dropped

    def call_ended(self, record: CdrRecord) -> None:
        """Queue a record (hot path: one put, no I/O)."""
        self._put(record)

    def media_quality(self, call_key: str, streams: Sequence[StreamReport]) -> None:
        """Queue the media statistics of a call whose record was (or will be) queued."""
        self._put(QualityUpdate(call_key, MediaQuality.from_streams(streams)))

    def _put(self, item: CdrRecord | QualityUpdate) -> None:
        if self._closed:
            raise CdrWriterClosed("CDR writer is closed: no record can be queued after close()")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped += 1
            now = time.monotonic()
            if now - self._last_full_log >= _FULL_LOG_INTERVAL:
                self._last_full_log = now
                log.warning(
                    "cdr.queue_full",
                    dropped=self._dropped,
                    queued=self._queue.qsize(),
                    hint="the CDR disk cannot keep up; records are being lost",
                )

    def close(self) -> None:
        """Write everything queued, then stop. Blocks: from the event loop, run it in an
        executor (`await loop.run_in_executor(None, writer.close)`)."""
        if self._closed:
            raise CdrWriterClosed("CDR writer closed twice")
        self._closed = True
        self._queue.put(_STOP)  # may wait for room: shutdown is allowed to wait for the disk
        self._thread.join()
        for call_key in self._pending:
            log.warning("cdr.quality_orphan", call=call_key)
        self._store.close()
        if self._dropped:
            log.warning("cdr.dropped_total", dropped=self._dropped)

    def _run(self) -> None:
        while True:
            batch, stop = self._collect()
            if batch:
                self._write(batch)
            if stop:
                return

    def _collect(self) -> tuple[list[object], bool]:
        """Up to batch_size items, waiting at most flush_interval after the first one."""
        batch = [self._queue.get()]
        if batch[0] is _STOP:
            return [], True
        deadline = time.monotonic() + self._flush_interval
        while len(batch) < self._batch_size:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, batch: list[object]) -> None:
        records = [item for item in batch if isinstance(item, CdrRecord)]
        updates = [item for item in batch if isinstance(item, QualityUpdate)]
        # An update that came before its record is merged into it before the insert.
        records = [self._merge_pending(record) for record in records]
        try:
            missing = self._store.write(records, updates)
        except Exception as exc:  # the disk, not the call: log what is lost and go on
            log.error("cdr.write_failed", records=len(records), error=str(exc))
            return
        for update in updates:
            if update.call_key in missing:
                self._pending[update.call_key] = update
        while len(self._pending) > _MAX_PENDING:  # records lost upstream: forget the oldest
            orphan = next(iter(self._pending))
            del self._pending[orphan]
            log.warning("cdr.quality_orphan", call=orphan)
        self.written += len(records)
        self.batches += 1

    def _merge_pending(self, record: CdrRecord) -> CdrRecord:
        update = self._pending.pop(record.call_key, None) if self._pending else None
        return record if update is None else record.with_media(update.quality)


# ----- export ------------------------------------------------------------------------------


def export_dict(record: CdrRecord) -> dict[str, Any]:
    """A record as exported: columns as in the database, times also as ISO 8601 UTC."""
    values = dict(zip(_COLUMNS, _row(record), strict=True))
    values["srtp_a"] = record.srtp_a
    values["srtp_b"] = record.srtp_b
    values["quality"] = (
        None if record.quality is None else [_quality_dict(q) for q in record.quality]
    )
    for name in ("start_time", "answer_time", "end_time"):
        values[name.replace("_time", "_iso")] = _iso(values[name])
    return values


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def export_csv(records: Iterable[CdrRecord], out: TextIO) -> int:
    """CSV with a header line; quality as a JSON text cell. Returns the number of rows."""
    writer: csv.DictWriter[str] | None = None
    count = 0
    for record in records:
        values = export_dict(record)
        if values["quality"] is not None:
            values["quality"] = json.dumps(values["quality"])
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(values), lineterminator="\n")
            writer.writeheader()
        writer.writerow(values)
        count += 1
    if writer is None:  # no record: still a header, so scripts see the columns
        out.write(",".join(_export_names()) + "\n")
    return count


def export_json(records: Iterable[CdrRecord], out: TextIO) -> int:
    """A JSON array, one record per line (streams: no list of every record in memory)."""
    count = 0
    out.write("[")
    for record in records:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(export_dict(record)))
        count += 1
    out.write("\n]\n")
    return count


def _export_names() -> list[str]:
    return [*_COLUMNS, "start_iso", "answer_iso", "end_iso"]
