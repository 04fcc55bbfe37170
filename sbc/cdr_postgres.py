"""CDRs in PostgreSQL: the same table and columns as the SQLite store (sbc/cdr.py), for
operators who bill from a shared database. Selected by `cdr: {dsn: ...}`.

Imported only when a DSN is configured: psycopg 3 is an optional dependency
(`pip install 'sbc[postgres]'`). Like every store it is used from the CDR writer's thread
only; the event loop never touches the connection.

Types: REAL -> double precision, INTEGER -> integer, the SRTP flags -> boolean, the quality
JSON -> jsonb. Passwords do not belong in the DSN (it is in the configuration file): libpq
reads them from PGPASSWORD or the ~/.pgpass file (PGPASSFILE names another one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sbc.cdr import (
    _COLUMNS,
    SCHEMA_VERSION,
    CdrError,
    CdrRecord,
    QualityUpdate,
    _quality_dict,
    _row,
    record_from_row,
)

try:
    import psycopg
    from psycopg import conninfo
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise CdrError(
        "a PostgreSQL CDR database needs psycopg 3: pip install 'sbc[postgres]'"
    ) from exc

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS cdr (
    record_id text PRIMARY KEY,
    call_key text NOT NULL,
    direction text NOT NULL,
    a_call_id text NOT NULL,
    b_call_id text,
    caller text NOT NULL,
    callee text NOT NULL,
    caller_rewritten text NOT NULL,
    callee_rewritten text NOT NULL,
    trunk text,
    pbx text,
    start_time double precision NOT NULL,
    answer_time double precision,
    end_time double precision NOT NULL,
    duration double precision NOT NULL,
    setup_time double precision,
    status integer NOT NULL,
    ended_by text NOT NULL,
    reason text NOT NULL,
    outcome text NOT NULL,
    rule text,
    codec_a text,
    codec_b text,
    srtp_a boolean,
    srtp_b boolean,
    mos_min double precision,
    loss_max double precision,
    quality jsonb
)""",
    "CREATE INDEX IF NOT EXISTS cdr_start_time ON cdr (start_time)",
    "CREATE INDEX IF NOT EXISTS cdr_call_key ON cdr (call_key)",
)

# Two SBCs starting at once on an empty database: one creates the schema, the other waits.
_SCHEMA_LOCK = 0x5B_C0_CD_12

_INSERT = (
    f"INSERT INTO cdr ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
    "ON CONFLICT (record_id) DO UPDATE SET "  # SQLite's INSERT OR REPLACE
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS[1:])
)

# CdrRecord.with_media in SQL: codecs and SRTP only where the call end did not know them.
_UPDATE = """UPDATE cdr SET
    codec_a = COALESCE(NULLIF(codec_a, ''), %(codec_a)s),
    codec_b = COALESCE(NULLIF(codec_b, ''), %(codec_b)s),
    srtp_a = COALESCE(srtp_a, %(srtp_a)s),
    srtp_b = COALESCE(srtp_b, %(srtp_b)s),
    mos_min = %(mos_min)s,
    loss_max = %(loss_max)s,
    quality = %(quality)s
WHERE call_key = %(call_key)s AND call_key <> ''
RETURNING record_id"""

_SRTP = _COLUMNS.index("srtp_a"), _COLUMNS.index("srtp_b")
_QUALITY = _COLUMNS.index("quality")


def _pg_row(record: CdrRecord) -> list[Any]:
    row = list(_row(record))
    for index in _SRTP:
        row[index] = None if row[index] is None else bool(row[index])
    row[_QUALITY] = (
        None if record.quality is None else Jsonb([_quality_dict(q) for q in record.quality])
    )
    return row


