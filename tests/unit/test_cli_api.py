"""`sbc calls|call|hangup|trunks|blocks|unblock|reload` against the real API server on
loopback: tables, exit codes, and the hint when nothing answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sbc import cli
from sbc.api_client import span, table
from tests.unit.api_harness import TOKEN, FakeControlPlane, ServedApi, free_port, serve

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def control() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def api(control: FakeControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedApi]:
    for served in serve(control):
        monkeypatch.setenv("SBC_API", served.url)
        monkeypatch.setenv("SBC_TOKEN", TOKEN)
        yield served


def run(*argv: str) -> int:
    return cli.main(list(argv))


def test_calls_table(api: ServedApi, capsys: Capture) -> None:
    assert run("calls") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "KEY", "DIRECTION", "CALLER", "CALLEE", "TARGET", "PHASE", "STARTED", "DURATION", "ANSWERED"
    ]  # fmt: skip
    assert lines[1].split()[:6] == ["n1-c1", "outbound", "201", "+3312345678", "itsp", "answered"]
    assert "1:02:05" in lines[1]
    # Fixed-width: every column starts at the same offset on every line.
    assert lines[0].index("DIRECTION") == lines[1].index("outbound")


def test_no_calls(api: ServedApi, control: FakeControlPlane, capsys: Capture) -> None:
    control.live.clear()
    assert run("calls") == 0
    assert capsys.readouterr().out == "no calls\n"


def test_call_detail(api: ServedApi, capsys: Capture) -> None:
    assert run("call", "n1-c1") == 0
    out = capsys.readouterr().out
    assert "key:" in out and "n1-c1" in out
    assert "legs:\nLEG  REMOTE" in out
    assert "127.0.0.20:5060" in out
    assert "media:\nSTREAM  LEG  PACKETS_IN  PACKETS_OUT" in out


def test_unknown_call_exits_1_with_the_message(api: ServedApi, capsys: Capture) -> None:
    assert run("call", "nope") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "sbc: API error 404: no call 'nope'\n"


def test_hangup(api: ServedApi, control: FakeControlPlane, capsys: Capture) -> None:
    assert run("hangup", "n1-c1") == 0
    assert capsys.readouterr().out == "call n1-c1: hanging up\n"
    assert control.hung_up == ["n1-c1"]
    assert run("hangup", "n1-c1") == 1


def test_trunks_table(api: ServedApi, capsys: Capture) -> None:
    assert run("trunks") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ENABLED", "STATE", "REGISTRATION"]
    assert lines[1].split() == ["itsp", "yes", "up", "registered"]
    assert lines[2].split() == ["backup", "yes", "down", "-"]


def test_blocks_and_unblock(api: ServedApi, control: FakeControlPlane, capsys: Capture) -> None:
    assert run("blocks") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "KIND", "REASON", "HITS", "LEFT_S"]
    assert lines[1].split() == ["198.51.100.7", "source", "flood", "412", "58.5"]
    assert run("unblock", "198.51.100.7") == 0
    assert capsys.readouterr().out == "198.51.100.7: unblocked\n"
    assert run("blocks") == 0
    assert capsys.readouterr().out == "no blocks\n"


def test_reload_ok(api: ServedApi, capsys: Capture) -> None:
    assert run("reload") == 0
    assert capsys.readouterr().out == "configuration reloaded\n  trunks.itsp.proxy changed\n"


def test_reload_rejected_prints_every_error(
    api: ServedApi, control: FakeControlPlane, capsys: Capture
) -> None:
    control.reload_errors = ["a.yaml:1: x: bad", "a.yaml:2: y: worse"]
    assert run("reload") == 1
    assert capsys.readouterr().err == (
        "sbc: API error 400: configuration rejected\n  a.yaml:1: x: bad\n  a.yaml:2: y: worse\n"
    )


def test_wrong_token_exits_1_with_a_hint(api: ServedApi, capsys: Capture) -> None:
    assert run("calls", "--token", "wrong") == 1
    err = capsys.readouterr().err
    assert err.startswith("sbc: API error 401: missing or invalid bearer token\n")
    assert "SBC_TOKEN" in err


def test_token_file_and_api_options(
    api: ServedApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture
) -> None:
    monkeypatch.delenv("SBC_API")
    monkeypatch.delenv("SBC_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    assert run("trunks", "--api", api.url, "--token-file", str(token_file)) == 0
    assert "itsp" in capsys.readouterr().out


def test_missing_token_file_exits_1(api: ServedApi, tmp_path: Path, capsys: Capture) -> None:
    assert run("calls", "--token-file", str(tmp_path / "missing")) == 1
    assert "cannot read the token file" in capsys.readouterr().err


def test_connection_refused_exits_2_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SBC_API", url)
    assert run("calls") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sbc: cannot connect to the SBC API at {url}: ")
    assert "refused" in err.lower()
    assert "hint:" in err and "SBC_API" in err


def test_table_and_span_helpers() -> None:
    assert (
        table(["A", "BB"], [["x", None], ["longer", True]]) == "A       BB\nx       -\nlonger  yes"
    )
    assert span(59.9) == "0:00:59" and span(None) == "-"
