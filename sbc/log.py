"""Structured logging on top of the stdlib `logging` module: one event per line, as
`key=value` pairs or JSON, with secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["EventLogger", "EventFormatter", "configure", "get_logger", "mask_value"]

# Record attribute carrying our fields; the formatter also accepts plain stdlib records
# (from asyncio, aioquic, ...) and logs their message as `msg=`.
_FIELDS_ATTR = "sbc_fields"
_ROOT = "sbc"
_RESERVED = frozenset({"ts", "level", "logger", "event", "call"})
_SECRET_WORDS = ("password", "passwd", "secret", "authorization")
MASK = "***"

# A SIP message put into a log value must not leak credentials: RFC 3261 §22 Authorization
# and Proxy-Authorization carry the digest response.
_AUTH_HEADER_RE = re.compile(r"(?im)^((?:proxy-)?authorization[ \t]*:)[^\r\n]*")
_NEEDS_QUOTES_RE = re.compile(r'[\s"=\\]|[^\x21-\x7e]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Every control character is escaped so that one event always stays on one line.
_ESCAPE_RE = re.compile(r'["\\\x00-\x1f\x7f\x85\u2028\u2029]')

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


_secret_keys: dict[str, bool] = {}  # field names are few: decide once per name


def _is_secret(key: str) -> bool:
    known = _secret_keys.get(key)
    if known is None:
        lowered = key.lower()
        known = _secret_keys[key] = any(word in lowered for word in _SECRET_WORDS)
    return known


def mask_value(value: str) -> str:
    """`value` with the contents of any Authorization/Proxy-Authorization header line masked."""
    if "authorization" not in value.lower():
        return value  # almost every value: no regex run on the hot path
    return _AUTH_HEADER_RE.sub(r"\1 " + MASK, value)


class EventLogger:
    """Logs named events with fields: `log.info("listener.started", addr="127.0.0.1:5060")`.

    Fields are only formatted when a handler emits the record, and the call returns at once
    when the level is disabled.
    """

    __slots__ = ("_logger", "_bound")

    def __init__(self, logger: logging.Logger, bound: Mapping[str, Any] | None = None) -> None:
        self._logger = logger
        self._bound: dict[str, Any] = dict(bound or {})

    @property
    def name(self) -> str:
        return self._logger.name

    def bind(self, **fields: Any) -> EventLogger:
        """A logger that adds `fields` (e.g. call=...) to every event."""
        return EventLogger(self._logger, {**self._bound, **fields})

    def is_enabled(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def log(self, level: int, event: str, /, exc_info: Any = None, **fields: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if self._bound:
            fields = {**self._bound, **fields}
        handler = _handler
        if (
            exc_info is None
            and handler is not None
            and logging.root.handlers == [handler]
            and not self._logger.handlers
        ):
            # Our handler alone: write the line straight to its stream, without LogRecord,
            # handler lookup and locking (the same text; a third of the cost per line).
            formatter = handler.formatter
            if isinstance(formatter, EventFormatter):
                name = logging.getLevelName(level)
                text = formatter.format_event(time.time(), name, self._logger.name, event, fields)
                stream = handler.stream  # type: ignore[attr-defined]
                stream.write(text + "\n")
                stream.flush()
                return
        self._logger.log(level, event, exc_info=exc_info, extra={_FIELDS_ATTR: fields})

    def debug(self, event: str, /, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self.log(logging.DEBUG, event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self.log(logging.INFO, event, **fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self.log(logging.WARNING, event, **fields)

    def error(self, event: str, /, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.ERROR):
            self.log(logging.ERROR, event, **fields)

    def critical(self, event: str, /, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.CRITICAL):
            self.log(logging.CRITICAL, event, **fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        """An error event with the current exception attached (call from an except block)."""
        if self._logger.isEnabledFor(logging.ERROR):
            self.log(logging.ERROR, event, exc_info=True, **fields)


def get_logger(name: str) -> EventLogger:
    """The event logger for a component, e.g. get_logger("transport")."""
    full = name if name == _ROOT or name.startswith(_ROOT + ".") else f"{_ROOT}.{name}"
    return EventLogger(logging.getLogger(full))


def _short_name(name: str) -> str:
    return name[len(_ROOT) + 1 :] if name.startswith(_ROOT + ".") else name


_last_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _timestamp(created: float) -> str:
    whole = int(created)
    if _last_second[0] != whole:  # strftime once a second, not once a line
        _last_second[0] = whole
        _last_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_last_second[1]}.{int((created - whole) * 1000):03d}Z"


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _kv_value(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = value if isinstance(value, str) else str(value)
    if text and _NEEDS_QUOTES_RE.search(text) is None:
        return text
    return '"' + _ESCAPE_RE.sub(_escape, text) + '"'


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class EventFormatter(logging.Formatter):
    """Formats records as `ts=... level=... logger=... event=... k=v` or as JSON lines."""

    def __init__(self, fmt: str = "kv") -> None:
        super().__init__()
        if fmt not in ("kv", "json"):
            raise ValueError(f"log format '{fmt}' is not one of kv, json")
        self.json = fmt == "json"

    def _pairs(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
        fields: dict[str, Any] | None = getattr(record, _FIELDS_ATTR, None)
        if fields is None:
            event, extra = "log", {"msg": record.getMessage()}
        else:
            event, extra = str(record.msg), fields
        pairs = self._event_pairs(record.created, record.levelname, record.name, event, extra)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            pairs.append(("exc", f"{type(exc).__name__}: {exc}"))
            pairs.append(("traceback", self.formatException(record.exc_info)))
        return pairs

    def format_event(
        self, created: float, level: str, name: str, event: str, extra: Mapping[str, Any]
    ) -> str:
        """One line for an event, as format() writes it, without a LogRecord."""
        return self._join(self._event_pairs(created, level, name, event, extra))

    @staticmethod
    def _event_pairs(
        created: float, level: str, name: str, event: str, extra: Mapping[str, Any]
    ) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = [
            ("ts", _timestamp(created)),
            ("level", level.lower()),
            ("logger", _short_name(name)),
            ("event", event),
        ]
        if extra.get("call") is not None:
            pairs.append(("call", extra["call"]))
        for key, value in extra.items():
            if key == "call":
                continue
            if _is_secret(key):
                value = MASK
            elif isinstance(value, str):
                value = mask_value(value)
            pairs.append((f"{key}_" if key in _RESERVED else key, value))
        return pairs

    def format(self, record: logging.LogRecord) -> str:
        return self._join(self._pairs(record))

    def _join(self, pairs: list[tuple[str, Any]]) -> str:
        if self.json:
            return json.dumps({key: _json_value(value) for key, value in pairs})
        return " ".join(f"{key}={_kv_value(value)}" for key, value in pairs)


_handler: logging.Handler | None = None


def configure(level: str = "info", fmt: str = "kv", stream: TextIO | None = None) -> None:
    """Send every log record, ours and third-party, to `stream` (stderr) in one format.

    Calling it again replaces the handler it installed before.
    """
    global _handler
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"log level '{level}' is not one of {', '.join(_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(EventFormatter(fmt))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
