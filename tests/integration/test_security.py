"""The edge guard against real attackers, end to end: the real `sbc` process between a SIPp PBX
(127.0.0.10) and a SIPp ITSP (127.0.0.20), attacked from other loopback addresses by a Python
flooder, a Python digest guesser and the SIPVicious tools (svmap, svwar, svcrack).

What each test proves, and how it could fail:
- a flood from one address is blocked (one `security.blocked` line) and from then on gets no
  answer at all, while the trusted PBX, itself above the flood limit, completes every call;
- digest guessing locks the guessing source out (silent drop, even for the right password)
  and, spread over many sources, locks the username (403 even with the right password), while
  other sources and other users go on calling;
- SIPVicious learns nothing: the external interface (`respond_to_unknown: false`) is silent,
  existing and nonexistent extensions are answered alike, the cracker is locked out before it
  reaches the right password, and its default User-Agent is dropped at once.
Controls (svmap finding the internal interface, svcrack cracking a password at the top of
its list) show the tools and the output parsing work, so silence is the SBC's doing.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbc.sip.auth import build_credentials, parse_challenge
from tests.support.calls import (
    ITSP_HOST,
    SBC_EXTERNAL,
    CallLab,
    CallOutcome,
)
from tests.support.net import UdpClient, free_port
from tests.support.process import SbcProcess
from tests.support.sipmsg import header, sip_request, status_of
from tests.support.sipp import SIPP

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

T1 = 0.05  # s: short transaction timers, as in test_calls
REALM = "sbc.test"
PASSWORDS = {"201": "pw-201", "202": "pw-202"}
# SIPp answers MD5 only: offer just MD5 (as test_calls' PBX_AUTH). With auth, the PBX's
# trusted source is an address nobody sends from, so every caller, the SIPp PBX at
# 127.0.0.10 included, must prove a user.
PBX_AUTH = (
    f'auth: {{realm: {REALM}, users: {{"201": {PASSWORDS["201"]}, "202": {PASSWORDS["202"]}}}, '
    "algorithms: [MD5]}"
)
TRUSTED_ELSEWHERE = "127.0.0.99/32"
# A generous answer wait: "no answer" can only be shown by waiting, and one second is ages
# for an SBC that answers on loopback in a millisecond.
SILENCE = 1.0


# ---------------------------------------------------------------------------- the lab


class SecurityLab(CallLab):
    """A CallLab whose external interface may answer strangers nothing."""

    def __init__(self, tmp_path: Path, *, quiet_external: bool = False, **kwargs: object) -> None:
        super().__init__(tmp_path, **kwargs)  # type: ignore[arg-type]
        self.quiet_external = quiet_external

    def config_text(self) -> str:
        text = super().config_text()
        if self.quiet_external:
            marker = f"advertise: {SBC_EXTERNAL}, "
            assert marker in text, text
            text = text.replace(marker, marker + "respond_to_unknown: false, ", 1)
        return text

    @property
    def process(self) -> SbcProcess:
        assert self.sbc is not None, "the lab was not started"
        return self.sbc

    def blocked_lines(self, key: str) -> list[str]:
        pattern = re.compile(rf"event=security\.blocked .*\bkey={re.escape(key)}\b")
        return [line for line in self.process.log_lines() if pattern.search(line)]

    def wait_blocked(
        self, key: str, reason: str, kind: str = "source", timeout: float = 5.0
    ) -> str:
        return self.process.wait_for_log(
            rf"event=security\.blocked .*\bkey={re.escape(key)} kind={kind} reason={reason}\b",
            timeout,
        )


def security_yaml(**sections: str) -> str:
    """A `security:` section from flow-mapping texts, e.g. auth='{max_source_failures: 3}'."""
    return "security:\n" + "".join(f"  {name}: {value}\n" for name, value in sections.items())


def assert_ok(outcome: CallOutcome) -> None:
    assert outcome.ok, outcome.describe()


def user_request(
    method: str,
    user: str,
    target: tuple[str, int],
    source: tuple[str, int],
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A request about `user` as SIPVicious words it: From and To name the user, and so does
    the Request-URI, except for a REGISTER (which names the domain: sip:host:port)."""
    host, port = target
    request = sip_request(method, target, source=source, headers=headers)
    uri = f"sip:{host}:{port}" if method == "REGISTER" else f"sip:{user}@{host}:{port}"
    request = request.replace(
        f"{method} sip:sbc@{host}:{port} ".encode(), f"{method} {uri} ".encode()
    )
    return re.sub(rb"(From|To): <sip:[^@]+@", rf"\1: <sip:{user}@".encode(), request)


