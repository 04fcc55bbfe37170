"""The management API over HTTPS with client certificates (`api: {tls: ...}`), driven by the
`sbc` CLI as an operator would run it from another host."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.calls import CallLab
from tests.support.certs import make_ca, make_signed_cert
from tests.support.net import free_port
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

TOKEN = "t0ken-for-the-https-api"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sbc", *args], capture_output=True, text=True, timeout=20
    )


def _certificate(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as secure:
            certificate = secure.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def test_cli_reaches_the_api_over_mutual_tls_and_nothing_else_does(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = make_signed_cert(tmp_path, ca, "api", ("127.0.0.1",))
    operator = make_signed_cert(tmp_path, ca, "operator", ("operator.example.test",))
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    port = free_port("127.0.0.1")
    extra = (
        f"api: {{listen: '127.0.0.1:{port}', token_file: api.token, "
        f"tls: {{cert: {server[0]}, key: {server[1]}, ca: {ca[0]}, verify_peer: true}}}}\n"
    )
    url = f"https://127.0.0.1:{port}"
    token = ("--token-file", str(tmp_path / "api.token"))
    with CallLab(tmp_path, extra_yaml=extra) as lab:
        assert lab.sbc is not None
        lab.sbc.wait_for_log(rf"event=sbc\.api_listening .*url={url}")
        ok = _cli("trunks", "--api", url, "--ca", str(ca[0]), "--cert", str(operator[0]),
                  "--key", str(operator[1]), *token)  # fmt: skip
        no_cert = _cli("trunks", "--api", url, "--ca", str(ca[0]), *token)
        wrong_ca = _cli("trunks", "--api", url, "--cert", str(operator[0]),
                        "--key", str(operator[1]), *token)  # fmt: skip
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
        # A renewal in place and a reload: new connections get the new certificate.
        context = ssl.create_default_context(cafile=str(ca[0]))
        context.load_cert_chain(str(operator[0]), str(operator[1]))
        first = _certificate(port, context)
        (tmp_path / "renewal").mkdir()
        renewed = make_signed_cert(tmp_path / "renewal", ca, "api", ("127.0.0.1",))
        for new, live in zip(renewed, server, strict=True):
            live.write_bytes(new.read_bytes())
        start = len(lab.sbc.log_lines())
        os.kill(lab.sbc.pid, signal.SIGHUP)
        lab.sbc.wait_for_log(r"event=config\.reloaded ", start=start)
        second = _certificate(port, context)
        after = _cli("trunks", "--api", url, "--ca", str(ca[0]), "--cert", str(operator[0]),
                     "--key", str(operator[1]), *token)  # fmt: skip
    assert ok.returncode == 0 and "itsp" in ok.stdout, ok.stderr
    assert first != second and after.returncode == 0, after.stderr
    # No client certificate: the handshake is refused before any HTTP (exit 2, unreachable).
    assert no_cert.returncode == 2, (no_cert.stdout, no_cert.stderr)
    # The API's certificate is not signed by a CA the system trusts.
    assert wrong_ca.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.stderr, (
        wrong_ca.stderr
    )


def test_api_tls_with_verify_peer_needs_a_ca(tmp_path: Path) -> None:
    config = tmp_path / "sbc.yaml"
    config.write_text(
        "api: {listen: '127.0.0.1:8089', token_file: api.token,\n"
        "      tls: {cert: api.pem, key: api.key, verify_peer: true}}\n"
    )
    checked = _cli("check-config", str(config))
    assert checked.returncode == 1
    assert f"{config}:1: api.tls.ca: required with verify_peer" in checked.stdout + checked.stderr
