"""The management API: a small, strict HTTP/1.1 JSON server on asyncio streams (one request
per connection) in front of a ControlPlane that the application implements.

docs/api.yaml describes the same routes for clients; tests compare it with ROUTES below.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from sbc.config import ConfigError
from sbc.log import get_logger

log = get_logger("api")

MAX_HEAD = 16 * 1024  # request line + headers
MAX_BODY = 64 * 1024
DEFAULT_READ_TIMEOUT = 5.0  # seconds for the whole request: a slow client holds no more

Json = Any  # whatever json.dumps accepts
Params = dict[str, str]  # path parameters by template name, percent-decoded


# --------------------------------------------------------------------------- the contract


class ControlPlane(Protocol):
    """What the API may ask of the running SBC. Every result is plain JSON-able data
    (dicts, lists, str, int, float, bool, None); docs/api.yaml gives the shapes."""

    def ready(self) -> dict[str, Any]:
        """{"ready": bool, ...details}: listeners bound and media workers up."""
        ...

    def calls(self) -> list[dict[str, Any]]:
        """One summary per live call (key, direction, caller, callee, target, phase,
        started, answered, duration)."""
        ...

    async def call(self, key: str) -> dict[str, Any] | None:
        """The summary plus "legs" and "media" for the call `key`; None if unknown.
        Async: media stats may come from a worker process."""
        ...

    def hangup(self, key: str) -> bool:
        """Start hanging up the call `key` (BYE/CANCEL both legs); False if unknown."""
        ...

    def trunks(self) -> list[dict[str, Any]]:
        """One entry per trunk: name, enabled, state (health), registration."""
        ...

    def set_trunk_enabled(self, name: str, enabled: bool) -> dict[str, Any] | None:
        """Take a trunk out of (or back into) routing; its entry afterwards, None if unknown."""
        ...

    def admission(self) -> dict[str, Any]:
        """The admission policy's snapshot (counters, limits, rejections)."""
        ...

    def blocks(self) -> list[dict[str, Any]]:
        """Sources the security guard is blocking: key, kind, reason, hits, left_s."""
        ...

    def unblock(self, key: str) -> bool:
        """Lift the block on `key`; False if there was none."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration and apply it; raises ReloadRejected (or ConfigError)
        when it cannot be used, leaving the running configuration in place."""
        ...

    async def stats(self) -> dict[str, Any]:
        """Counters: calls, transactions, media sessions and ports, workers..."""
        ...


class ReloadRejected(Exception):
    """A reload refused: `errors` are lines an operator can act on (file:line: key: problem)."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------- settings


def read_token(path: str | Path) -> str:
    """The bearer token stored in `path` (surrounding whitespace ignored)."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise ValueError(f"{path}: the API token must be at least 16 characters")
    if not token.isascii() or any(c.isspace() for c in token):
        raise ValueError(f"{path}: the API token must be printable ASCII without spaces")
    return token


# --------------------------------------------------------------------------- HTTP plumbing


class HttpError(Exception):
    """A request answered with an error status; `message` goes into the JSON body."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Json] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class _Unread(HttpError):
    """An error found before the whole request was read: the rest is drained before
    closing, or the client may get a reset instead of our answer."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    segments: tuple[str, ...]  # the path split on "/" before decoding (so %2F stays inside)
    headers: Mapping[str, str]  # lower-case names
    body: Json = None


@dataclass(frozen=True, slots=True)
class Reply:
    status: HTTPStatus
    payload: Json
    headers: Mapping[str, str] = field(default_factory=dict)


_REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (/[!-~]*) HTTP/1\.([01])")
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_SINGLE = frozenset({"content-length", "authorization", "host", "transfer-encoding"})


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, headers) from the bytes before the blank line."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _Unread(HTTPStatus.BAD_REQUEST, "non-ASCII bytes in the request head") from None
    request_line, *lines = text.split("\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise _Unread(HTTPStatus.BAD_REQUEST, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines:
        header = _HEADER.fullmatch(line)
        if header is None:  # also refuses obsolete line folding (RFC 9112 §5.2)
            raise _Unread(HTTPStatus.BAD_REQUEST, f"malformed header line {line[:40]!r}")
        name, value = header.group(1).lower(), header.group(2)
        if name in headers:
            if name in _SINGLE:  # two lengths or two tokens: request smuggling territory
                raise _Unread(HTTPStatus.BAD_REQUEST, f"duplicate {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    if match.group(3) == "1" and "host" not in headers:
        raise _Unread(HTTPStatus.BAD_REQUEST, "HTTP/1.1 request without Host")  # RFC 9112 §3.2
    return match.group(1), match.group(2), headers


def _content_length(headers: Mapping[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _Unread(
            HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not supported: send Content-Length"
        )
    text = headers.get("content-length", "0")
    if not text.isdigit() or len(text) > 9:
        raise _Unread(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
    length = int(text)
    if length > MAX_BODY:
        raise _Unread(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
    return length


def _body(raw: bytes) -> Json:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None


async def read_request(reader: asyncio.StreamReader) -> Request:
    """One request from `reader`; the caller bounds the time it may take."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Unread(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head over 16 KiB"
        ) from None
    method, target, headers = _parse_head(head[:-4])
    raw = await reader.readexactly(_content_length(headers))
    path = target.partition("?")[0]  # query strings carry nothing here: ignored
    return Request(method, tuple(path.split("/")[1:]), headers, _body(raw))


def _encode(reply: Reply) -> bytes:
    body = json.dumps(reply.payload, default=str, separators=(",", ":")).encode() + b"\n"
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "close",
        **reply.headers,
    }
    head = f"HTTP/1.1 {reply.status.value} {reply.status.phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def _error_reply(error: HttpError) -> Reply:
    return Reply(error.status, {"error": error.message, **error.extra}, error.headers)


# --------------------------------------------------------------------------- routes

Handler = Callable[[ControlPlane, Request, Params], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str  # "/calls/{key}": also the path's name in docs/api.yaml
    handler: Handler
    public: bool = False  # no token needed (probes)

    def match(self, segments: tuple[str, ...]) -> Params | None:
        parts = self.template.split("/")[1:]
        if len(parts) != len(segments):
            return None
        params: Params = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    return None
                params[part[1:-1]] = _decoded(segment)
            elif part != segment:
                return None
        return params


def _decoded(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "path is not UTF-8") from None


def _ok(payload: Json, status: HTTPStatus = HTTPStatus.OK) -> Reply:
    return Reply(status, payload)


def _not_found(what: str) -> HttpError:
    return HttpError(HTTPStatus.NOT_FOUND, what)


async def _health(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok({"status": "ok"})  # answering at all is the proof the loop is alive


async def _ready(control: ControlPlane, request: Request, params: Params) -> Reply:
    state = control.ready()
    return _ok(state, HTTPStatus.OK if state.get("ready") else HTTPStatus.SERVICE_UNAVAILABLE)


async def _list_calls(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok({"calls": control.calls()})


async def _get_call(control: ControlPlane, request: Request, params: Params) -> Reply:
    call = await control.call(params["key"])
    if call is None:
        raise _not_found(f"no call {params['key']!r}")
    return _ok(call)


async def _hangup(control: ControlPlane, request: Request, params: Params) -> Reply:
    if not control.hangup(params["key"]):
        raise _not_found(f"no call {params['key']!r}")
    # Accepted, not done: the BYEs still have to be answered.
    return _ok({"key": params["key"], "status": "hanging up"}, HTTPStatus.ACCEPTED)


async def _list_trunks(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok({"trunks": control.trunks()})


async def _set_trunk(control: ControlPlane, name: str, enabled: bool) -> Reply:
    trunk = control.set_trunk_enabled(name, enabled)
    if trunk is None:
        raise _not_found(f"no trunk {name!r}")
    return _ok(trunk)


async def _disable_trunk(control: ControlPlane, request: Request, params: Params) -> Reply:
    return await _set_trunk(control, params["name"], False)


async def _enable_trunk(control: ControlPlane, request: Request, params: Params) -> Reply:
    return await _set_trunk(control, params["name"], True)


async def _admission(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok(control.admission())


async def _list_blocks(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok({"blocks": control.blocks()})


async def _unblock(control: ControlPlane, request: Request, params: Params) -> Reply:
    if not control.unblock(params["key"]):
        raise _not_found(f"no block on {params['key']!r}")
    return _ok({"key": params["key"], "unblocked": True})


async def _reload(control: ControlPlane, request: Request, params: Params) -> Reply:
    try:
        return _ok(await control.reload())
    except ReloadRejected as exc:
        errors = list(exc.errors)
    except ConfigError as exc:
        errors = str(exc).splitlines()
    raise HttpError(HTTPStatus.BAD_REQUEST, "configuration rejected", extra={"errors": errors})


async def _stats(control: ControlPlane, request: Request, params: Params) -> Reply:
    return _ok(await control.stats())


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", _health, public=True),
    Route("GET", "/ready", _ready, public=True),
    Route("GET", "/calls", _list_calls),
    Route("GET", "/calls/{key}", _get_call),
    Route("DELETE", "/calls/{key}", _hangup),
    Route("GET", "/trunks", _list_trunks),
    Route("POST", "/trunks/{name}/disable", _disable_trunk),
    Route("POST", "/trunks/{name}/enable", _enable_trunk),
    Route("GET", "/admission", _admission),
    Route("GET", "/blocks", _list_blocks),
    Route("DELETE", "/blocks/{key}", _unblock),
    Route("POST", "/reload", _reload),
    Route("GET", "/stats", _stats),
)


def _route(request: Request) -> tuple[Route, Params]:
    """The route for the request: 404 when no path matches, 405 when only the method is wrong."""
    allowed: list[str] = []
    for route in ROUTES:
        params = route.match(request.segments)
        if params is None:
            continue
        if route.method == request.method:
            return route, params
        allowed.append(route.method)
    if not allowed:
        raise _not_found("no such resource")
    raise HttpError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"{request.method} not allowed here",
        headers={"Allow": ", ".join(allowed)},
    )


# --------------------------------------------------------------------------- the server


class ApiServer:
    """Serves ROUTES against `control`. Every route but the probes needs
    `Authorization: Bearer <token>`."""

    def __init__(
        self, control: ControlPlane, token: str, *, read_timeout: float = DEFAULT_READ_TIMEOUT
    ) -> None:
        if not token:
            raise ValueError("the API needs a token")
        self.control = control
        self._token = token.encode()
        self.read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._tls: ssl.SSLContext | None = None

    def renew_certificate(self, cert: str, key: str) -> None:
        """Serve `cert` to connections accepted from now on (after a renewal in place);
        ssl.SSLError / OSError when the files do not load, the old ones then stay."""
        if self._tls is None:
            return
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        check.load_cert_chain(cert, key)  # raises before the live context is touched
        self._tls.load_cert_chain(cert, key)

    async def start(
        self, host: str, port: int, *, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Bind and serve (HTTPS with `tls`); the address actually bound (port 0 picks one).
        A TLS handshake counts against read_timeout like the request itself."""
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            limit=MAX_HEAD,
            ssl=tls,
            ssl_handshake_timeout=self.read_timeout if tls is not None else None,
        )
        self._tls = tls
        bound = self._server.sockets[0].getsockname()
        log.info("api.listening", host=bound[0], port=bound[1])
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _authorized(self, header: str | None) -> bool:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            reply, drain = await self._answer(reader, peer)
            if reply is not None:
                writer.write(_encode(reply))
                await asyncio.wait_for(writer.drain(), self.read_timeout)
                if drain:
                    await self._discard(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading: nothing left to tell it
        finally:
            writer.close()
            with suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(
        self, reader: asyncio.StreamReader, peer: object
    ) -> tuple[Reply | None, bool]:
        """The reply (None: the client closed first) and whether input is left unread."""
        try:
            async with asyncio.timeout(self.read_timeout):
                request = await read_request(reader)
        except asyncio.IncompleteReadError:
            return None, False
        except TimeoutError:
            # Nothing to drain: a client this slow is not sending anyway.
            return _error_reply(HttpError(HTTPStatus.REQUEST_TIMEOUT, "request too slow")), False
        except HttpError as exc:
            return _error_reply(exc), isinstance(exc, _Unread)
        try:
            return await self._dispatch(request, peer), False
        except HttpError as exc:
            return _error_reply(exc), False
        except Exception:
            log.exception("api.error", method=request.method, path="/".join(request.segments))
            return Reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}), False

    async def _dispatch(self, request: Request, peer: object) -> Reply:
        route, params = _route(request) if self._public(request) else self._guarded(request, peer)
        reply = await route.handler(self.control, request, params)
        if request.method != "GET":  # changes are worth a line in the log; reads are not
            log.info(
                "api.request",
                method=request.method,
                route=route.template,
                status=reply.status.value,
            )
        return reply

    def _public(self, request: Request) -> bool:
        return any(r.public and r.match(request.segments) is not None for r in ROUTES)

    def _guarded(self, request: Request, peer: object) -> tuple[Route, Params]:
        # Authentication before routing: without a token, no 404/405 tells what exists.
        if not self._authorized(request.headers.get("authorization")):
            log.warning("api.unauthorized", peer=str(peer))
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="sbc"'},
            )
        return _route(request)

    async def _discard(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read what the client still sends (bounded) after our answer, so closing with
        unread input does not reset the connection before the client reads the reply."""
        if writer.can_write_eof():
            writer.write_eof()
        with suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(1.0):
                left = 4 * MAX_BODY
                while left > 0 and (chunk := await reader.read(16384)):
                    left -= len(chunk)
