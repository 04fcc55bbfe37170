"""The management API over real HTTP on loopback: every route against a FakeControlPlane,
authentication, the strict parser's refusals, and docs/api.yaml matching the route table."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sbc.api import MAX_BODY, ROUTES, read_token
from tests.unit.api_harness import TOKEN, FakeControlPlane, ServedApi, serve

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def control() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def api(control: FakeControlPlane) -> Iterator[ServedApi]:
    yield from serve(control, read_timeout=0.5)


def call(
    api: ServedApi, method: str, path: str, token: str | None = TOKEN, body: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON body, headers) of one request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(api.url + path, body, headers, method=method)
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def raw(api: ServedApi, data: bytes, pause: float = 0.0) -> bytes:
    """Whatever the server sends back on a plain socket after `data` (and `pause`)."""
    with socket.create_connection(api.address, timeout=5) as sock:
        sock.sendall(data)
        time.sleep(pause)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# --------------------------------------------------------------------------- probes


def test_health_needs_no_token(api: ServedApi) -> None:
    status, body, headers = call(api, "GET", "/health", token=None)
    assert (status, body) == (200, {"status": "ok"})
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"


def test_ready_and_not_ready(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "GET", "/ready", token=None)
    assert status == 200 and body["ready"] is True and body["listeners"] == ["pbx-udp"]
    control.is_ready = False
    status, body, _ = call(api, "GET", "/ready", token=None)
    assert status == 503 and body["ready"] is False


# --------------------------------------------------------------------------- calls


def test_list_calls(api: ServedApi) -> None:
    status, body, _ = call(api, "GET", "/calls")
    assert status == 200
    assert [c["key"] for c in body["calls"]] == ["n1-c1"]
    assert body["calls"][0]["phase"] == "answered"


def test_get_call_with_legs_and_media(api: ServedApi) -> None:
    status, body, _ = call(api, "GET", "/calls/n1-c1")
    assert status == 200
    assert [leg["leg"] for leg in body["legs"]] == ["A", "B"]
    assert body["media"][0]["packets_in"] == 1500


def test_get_unknown_call(api: ServedApi) -> None:
    assert call(api, "GET", "/calls/nope")[:2] == (404, {"error": "no call 'nope'"})


def test_hangup(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "DELETE", "/calls/n1-c1")
    assert (status, body) == (202, {"key": "n1-c1", "status": "hanging up"})
    assert control.hung_up == ["n1-c1"]
    assert call(api, "DELETE", "/calls/n1-c1")[0] == 404


def test_path_parameters_are_percent_decoded(api: ServedApi, control: FakeControlPlane) -> None:
    control.live["a/b c"] = {"key": "a/b c"}
    status, body, _ = call(api, "GET", "/calls/a%2Fb%20c")
    assert status == 200 and body["key"] == "a/b c"


# --------------------------------------------------------------------------- trunks


def test_list_trunks(api: ServedApi) -> None:
    status, body, _ = call(api, "GET", "/trunks")
    assert status == 200
    assert {t["name"]: t["state"] for t in body["trunks"]} == {"itsp": "up", "backup": "down"}


def test_disable_and_enable_trunk(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "POST", "/trunks/itsp/disable")
    assert status == 200 and body["enabled"] is False
    assert control.trunk_list["itsp"]["enabled"] is False
    status, body, _ = call(api, "POST", "/trunks/itsp/enable", body=b"{}")
    assert status == 200 and body["enabled"] is True


def test_unknown_trunk(api: ServedApi) -> None:
    assert call(api, "POST", "/trunks/ghost/disable")[:2] == (404, {"error": "no trunk 'ghost'"})


# --------------------------------------------------------------------------- policy, blocks, stats


def test_admission_snapshot(api: ServedApi) -> None:
    status, body, _ = call(api, "GET", "/admission")
    assert status == 200 and body["rejections"] == {"limit:itsp": 3}


def test_blocks_and_unblock(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "GET", "/blocks")
    assert status == 200 and body["blocks"][0]["reason"] == "flood"
    status, body, _ = call(api, "DELETE", "/blocks/198.51.100.7")
    assert (status, body) == (200, {"key": "198.51.100.7", "unblocked": True})
    assert control.block_list == {}
    assert call(api, "DELETE", "/blocks/198.51.100.7")[0] == 404


def test_stats(api: ServedApi) -> None:
    status, body, _ = call(api, "GET", "/stats")
    assert (status, body["calls"]) == (200, 1)


# --------------------------------------------------------------------------- reload


def test_reload_ok(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "POST", "/reload")
    assert status == 200 and body["reloaded"] is True
    assert control.reloads == 1


def test_reload_rejected_lists_the_errors(api: ServedApi, control: FakeControlPlane) -> None:
    control.reload_errors = ["sbc.yaml:3: media.timeout: expected a number, got str"]
    status, body, _ = call(api, "POST", "/reload")
    assert status == 400
    assert body == {"error": "configuration rejected", "errors": control.reload_errors}
    assert control.reloads == 0


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1]])
def test_bad_or_missing_token_is_401(api: ServedApi, token: str | None) -> None:
    status, body, headers = call(api, "GET", "/calls", token=token)
    assert (status, body) == (401, {"error": "missing or invalid bearer token"})
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_other_schemes_are_401(api: ServedApi) -> None:
    request = b"GET /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + TOKEN.encode()
    assert status_of(raw(api, request + b"\r\n\r\n")) == 401


def test_unknown_path_without_token_is_401_not_404(api: ServedApi) -> None:
    # Nothing about which routes exist is told to a client without the token.
    assert call(api, "GET", "/secret", token=None)[0] == 401


def test_changes_need_the_token(api: ServedApi, control: FakeControlPlane) -> None:
    assert call(api, "DELETE", "/calls/n1-c1", token=None)[0] == 401
    assert call(api, "POST", "/reload", token="nope")[0] == 401
    assert control.hung_up == [] and control.reloads == 0


# --------------------------------------------------------------------------- HTTP errors


def test_unknown_path_is_404(api: ServedApi) -> None:
    assert call(api, "GET", "/nothing/here")[:2] == (404, {"error": "no such resource"})
    assert call(api, "GET", "/calls/")[0] == 404  # an empty key is no key


def test_wrong_method_is_405_with_allow(api: ServedApi) -> None:
    status, body, headers = call(api, "PUT", "/calls/n1-c1")
    assert (status, body["error"]) == (405, "PUT not allowed here")
    assert headers["Allow"] == "GET, DELETE"
    assert call(api, "POST", "/health", token=None)[0] == 405


def test_body_not_json_is_400(api: ServedApi) -> None:
    status, body, _ = call(api, "POST", "/reload", body=b"{not json")
    assert (status, body) == (400, {"error": "the body is not JSON"})


def test_oversized_body_is_413(api: ServedApi, control: FakeControlPlane) -> None:
    status, body, _ = call(api, "POST", "/reload", body=b" " * (MAX_BODY + 1))
    assert status == 413 and "body over" in body["error"]
    assert control.reloads == 0


def test_largest_body_is_read(api: ServedApi) -> None:
    body = b"[" + b" " * (MAX_BODY - 2) + b"]"
    assert call(api, "POST", "/reload", body=body)[0] == 200


def test_oversized_head_is_431(api: ServedApi) -> None:
    request = b"GET /calls HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17000 + b"\r\n\r\n"
    assert status_of(raw(api, request)) == 431


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /calls\r\nHost: x\r\n\r\n",  # no version
        b"GET calls HTTP/1.1\r\nHost: x\r\n\r\n",  # not origin-form
        b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",  # methods are case-sensitive
        b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: \xff\r\n\r\n",
        b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /calls/%ff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(api: ServedApi, request_bytes: bytes) -> None:
    response = raw(api, request_bytes)
    assert status_of(response) == 400
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]


def test_http_1_0_without_host_is_fine(api: ServedApi) -> None:
    assert status_of(raw(api, b"GET /health HTTP/1.0\r\n\r\n")) == 200


def test_slow_client_gets_408(api: ServedApi) -> None:
    started = time.monotonic()
    response = raw(api, b"GET /calls HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    assert status_of(response) == 408
    assert time.monotonic() - started < 3


def test_slow_body_gets_408(api: ServedApi) -> None:
    response = raw(api, b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
    assert status_of(response) == 408


def test_client_closing_early_is_harmless(api: ServedApi) -> None:
    with socket.create_connection(api.address, timeout=5) as sock:
        sock.sendall(b"GET /heal")
    assert call(api, "GET", "/health", token=None)[0] == 200


def test_control_plane_failure_is_500(api: ServedApi, control: FakeControlPlane) -> None:
    control.fail = True
    assert call(api, "GET", "/calls")[:2] == (500, {"error": "internal error"})
    assert call(api, "GET", "/health", token=None)[0] == 200  # the server keeps serving


# --------------------------------------------------------------------------- settings


def test_read_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    assert read_token(path) == TOKEN
    path.write_text("short", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(path)


# --------------------------------------------------------------------------- docs/api.yaml


def _documented() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docs" / "api.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_openapi_document_lists_every_route() -> None:
    document = _documented()
    assert document["openapi"].startswith("3.0")
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    implemented = {(route.method, route.template) for route in ROUTES}
    assert documented == implemented


def test_openapi_document_marks_public_routes() -> None:
    document = _documented()
    assert "bearer" in document["components"]["securitySchemes"]
    for route in ROUTES:
        operation = document["paths"][route.template][route.method.lower()]
        # Public operations override the global requirement with an empty list.
        assert (operation.get("security") == []) == route.public, route.template