def ack_for(invite: bytes, answer: bytes) -> bytes:
    """The ACK of a non-2xx final answer to `invite` (RFC 3261 §17.1.1.3)."""
    uri = invite.split(b" ", 2)[1].decode()
    lines = [
        f"ACK {uri} SIP/2.0",
        f"Via: {header(invite, 'Via')}",
        "Max-Forwards: 70",
        f"From: {header(invite, 'From')}",
        f"To: {header(answer, 'To')}",
        f"Call-ID: {header(invite, 'Call-ID')}",
        f"CSeq: {(header(invite, 'CSeq') or '1').split()[0]} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---------------------------------------------------------------------------- 1. flood


class Flooder:
    """Sends requests (OPTIONS, or INVITEs whose final answers it ACKs at once) from `host` to
    `target` at `rate` per second on a thread until stopped, and notes every answer as
    (sequence number of its request, status): the number is carried in the Call-ID."""

    def __init__(
        self,
        host: str,
        target: tuple[str, int],
        rate: float,
        method: str = "OPTIONS",
        burst: int = 1,
    ) -> None:
        self.host = host
        self.target = target
        self.rate = rate
        self.method = method
        self.burst = burst  # requests sent back to back, the bursts spaced to keep the rate
        self.sent = 0
        self.answers: list[tuple[int, int]] = []
        self.started = self.stopped = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._invites: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Flooder:
        self.sock.bind((self.host, 0))
        self.sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            self.sock.close()

    @property
    def answered(self) -> list[int]:
        return [seq for seq, _ in self.answers]

    def sent_after_now(self) -> int:
        """A sequence number from which on every request is sent after this call (the one
        being sent right now may have left before it)."""
        return self.sent + 1

    def _request(self, seq: int) -> bytes:
        request = sip_request(
            self.method,
            self.target,
            source=(self.host, self.sock.getsockname()[1]),
            call_id=f"flood-{seq}@{self.host}",
            branch=f"z9hG4bK-flood-{seq}",
        )
        if self.method == "INVITE":
            self._invites[seq] = request
        return request

    def _run(self) -> None:
        self.started = time.monotonic()
        interval = self.burst / self.rate
        while not self._stop.is_set():
            # Send what is due by now (a burst, or more to catch up on a busy box), then
            # read what came back until the next burst is due.
            due = (int((time.monotonic() - self.started) / interval) + 1) * self.burst
            while self.sent < due:
                self.sock.sendto(self._request(self.sent), self.target)
                self.sent += 1
            self._drain()
            time.sleep(interval / 2)  # pacing a sender: not synchronisation
        self.stopped = time.monotonic()
        # The SBC answers in well under a millisecond: what is still on its way arrives now.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            self._drain()
            time.sleep(0.01)

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            match = re.search(rb"Call-ID: flood-(\d+)@", data)
            status = status_of(data)
            if match is None or status is None:
                continue
            seq = int(match.group(1))
            self.answers.append((seq, status))
            if status >= 200 and seq in self._invites:
                self.sock.sendto(ack_for(self._invites[seq], data), self.target)

    @property
    def achieved_rate(self) -> float:
        return self.sent / max(self.stopped - self.started, 1e-9)


def test_flooding_source_is_blocked_while_the_trusted_pbx_completes_every_call(
    tmp_path: Path,
) -> None:
    calls = 50
    flooder_host = "127.0.0.66"
    # The PBX's ~150 requests in about 2 s, and the ITSP's answers, are well above this limit:
    # only their trust (PBX trusted_sources, trunk address) keeps them from being blocked.
    limit = 60
    lab = SecurityLab(
        tmp_path,
        sip={"t1": T1},
        extra_yaml=security_yaml(flood=f"{{window: 2, max_requests: {limit}}}", block_time="60"),
    )
    with lab:
        sbc = lab.process
        pair = lab.start_outbound(
            "call_out_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-m", str(calls), "-r", "25", "-l", str(calls), "-d", "300"),
            itsp_args=("-m", str(calls)),
            timeout=20.0,
        )
        try:
            with Flooder(flooder_host, lab.internal_addr, rate=400) as flooder:
                sbc.wait_for_log(
                    rf"event=security\.blocked .*key={re.escape(flooder_host)} "
                    r"kind=source reason=flood\b"
                )
                # Everything sent from now on is sent to a source already blocked.
                blocked_at = flooder.sent_after_now()
                outcome = pair.wait(callee_grace=10.0)
                flooder.stop()
        except BaseException:
            pair.kill()
            raise
        blocked = lab.blocked_lines(flooder_host)
        others = [
            line
            for line in sbc.log_lines()
            if "event=security.blocked" in line and flooder_host not in line
        ]
        # The block is visible while it lasts: kill -USR1 lists it.
        start = len(sbc.log_lines())
        os.kill(sbc.pid, signal.SIGUSR1)
        listed = sbc.wait_for_log(r"event=sbc\.security_block ", start=start)
    assert_ok(outcome)
    assert f"key={flooder_host} " in listed and "reason=flood" in listed, listed
    assert outcome.pbx.result.successful == calls, outcome.describe()
    assert outcome.pbx.result.failed == 0, outcome.describe()
    assert len(blocked) == 1, blocked
    assert not others, f"a trusted peer was blocked: {others}"
    assert flooder.answered, "the flooder was never answered: nothing shows it reached the SBC"
    late = [seq for seq in flooder.answered if seq >= blocked_at]
    assert not late, f"{len(late)} answers to requests sent after the block, first {late[:5]}"
    assert flooder.sent - blocked_at >= 200, (
        f"only {flooder.sent - blocked_at} requests were sent after the block: the check of "
        "the silence is too weak"
    )
    # The PBX sent more than twice the flood limit: trust, not a quiet PBX, kept it in.
    pbx_requests = len([m for m in outcome.pbx.sent if m.is_request])
    assert pbx_requests > 2 * limit, pbx_requests
    print(
        f"flooder: {flooder.sent} OPTIONS at {flooder.achieved_rate:.0f}/s, "
        f"{len(flooder.answered)} answered (all before the block, "
        f"{flooder.sent - blocked_at} sent after it); PBX: {outcome.pbx.result.successful} calls"
    )


