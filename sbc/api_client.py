"""The operator side of the management API: `sbc calls`, `sbc hangup KEY`... over HTTP
(urllib), printed as fixed-width tables. Exit codes: 0 ok, 1 the API said no, 2 no API."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

DEFAULT_API = "http://127.0.0.1:8080"
OK, API_ERROR, UNREACHABLE = 0, 1, 2


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = tuple(errors)


class ApiUnreachable(Exception):
    """No HTTP answer at all: refused, timed out, bad address."""


@dataclass(frozen=True, slots=True)
class ApiClient:
    base: str
    token: str | None = None
    timeout: float = 10.0
    tls: ssl.SSLContext | None = None  # for https:// (None: the system's CA store)

    def request(self, method: str, path: str) -> Any:
        """The decoded JSON answer of `method path`; ApiError / ApiUnreachable otherwise."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base.rstrip("/") + path, method=method, headers=headers
        )
        # No proxies: an http_proxy from the environment must not see the token.
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.tls)
        )
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return _json(response.read())
        except urllib.error.HTTPError as exc:  # before URLError: it is one
            with exc:
                raise _api_error(exc.code, exc.read(), exc.reason) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"cannot connect to the SBC API at {self.base}: {reason}"
            ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ApiError(0, "the API answered something that is not JSON") from None


def _api_error(status: int, raw: bytes, reason: str) -> ApiError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiError(status, str(reason))
    errors = body.get("errors")
    lines = [str(e) for e in errors] if isinstance(errors, list) else []
    return ApiError(status, str(body.get("error", reason)), lines)


# --------------------------------------------------------------------------- tables


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    cells = [[cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = [list(headers), *cells]
    return "\n".join(_line(line, widths) for line in lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def records(items: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """`items` as a table: `columns` first, then any other key the server sent."""
    keys = list(columns)
    for item in items:
        keys += [k for k in item if k not in keys]
    return table([k.upper() for k in keys], ([item.get(k) for k in keys] for item in items))


def clock(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def span(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# --------------------------------------------------------------------------- commands

CALL_COLUMNS = ("key", "direction", "caller", "callee", "target", "phase", "started", "duration")


def _call_row(call: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(call)
    row["started"], row["answered"] = clock(call.get("started")), clock(call.get("answered"))
    row["duration"] = span(call.get("duration"))
    return row


def show_calls(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    calls = client.request("GET", "/calls")["calls"]
    if not calls:
        print("no calls", file=out)
        return
    rows = [_call_row(c) for c in calls]
    print(records(rows, (*CALL_COLUMNS, "answered")), file=out)


def show_call(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    call = _call_row(client.request("GET", f"/calls/{quote(args.key, safe='')}"))
    legs, media = call.pop("legs", None) or [], call.pop("media", None) or []
    width = max(len(k) for k in call) + 1
    for key, value in call.items():
        print(f"{key + ':':<{width}} {cell(value)}", file=out)
    if legs:
        print("\nlegs:\n" + records(legs, ("leg",)), file=out)
    if media:
        rows = media if isinstance(media, list) else [media]
        print("\nmedia:\n" + records(rows, ()), file=out)


def hangup(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    client.request("DELETE", f"/calls/{quote(args.key, safe='')}")
    print(f"call {args.key}: hanging up", file=out)


def show_trunks(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    trunks = client.request("GET", "/trunks")["trunks"]
    print(records(trunks, ("name", "enabled", "state", "registration")), file=out)


def show_blocks(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    blocks = client.request("GET", "/blocks")["blocks"]
    if not blocks:
        print("no blocks", file=out)
        return
    print(records(blocks, ("key", "kind", "reason", "hits", "left_s")), file=out)


def unblock(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    client.request("DELETE", f"/blocks/{quote(args.key, safe='')}")
    print(f"{args.key}: unblocked", file=out)


def reload(client: ApiClient, args: argparse.Namespace, out: TextIO) -> None:
    result = client.request("POST", "/reload")
    print("configuration reloaded", file=out)
    for line in result.get("changes", []) if isinstance(result, dict) else []:
        print(f"  {line}", file=out)


Command = Callable[[ApiClient, argparse.Namespace, TextIO], None]
COMMANDS: dict[str, tuple[Command, str, str | None]] = {
    # name: (function, help, positional KEY argument's help or None)
    "calls": (show_calls, "list live calls", None),
    "call": (show_call, "show one call with its legs and media", "call key (see `sbc calls`)"),
    "hangup": (hangup, "hang up a call", "call key (see `sbc calls`)"),
    "trunks": (show_trunks, "list trunks: health, registration, enabled", None),
    "blocks": (show_blocks, "list blocked sources", None),
    "unblock": (unblock, "lift a block", "block key (see `sbc blocks`)"),
    "reload": (reload, "reload the configuration", None),
}


def add_commands(commands: Any) -> None:
    """The API subcommands on the `sbc` parser's subparsers (argparse's private type)."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--api",
        default=os.environ.get("SBC_API", DEFAULT_API),
        metavar="URL",
        help=f"management API base URL (env SBC_API; default {DEFAULT_API})",
    )
    token = shared.add_mutually_exclusive_group()
    token.add_argument(
        "--token", default=os.environ.get("SBC_TOKEN"), help="bearer token (env SBC_TOKEN)"
    )
    token.add_argument("--token-file", metavar="FILE", help="file holding the bearer token")
    shared.add_argument(
        "--ca",
        default=os.environ.get("SBC_API_CA"),
        metavar="FILE",
        help="for https: the CA that signed the API's certificate (env SBC_API_CA; "
        "default: the system's store)",
    )
    shared.add_argument(
        "--cert",
        default=os.environ.get("SBC_API_CERT"),
        metavar="FILE",
        help="for https with verify_peer: our client certificate (PEM, env SBC_API_CERT)",
    )
    shared.add_argument(
        "--key",
        default=os.environ.get("SBC_API_KEY"),
        metavar="FILE",
        help="the key of --cert when not in the same file (env SBC_API_KEY)",
    )
    for name, (_, help_text, key_help) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, parents=[shared])
        if key_help is not None:
            sub.add_argument("key", metavar="KEY", help=key_help)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is None:
        return str(args.token) if args.token else None
    with open(args.token_file, encoding="utf-8") as stream:
        return stream.read().strip()


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client side of an https API: the server checked against --ca (or the system
    store), our certificate shown when given. None for http."""
    if not str(args.api).lower().startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    return context


def run_command(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    # Looked up per call, not bound as defaults: tests and callers swap sys.stdout.
    out, err = out or sys.stdout, err or sys.stderr
    command = COMMANDS[args.command][0]
    try:
        token = _token(args)
    except OSError as exc:
        print(f"sbc: cannot read the token file: {exc}", file=err)
        return API_ERROR
    try:
        client = ApiClient(args.api, token, tls=_tls_context(args))
    except (OSError, ssl.SSLError) as exc:
        print(f"sbc: cannot load the TLS files (--ca/--cert/--key): {exc}", file=err)
        return API_ERROR
    try:
        command(client, args, out)
    except ApiUnreachable as exc:
        print(f"sbc: {exc}", file=err)
        print(
            "hint: is the SBC running with an `api:` section, and does --api (or SBC_API) "
            "give its address?",
            file=err,
        )
        return UNREACHABLE
    except ApiError as exc:
        print(f"sbc: API error {exc.status}: {exc.message}", file=err)
        for line in exc.errors:
            print(f"  {line}", file=err)
        if exc.status == 401:
            print("hint: pass --token or --token-file, or set SBC_TOKEN", file=err)
        return API_ERROR
    return OK
