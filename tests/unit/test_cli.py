"""The `sbc` command line: check-config exit codes and output, run refusing a bad config
before anything starts, --version."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from sbc import cli
from sbc.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "sbc.yaml"
BAD = "interfaces:\n  a: {listen: [udp:127.0.0.1:5060]}\nmedia: {timeout: never}\n"


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Stands in for sbc.app and for logging set-up; records what each was called with."""
    started: list[object] = []

    def run(config: Config) -> int:
        started.append(config)
        return 7

    module = types.ModuleType("sbc.app")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sbc.app", module)
    monkeypatch.setattr(cli, "configure", lambda level, fmt: started.append((level, fmt)))
    return started


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(DEFAULT)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{DEFAULT}: ok\n"
    assert captured.err == ""


def test_check_config_reports_errors(bad_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(bad_config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{bad_config}:3: media.timeout: expected a number, got str\n"


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert cli.main(["check-config", str(missing)]) == 1
    assert capsys.readouterr().err.startswith(f"{missing}:1: cannot read the file")


def test_check_config_several_files_fails_if_any_fails(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", str(bad_config), str(DEFAULT)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{DEFAULT}: ok\n"
    assert str(bad_config) in captured.err


def test_run_with_a_bad_config_exits_1_before_starting(
    bad_config: Path, fake_app: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "-c", str(bad_config)]) == 1
    assert fake_app == []  # neither logging nor the app was touched
    assert capsys.readouterr().err == (
        f"{bad_config}:3: media.timeout: expected a number, got str\n"
    )


def test_run_configures_logging_then_runs_the_app(fake_app: list[object]) -> None:
    assert cli.main(["run", "-c", str(DEFAULT)]) == 7
    (level_fmt, config) = fake_app
    assert level_fmt == ("info", "kv")
    assert isinstance(config, Config) and config.source == str(DEFAULT)


def test_run_log_overrides(fake_app: list[object]) -> None:
    cli.main(["run", "-c", str(DEFAULT), "--log-level", "debug", "--log-format", "json"])
    assert fake_app[0] == ("debug", "json")


def test_run_requires_a_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run"])
    assert info.value.code == 2
    assert "-c/--config" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("sbc ")


def sbc_command() -> Path:
    """The console script installed next to the running interpreter (.venv/bin/sbc)."""
    script = Path(sys.executable).parent / "sbc"
    if not script.exists():
        pytest.skip(f"{script} is not installed (run `make venv`)")
    return script


def test_console_script_check_config(bad_config: Path) -> None:
    script = sbc_command()
    ok = subprocess.run(
        [str(script), "check-config", str(DEFAULT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (ok.returncode, ok.stdout) == (0, f"{DEFAULT}: ok\n"), ok.stderr
    bad = subprocess.run(
        [str(script), "check-config", str(bad_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr == f"{bad_config}:3: media.timeout: expected a number, got str\n"


def test_python_dash_m_sbc() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sbc", "check-config", str(DEFAULT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert (result.returncode, result.stdout) == (0, f"{DEFAULT}: ok\n"), result.stderr