def test_a_blocked_invite_flooder_gets_no_retransmissions(tmp_path: Path) -> None:
    # The flooder ACKs every final answer as soon as it reads it: while it is welcome those
    # ACKs stop the SBC's retransmissions (RFC 3261 §17.2.1, Timer G); a final answer seen
    # twice is a retransmission whose ACK the SBC did not take. INVITEs go in bursts of 20
    # (the 407s of a burst are ACKed after it), so when the block trips some 407s are
    # always still waiting for their ACK, as on any real link.
    host = "127.0.0.67"
    lab = SecurityLab(tmp_path, sip={"t1": T1}, pbx_extra=PBX_AUTH, pbx_trusted=TRUSTED_ELSEWHERE)
    with lab:
        with Flooder(host, lab.internal_addr, rate=400, method="INVITE", burst=20) as flooder:
            lab.wait_blocked(host, "flood")
            blocked_at = len(flooder.answers)
            # Timer G fires first after T1 (50 ms here), then doubles: 1 s shows several.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                time.sleep(0.05)  # nothing to await: this waits for what should not come
            flooder.stop()
    assert {status for _, status in flooder.answers[:blocked_at]} >= {407}, flooder.answers[:10]
    seen: set[tuple[int, int]] = set()
    repeats = []
    for index, answer in enumerate(flooder.answers):
        if answer in seen and answer[1] >= 200 and index >= blocked_at:
            repeats.append(answer)
        seen.add(answer)
    assert not repeats, f"{len(repeats)} final answers retransmitted after the block: {repeats[:5]}"


# ---------------------------------------------------------------------------- 2. digest guessing


