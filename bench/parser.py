"""Parser benchmark: SIP parse+serialize rate on one core for a typical INVITE with SDP and
a 200 OK, next to Sippy B2BUA's parser on the same messages when it is installed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from bench.messages import INVITE, OK_200
from sbc.sip.message import parse

ROUNDS = 7
ROUND_SECONDS = 0.4


def per_message_us(work: Callable[[], object]) -> float:
    """Median over ROUNDS of the mean time of one call, in microseconds."""
    batch = 1000
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < 0.05:  # warm up and size the batch
        for _ in range(batch):
            work()
        done += batch
    rate = done / (time.perf_counter() - start)
    batch = max(100, int(rate * ROUND_SECONDS))
    results = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(batch):
            work()
        results.append((time.perf_counter() - t0) / batch * 1e6)
    return statistics.median(results)


def ours(data: bytes) -> dict[str, Callable[[], object]]:
    def plain() -> bytes:
        return bytes(parse(data))

    def checked() -> bytes:
        msg = parse(data)
        msg.check()  # what the server does to every message: mandatory headers structured
        return bytes(msg)

    def edited() -> bytes:
        msg = parse(data)
        msg.check()
        msg.set_header("Max-Forwards", "69")  # forces a rebuild from the header lines
        return bytes(msg)

    return {
        "parse+serialize": plain,
        "parse+check+serialize": checked,
        "parse+check+edit+serialize": edited,
    }


def sippy(data: bytes) -> Callable[[], object] | None:
    try:
        from sippy.SipRequest import SipRequest  # type: ignore[import-not-found]
        from sippy.SipResponse import SipResponse  # type: ignore[import-not-found]
    except ImportError:
        return None
    cls = SipResponse if data.startswith(b"SIP/") else SipRequest
    text = data.decode()

    def work() -> bytes:
        return str(cls(buf=text)).encode()

    return work


def main() -> int:
    print(f"{'message':8} {'path':28} {'us/msg':>8} {'msgs/s':>10}  vs sippy")
    for name, data in (("INVITE", INVITE), ("200 OK", OK_200)):
        sippy_work = sippy(data)
        sippy_us = per_message_us(sippy_work) if sippy_work else None
        for path, work in ours(data).items():
            us = per_message_us(work)
            ratio = f"{sippy_us / us:5.1f}x faster" if sippy_us else "(pip install sippy)"
            print(f"{name:8} {path:28} {us:8.2f} {1e6 / us:10,.0f}  {ratio}")
        if sippy_us:
            print(f"{name:8} {'sippy parse+str':28} {sippy_us:8.2f} {1e6 / sippy_us:10,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
