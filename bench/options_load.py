"""OPTIONS load benchmark: the real `sbc run` process on loopback driven by SIPp at rising
rates; reports the highest rate answered without a single failed or timed-out OPTIONS, and
the SBC's CPU time per 1,000 OPTIONS (1 request + 1 response each)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support import SbcProcess, run_sipp  # noqa: E402

RATES = (1000, 2000, 4000, 6000, 8000, 12000, 16000)
STEP_SECONDS = 3.0
TOTAL_BUDGET = 60.0  # seconds for the whole benchmark, SBC start-up included
# A step passes when every OPTIONS got its 200 at the first attempt (no SIPp retransmission,
# i.e. no answer slower than 500 ms) and SIPp really sent at (nearly) that rate: below this
# share of the asked rate, the client, not the SBC, was the limit.
MIN_RATE_SHARE = 0.9
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Step:
    rate: int
    sent: int
    answered: int
    failed: int
    retransmissions: int
    call_rate: float
    cpu_seconds: float
    rss_mib: float

    @property
    def clean(self) -> bool:
        """Every OPTIONS answered with a 200 at the first attempt."""
        return self.failed == 0 and self.retransmissions == 0 and self.answered == self.sent

    @property
    def verdict(self) -> str:
        if not self.clean:
            return "FAIL"
        if self.call_rate < MIN_RATE_SHARE * self.rate:
            return "client-limited"  # SIPp could not send this fast on this machine
        return "ok"

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_seconds / self.answered if self.answered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_step(sbc: SbcProcess, rate: int, workdir: Path) -> Step:
    calls = int(rate * STEP_SECONDS)
    before = cpu_seconds(sbc.pid)
    result = run_sipp(
        "options_uac.xml",
        sbc.addr("internal", "udp"),
        workdir,
        calls=calls,
        rate=rate,
        limit=max(rate, 1000),
        local_ip="127.0.0.10",
        timeout=STEP_SECONDS + 8,
        recv_timeout_ms=3000,
        name=f"rate{rate}",
        extra=("-max_recv_loops", "10000", "-max_sched_loops", "10000"),
    )
    used = cpu_seconds(sbc.pid) - before
    return Step(
        rate=rate,
        sent=calls,
        answered=result.successful,
        failed=result.failed + (0 if result.returncode in (0, 1) else 1),
        retransmissions=result.count("Retransmissions"),
        call_rate=float(result.stats.get("CallRate(C)") or 0),
        cpu_seconds=used,
        rss_mib=rss_mib(sbc.pid),
    )


def report(steps: list[Step]) -> None:
    print()
    print("retrans: OPTIONS SIPp had to resend (no answer within 500 ms) - counted as timeouts")
    print(
        f"{'rate/s':>8} {'sent':>7} {'answered':>9} {'failed':>7} {'retrans':>8} "
        f"{'sent/s':>8} {'SBC CPU s':>10} {'CPU s/1k OPTIONS':>17} {'RSS MiB':>8}  result"
    )
    for s in steps:
        print(
            f"{s.rate:>8} {s.sent:>7} {s.answered:>9} {s.failed:>7} {s.retransmissions:>8} "
            f"{s.call_rate:>8.0f} {s.cpu_seconds:>10.2f} {s.cpu_per_1000:>17.3f} "
            f"{s.rss_mib:>8.0f}  {s.verdict}"
        )
    clean = [s for s in steps if s.clean]
    if not clean:
        print("No rate was answered without failures.")
        return
    best = max(clean, key=lambda s: s.call_rate)
    print()
    print(
        f"Highest OPTIONS rate answered with zero failed or timed-out OPTIONS: "
        f"{best.call_rate:.0f}/s (step asked {best.rate}/s)"
    )
    if steps[-1].verdict == "client-limited":
        print(
            "  (SIPp, sharing the CPU with the SBC, could not send faster: the SBC's own "
            "limit is higher; see the CPU figure below)"
        )
    print(
        f"SBC CPU per 1,000 OPTIONS at that rate: {best.cpu_per_1000 * 1000:.0f} ms "
        f"({best.cpu_per_1000 * 1000 / 2:.0f} ms per 1,000 SIP messages, "
        f"counting request and response)"
    )
    print(f"Implied single-core ceiling: ~{1000 / best.cpu_per_1000:.0f} OPTIONS/s")


def main() -> int:
    if shutil.which("sipp") is None:
        print("sipp is not installed (Debian package sip-tester): skipped")
        return 0
    deadline = time.monotonic() + TOTAL_BUDGET
    with tempfile.TemporaryDirectory(prefix="sbc-bench-") as tmp:
        workdir = Path(tmp)
        steps: list[Step] = []
        with SbcProcess(workdir) as sbc:  # info: per-message events are debug
            print(
                f"SBC pid {sbc.pid} listening on udp {sbc.addr('internal', 'udp')}; "
                f"{STEP_SECONDS:g} s per rate step, budget {TOTAL_BUDGET:g} s"
            )
            for rate in RATES:
                # Each step needs its send time plus SIPp's drain and start-up.
                if time.monotonic() + STEP_SECONDS + 8 > deadline:
                    print(f"(stopping before {rate}/s: time budget)")
                    break
                step = run_step(sbc, rate, workdir)
                steps.append(step)
                print(
                    f"  {rate}/s: {step.answered}/{step.sent} answered, "
                    f"{step.failed} failed, {step.retransmissions} retransmitted, "
                    f"sent at {step.call_rate:.0f}/s: {step.verdict}",
                    flush=True,
                )
                if step.verdict != "ok":
                    break
        report(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