class DigestClient:
    """REGISTERs from one source address, answering the 401 with digest credentials."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.client = UdpClient(host)
        self.host = host
        self.target = target
        self.last_challenge: str | None = None
        self.last_answer: bytes | None = None
        self._nc = itertools.count(2)

    def close(self) -> None:
        self.client.close()

    def send(self, user: str, authorization: str | None = None) -> bytes | None:
        """One REGISTER for `user` (with credentials when given); its answer or None."""
        headers: tuple[tuple[str, str], ...] = (("Expires", "60"),)
        if authorization is not None:
            headers += (("Authorization", authorization),)
        request = user_request("REGISTER", user, self.target, self.client.address, headers)
        self.client.send(request, self.target)
        self.last_answer = self.client.recv(SILENCE)
        return self.last_answer

    def register(self, user: str, password: str) -> list[int | None]:
        """The status of the unauthenticated REGISTER and, after a 401, of the one with
        credentials for `password`; None where nothing came back."""
        first = self.send(user)
        statuses = [status_of(first)]
        if status_of(first) != 401:
            return statuses
        assert first is not None
        self.last_challenge = header(first, "WWW-Authenticate")
        assert self.last_challenge, first
        statuses.append(status_of(self.send(user, self.credentials(user, password))))
        return statuses

    def credentials(self, user: str, password: str, *, reuse: bool = False) -> str:
        """Credentials answering the last challenge (with a fresh nc when `reuse`)."""
        assert self.last_challenge is not None
        challenge = parse_challenge(self.last_challenge)
        host, port = self.target
        return build_credentials(
            challenge,
            username=user,
            password=password,
            method="REGISTER",
            uri=f"sip:{host}:{port}",
            cnonce=uuid.uuid4().hex[:16],
            nc=next(self._nc) if reuse else 1,
        )


@pytest.fixture
def attackers() -> Iterator[list[DigestClient]]:
    made: list[DigestClient] = []
    yield made
    for client in made:
        client.close()


def _client(made: list[DigestClient], host: str, lab: CallLab) -> DigestClient:
    client = DigestClient(host, lab.internal_addr)
    made.append(client)
    return client


def test_digest_guessing_source_is_locked_out_silently(
    tmp_path: Path, attackers: list[DigestClient]
) -> None:
    limit = 3
    lab = SecurityLab(
        tmp_path,
        sip={"t1": T1},
        pbx_extra=PBX_AUTH,
        pbx_trusted=TRUSTED_ELSEWHERE,
        extra_yaml=security_yaml(auth=f"{{max_source_failures: {limit}}}"),
    )
    with lab:
        guesser = _client(attackers, "127.0.0.71", lab)
        guesses = [guesser.register("201", f"guess-{n}") for n in range(1, limit)]
        # Each wrong password is answered 403 (not challenged again) until the limit.
        assert guesses == [[401, 403]] * (limit - 1), guesses
        assert not lab.blocked_lines("127.0.0.71")
        last = guesser.register("201", f"guess-{limit}")
        assert last[0] == 401, last
        line = lab.wait_blocked("127.0.0.71", "auth-failures")
        assert f"{limit} digest failures" in line, line

        # From now on the source is silenced: no new challenge, no answer to the right
        # password (on the challenge it already has), nor to anything else.
        source, target = guesser.client.address, lab.internal_addr
        right = guesser.credentials("201", PASSWORDS["201"], reuse=True)
        for request in (
            user_request("REGISTER", "201", target, source),
            user_request("REGISTER", "201", target, source, (("Authorization", right),)),
            sip_request("OPTIONS", target, source=source),
        ):
            guesser.client.send(request, target)
        answers = guesser.client.recv_until(None, SILENCE)
        assert answers == [], answers

        # Another source with the right password: registers, and the PBX calls through.
        honest = _client(attackers, "127.0.0.72", lab)
        assert honest.register("201", PASSWORDS["201"]) == [401, 200]
        outcome = lab.run_outbound(
            "call_digest_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-au", "201", "-ap", PASSWORDS["201"], "-d", "100"),
        )
        log = lab.process.log_text()
    assert_ok(outcome)
    assert len(lab.blocked_lines("127.0.0.71")) == 1
    assert "pw-201" not in log and "guess-" not in log


def test_the_digest_failure_that_trips_the_block_is_not_answered(
    tmp_path: Path, attackers: list[DigestClient]
) -> None:
    lab = SecurityLab(
        tmp_path,
        sip={"t1": T1},
        pbx_extra=PBX_AUTH,
        pbx_trusted=TRUSTED_ELSEWHERE,
        extra_yaml=security_yaml(auth="{max_source_failures: 1}"),
    )
    with lab:
        guesser = _client(attackers, "127.0.0.79", lab)
        statuses = guesser.register("201", "guess")
        lab.wait_blocked("127.0.0.79", "auth-failures")
    assert statuses == [401, None], statuses


def test_guesses_spread_over_sources_lock_the_username_not_the_others(
    tmp_path: Path, attackers: list[DigestClient]
) -> None:
    user_limit = 4
    lab = SecurityLab(
        tmp_path,
        sip={"t1": T1},
        pbx_extra=PBX_AUTH,
        pbx_trusted=TRUSTED_ELSEWHERE,
        extra_yaml=security_yaml(
            auth=f"{{max_source_failures: 3, max_username_failures: {user_limit}}}"
        ),
    )
    with lab:
        # One guess per source: no source comes near its own limit.
        sources = [f"127.0.0.{73 + n}" for n in range(user_limit)]
        for n, host in enumerate(sources):
            assert not lab.blocked_lines("201"), f"locked after {n} failures"
            statuses = _client(attackers, host, lab).register("201", f"guess-{n}")
            assert statuses == [401, 403], (host, statuses)
        line = lab.wait_blocked("201", "auth-failures", kind="username")
        assert f"{user_limit} digest failures" in line, line

        # The right password for 201 now gets 403 from a fresh source; 202 still works.
        fresh = _client(attackers, "127.0.0.78", lab)
        assert fresh.register("201", PASSWORDS["201"]) == [401, 403]
        assert fresh.register("202", PASSWORDS["202"]) == [401, 200]
        # The same through SIPp: a call as 201 with the right password is refused.
        pair = lab.start_outbound(
            "call_badpass_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-au", "201", "-ap", PASSWORDS["201"]),
        )
        try:
            refused = pair.finish("pbx", 10.0)
        finally:
            pair.kill()  # the ITSP waits for a call that never comes
        itsp_invites = pair.finish("itsp").received_requests("INVITE")
        outcome = lab.run_outbound(
            "call_digest_pbx.xml",
            "call_out_itsp.xml",
            pbx_args=("-au", "202", "-ap", PASSWORDS["202"], "-d", "100"),
        )
        source_blocks = [
            line
            for line in lab.process.log_lines()
            if "event=security.blocked" in line and "kind=source" in line
        ]
    # The right password for the locked user: 403, and nothing reached the ITSP.
    assert refused.ok, refused.describe()
    assert not itsp_invites, itsp_invites
    assert_ok(outcome)
    assert not source_blocks, source_blocks


# ---------------------------------------------------------------------------- 3. SIPVicious


SIPVICIOUS_TOOLS = {"svmap": "DrinkOrSip", "svwar": "TakeASip", "svcrack": "ASipOfRedWine"}
try:
    import sipvicious  # noqa: F401

    HAVE_SIPVICIOUS = True
except ImportError:
    HAVE_SIPVICIOUS = False
needs_sipvicious = pytest.mark.skipif(
    not HAVE_SIPVICIOUS, reason="SIPVicious is not installed (pip install -e '.[test]')"
)

# Runs one tool's main() with two things fixed up in its scanner class: the -b address is
# honoured (svwar and svcrack 0.3.8 accept -b/--bindingip but never hand it to the class,
# which then binds 0.0.0.0 and the kernel sends from 127.0.0.1: every tool would share one
# source address; svmap is fine), and the socket timeout, which only bounds the last wait
# for stragglers once a tool has given up (svcrack hard-codes 10 s), is 1 s.
_TOOL_SHIM = """
import sys, importlib
tool, cls_name = sys.argv.pop(1), sys.argv.pop(1)
module = importlib.import_module("sipvicious." + tool)
cls = getattr(module, cls_name)
bind = sys.argv[sys.argv.index("-b") + 1]
original = cls.__init__
def __init__(self, *args, **kwargs):
    kwargs.setdefault("bindingip", bind)
    original(self, *args, **kwargs)
    self.sock.settimeout(1.0)