def _update_params(update: QualityUpdate) -> dict[str, Any]:
    quality = update.quality
    first = {q.source: q for q in reversed(quality)}  # lowest stream wins per source
    moses = [q.mos for q in quality if q.mos is not None]
    losses = [q.loss for q in quality if q.packets]
    params: dict[str, Any] = {
        "call_key": update.call_key,
        "mos_min": min(moses) if moses else None,
        "loss_max": max(losses) if losses else None,
        "quality": Jsonb([_quality_dict(q) for q in quality]),
    }
    for source in ("a", "b"):
        q = first.get(source)
        params[f"codec_{source}"] = q.codec if q is not None and q.codec else None
        params[f"srtp_{source}"] = None if q is None else q.srtp_auth_failures is not None
    return params


def _record(row: dict[str, Any]) -> CdrRecord:
    return record_from_row(row, row["quality"])  # jsonb: psycopg hands back the parsed list


def _safe_dsn(dsn: str) -> str:
    """The DSN for messages, without a password someone put in it anyway."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


class PostgresCdrStore:
    """CDRs in a PostgreSQL database: one connection, one transaction per batch."""

    def __init__(self, dsn: str, *, readonly: bool = False, connect_timeout: int = 10) -> None:
        self._dsn = dsn
        self._readonly = readonly
        self._connect_timeout = connect_timeout
        self._conn = self._connect()
        if not readonly:
            self._create_schema()
        self._check_version()

    def _connect(self) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"autocommit": True}
        try:
            given = conninfo.conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError as exc:
            raise CdrError(f"bad CDR database DSN: {exc}") from exc
        # Defaults only: whatever the DSN says wins.
        if "connect_timeout" not in given:
            options["connect_timeout"] = self._connect_timeout
        if "application_name" not in given:
            options["application_name"] = "sbc-cdr"
        try:
            conn = psycopg.connect(self._dsn, **options)
        except psycopg.Error as exc:
            raise CdrError(
                f"cannot connect to the CDR database {_safe_dsn(self._dsn)}: {exc}"
            ) from exc
        if self._readonly:  # exports: never change the database
            conn.read_only = True
        return conn

    def _create_schema(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                self._conn.execute(statement)
            found = self._conn.execute("SELECT version FROM schema_version").fetchone()
            if found is None:
                self._conn.execute(
                    "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
                )

    def _check_version(self) -> None:
        try:
            found = self._conn.execute("SELECT version FROM schema_version").fetchone()
        except psycopg.Error as exc:
            raise CdrError(f"not a CDR database: {exc}") from exc
        if found is None or found[0] != SCHEMA_VERSION:
            version = None if found is None else found[0]
            raise CdrError(
                f"CDR database schema version {version}, this SBC reads {SCHEMA_VERSION}"
            )

    @property
    def connection(self) -> psycopg.Connection[Any]:
        return self._conn

    def write(self, records: Sequence[CdrRecord], updates: Sequence[QualityUpdate]) -> list[str]:
        if self._conn.broken:  # the server restarted: the failed batch is lost, not the next
            self._conn = self._connect()
        missing = []
        with self._conn.transaction(), self._conn.cursor() as cursor:
            if records:
                cursor.executemany(_INSERT, [_pg_row(record) for record in records])
            for update in updates:  # in order: a second update sees the first one's codecs
                cursor.execute(_UPDATE, _update_params(update))
                if cursor.rowcount == 0:
                    missing.append(update.call_key)
        return missing

    def read(self, since: float | None = None, until: float | None = None) -> Iterator[CdrRecord]:
        """Records started in [since, until), oldest first (streamed: a server-side cursor)."""
        where, params = [], []
        if since is not None:
            where.append("start_time >= %s")
            params.append(since)
        if until is not None:
            where.append("start_time < %s")
            params.append(until)
        sql = "SELECT * FROM cdr"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_time, record_id"
        with (
            self._conn.transaction(),
            self._conn.cursor("cdr_export", row_factory=dict_row) as cursor,
        ):
            cursor.execute(sql, params)
            for row in cursor:
                yield _record(row)

    def close(self) -> None:
        self._conn.close()


def open_readonly(dsn: str) -> PostgresCdrStore:
    """For exports: no schema is created, the session is read-only."""
    return PostgresCdrStore(dsn, readonly=True)