cls.__init__ = __init__
sys.argv[0] = "sipvicious_" + tool
module.main()
"""


@dataclass(slots=True)
class ToolRun:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        shown = " ".join(self.command[self.command.index("-b") - 2 :])
        return f"$ sipvicious_{shown}\nexit {self.returncode}\n{self.output}"


def run_tool(
    tool: str, args: Sequence[str], host: str, workdir: Path, timeout: float = 20.0
) -> ToolRun:
    """Run a SIPVicious tool (-v: its findings are info lines) from `host` and a free port
    there, stdin closed, bounded in time; HOME is the test's directory (sessions go there)."""
    command = [
        sys.executable, "-c", _TOOL_SHIM, tool, SIPVICIOUS_TOOLS[tool],
        "-b", host, "-P", str(free_port(host)), "-v", *args,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"sipvicious_{tool} still ran after {timeout:g} s: {exc}") from None
    run = ToolRun(command, done.returncode, done.stdout, done.stderr)
    with (workdir / "sipvicious.log").open("a") as log:
        log.write(run.describe() + "\n")
    return run


def svmap_devices(run: ToolRun) -> list[str]:
    """The 'host:port' rows of svmap's result table."""
    return re.findall(r"^\|\s*(\d+\.\d+\.\d+\.\d+:\d+)\s*\|", run.stdout, re.MULTILINE)


def svwar_extensions(run: ToolRun) -> list[str]:
    """The extensions svwar reports (its result table, and its 'exists' log lines)."""
    table = re.findall(r"^\|\s*(\w+)\s*\|\s*(?:reqauth|noauth|weird)\s*\|", run.stdout, re.M)
    logged = re.findall(r"extension '([^']+)' (?:exists|probably exists)", run.output)
    return sorted(set(table) | set(logged))


# Headers that only echo the request (they name the extension asked about) or differ per
# answer by design (tags, nonces).
_ECHOED = frozenset({"via", "from", "to", "call-id", "cseq", "contact"})
_NONCE = re.compile(r'nonce="[^"]*"')


def answer_shape(answer: bytes | None) -> tuple[str, ...]:
    """An answer as a scanner could tell answers apart: status line, header names in order,
    and the values of the headers the SBC wrote (with the nonce masked)."""
    assert answer is not None, "no answer"
    lines = answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    shape = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(":")
        shown = "" if name.strip().lower() in _ECHOED else value.strip()
        shape.append(f"{name.strip()}: {_NONCE.sub('nonce=*', shown)}")
    return tuple(shape)


def assert_indistinguishable(lab: CallLab, method: str, host: str) -> None:
    """Ask about extensions 200-210 (201 and 202 exist) one by one, as svwar does, and
    require one and the same answer for all of them."""
    shapes: dict[tuple[str, ...], list[str]] = {}
    with UdpClient(host) as client:
        for number in range(200, 211):
            user = str(number)
            request = user_request(method, user, lab.internal_addr, client.address)
            client.send(request, lab.internal_addr)
            answer = client.recv(SILENCE)
            while (status_of(answer) or 200) < 200:  # an INVITE's 100 Trying
                answer = client.recv(SILENCE)
            if method == "INVITE" and status_of(answer) is not None:
                assert answer is not None
                client.send(ack_for(request, answer), lab.internal_addr)
            shapes.setdefault(answer_shape(answer), []).append(user)
    assert len(shapes) == 1, f"{method} answers differ by extension:\n" + "\n".join(
        f"{users}: {shape}" for shape, users in shapes.items()
    )
    (shape,) = shapes
    assert shape[0].split()[1] in ("401", "407"), shape


@needs_sipvicious
def test_sipvicious_learns_nothing(tmp_path: Path) -> None:
    # Scanner fingerprints off, so that every layer behind them is what the tools meet: the
    # silent external interface, the answers for existing and nonexistent users, the lockout.
    limit = 3
    lab = SecurityLab(
        tmp_path,
        sip={"t1": T1},
        pbx_extra=PBX_AUTH,
        pbx_trusted=TRUSTED_ELSEWHERE,
        quiet_external=True,
        extra_yaml=security_yaml(
            scanners="{user_agents: []}", auth=f"{{max_source_failures: {limit}}}"
        ),
    )
    with lab:
        sbc = lab.process
        # svmap: the external interface does not exist for a stranger...
        ext_host, ext_port = lab.external_addr
        scan = run_tool("svmap", ["-p", str(ext_port), ext_host], "127.0.0.81", tmp_path)
        assert svmap_devices(scan) == [], scan.describe()
        assert "found nothing" in scan.output, scan.describe()
        # ...though it answers the trunk's address there...
        with UdpClient(ITSP_HOST) as trunk:
            trunk.send(
                sip_request("OPTIONS", lab.external_addr, source=trunk.address), lab.external_addr
            )
            assert status_of(trunk.recv(SILENCE)) == 200
        # ...and the same scan of the internal one finds the SBC (the tool and parsing work).
        int_host, int_port = lab.internal_addr
        control = run_tool("svmap", ["-p", str(int_port), int_host], "127.0.0.82", tmp_path)
        assert svmap_devices(control) == [f"{int_host}:{int_port}"], control.describe()

        # svwar, extensions 200-210 where 201 and 202 exist. OPTIONS: every one gets a 200,
        # the whole range is scanned. REGISTER, INVITE: an unknown extension is challenged
        # like every other (svwar warns it will learn nothing; --force goes on), and svwar
        # gives up at the first extension answered the same way.
        target = f"udp://{int_host}:{int_port}"
        wars = {
            method: run_tool(
                "svwar",
                ["-e", "200-210", "-m", method, "--force", "--maximumtime", "2", target],
                f"127.0.0.{83 + n}",
                tmp_path,
            )
            for n, method in enumerate(("OPTIONS", "REGISTER", "INVITE"))
        }
        for war in wars.values():
            assert "Ok SIP device found" in war.output, war.describe()  # it did get answers
            assert svwar_extensions(war) == [], war.describe()
            assert "found nothing" in war.output, war.describe()
        # What svwar would have compared, extension by extension: one answer for all.
        assert_indistinguishable(lab, "REGISTER", "127.0.0.93")
        assert_indistinguishable(lab, "INVITE", "127.0.0.94")
        # Wrong credentials for an existing user and for none: the same 403.
        prober = DigestClient("127.0.0.95", lab.internal_addr)
        try:
            refusals = {
                user: (prober.register(user, "guess"), prober.last_answer)
                for user in ("201", "209")
            }
        finally:
            prober.close()
        assert [statuses for statuses, _ in refusals.values()] == [[401, 403]] * 2, refusals
        assert len({answer_shape(answer) for _, answer in refusals.values()}) == 1, refusals

        # svcrack: the right password is 5th in the list; the source is locked out after 3.
        words = tmp_path / "words.txt"
        words.write_text("\n".join(["1234", "0000", "201", "password", PASSWORDS["201"], "x"]))
        crack_args = ["-u", "201", "-d", str(words), "-t", "0.02", "--maximumtime", "2", target]
        crack = run_tool("svcrack", crack_args, "127.0.0.96", tmp_path)
        assert PASSWORDS["201"] not in crack.output, crack.describe()
        assert "It has been" in crack.output, crack.describe()  # it gave up on silence
        lab.wait_blocked("127.0.0.96", "auth-failures")
        guesses = [
            line
            for line in sbc.log_lines()
            if "event=auth.refused" in line and "source=udp:127.0.0.96:" in line
        ]
        assert len(guesses) == limit, guesses  # it tried 3 passwords, then heard nothing
        # Control: the same tool from another source, the password first in its list.
        first = tmp_path / "first.txt"
        first.write_text(f"{PASSWORDS['201']}\n1234\n")
        control_crack = run_tool(
            "svcrack",
            ["-u", "201", "-d", str(first), "-t", "0.02", "--maximumtime", "2", target],
            "127.0.0.97",
            tmp_path,
        )
        assert f"The password for 201 is {PASSWORDS['201']}" in control_crack.output, (
            control_crack.describe()
        )
        blocked = [line for line in sbc.log_lines() if "event=security.blocked" in line]
    # Only the cracker was blocked: scanning alone trips nothing here (fingerprints are off,
    # and challenges are no failures).
    assert len(blocked) == 1 and "key=127.0.0.96 " in blocked[0], blocked
    for run in (scan, control, *wars.values(), crack, control_crack):
        print(run.describe())


@needs_sipvicious
def test_scanner_user_agent_is_dropped_at_once(tmp_path: Path) -> None:
    # Default fingerprints: SIPVicious says "friendly-scanner" in every request.
    lab = SecurityLab(tmp_path, sip={"t1": T1}, pbx_extra=PBX_AUTH, pbx_trusted=TRUSTED_ELSEWHERE)
    with lab:
        int_host, int_port = lab.internal_addr
        with UdpClient("127.0.0.87") as scanner:
            clean = sip_request("OPTIONS", lab.internal_addr, source=scanner.address)
            scanner.send(clean, lab.internal_addr)
            assert status_of(scanner.recv(SILENCE)) == 200  # the source itself is welcome
            tagged = sip_request(
                "OPTIONS",
                lab.internal_addr,
                source=scanner.address,
                headers=(("User-Agent", "friendly-scanner"),),
            )
            scanner.send(tagged, lab.internal_addr)
            assert scanner.recv(SILENCE) is None
            line = lab.wait_blocked("127.0.0.87", "scanner")
            assert "friendly-scanner" in line, line
            scanner.send(clean, lab.internal_addr)  # and now nothing from it is answered
            assert scanner.recv(SILENCE) is None
        # The real tool: its first request is dropped and it is gone.
        war = run_tool(
            "svwar",
            ["-e", "200-210", "--maximumtime", "2", f"udp://{int_host}:{int_port}"],
            "127.0.0.88",
            tmp_path,
        )
        lab.wait_blocked("127.0.0.88", "scanner")
    assert re.search("No server response|socket error: timed out", war.output), war.describe()
    assert svwar_extensions(war) == [], war.describe()
    print(war.describe())


def test_a_silent_interface_answers_a_strangers_malformed_request_with_nothing(
    tmp_path: Path,
) -> None:
    # A 400 would tell a scanner that a SIP stack listens there just as well as a 200.
    garbage = b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.82:5060\r\n\r\n"
    with SecurityLab(tmp_path, quiet_external=True) as lab:
        with UdpClient("127.0.0.82") as stranger:
            stranger.send(garbage, lab.external_addr)
            assert stranger.recv(SILENCE) is None
        with UdpClient(ITSP_HOST) as trunk:  # the trunk's own address still gets its 400
            trunk.send(garbage, lab.external_addr)
            assert status_of(trunk.recv(3.0)) == 400


def _garbage_over_tcp(source_host: str, target: tuple[str, int]) -> bytes:
    """Open a connection from `source_host`, send a request whose Content-Length cannot be
    framed, return whatever comes back before the SBC closes the connection."""
    with socket.create_connection(target, timeout=SILENCE, source_address=(source_host, 0)) as conn:
        conn.sendall(
            b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-g\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: g\r\nCSeq: 1 INVITE\r\n"
            b"Content-Length: many\r\n\r\n"
        )
        received = b""
        try:
            while data := conn.recv(65535):
                received += data
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def _tcp_lab_config(internal: int, external: int, extra: str = "") -> str:
    return (
        "node: test-sbc\nlog: {level: info, format: kv}\ninterfaces:\n"
        f'  internal: {{listen: ["tcp:127.0.0.1:{internal}"], media_address: 127.0.0.1}}\n'
        f'  external: {{listen: ["tcp:{SBC_EXTERNAL}:{external}"], media_address: {SBC_EXTERNAL},'
        " respond_to_unknown: false}\n"
        f"{extra}"
    )


def test_unframeable_tcp_garbage_counts_toward_the_flood_block_and_is_silent_where_asked(
    tmp_path: Path,
) -> None:
    # Garbage that never becomes a message must not dodge the flood detector (one connection
    # after another), and a silent interface must not reveal itself with a 400 to it.
    internal, external = free_port("127.0.0.1"), free_port(SBC_EXTERNAL)
    extra = security_yaml(flood="{window: 5, max_requests: 5}", block_time="60")
    sbc = SbcProcess(tmp_path, config_text=_tcp_lab_config(internal, external, extra))
    with sbc:
        quiet = _garbage_over_tcp("127.0.0.83", (SBC_EXTERNAL, external))
        first = _garbage_over_tcp("127.0.0.84", ("127.0.0.1", internal))
        for _ in range(6):
            _garbage_over_tcp("127.0.0.84", ("127.0.0.1", internal))
        sbc.wait_for_log(r"event=security\.blocked .*\bkey=127\.0\.0\.84 kind=source reason=flood")
        after = _garbage_over_tcp("127.0.0.84", ("127.0.0.1", internal))
        framing = [line for line in sbc.log_lines() if "event=stream.framing_error" in line]
    assert quiet == b""  # the stranger learns nothing on the silent interface
    assert status_of(first) == 400  # the internal interface answers a malformed request
    assert after == b""  # blocked: not even the 400 any more
    # One warning, the rest at debug level (sampled): a garbage flood cannot fill the disk.
    assert sum("level=warning" in line for line in framing) == 1, framing
