"""Round trips over the media control channel: one WorkerPool worker (uvloop on both sides),
sequential requests, median and 90th percentile of several hundred. Reports allocate (binds
four sockets), set_remote awaited, the cost of a fire-and-forget set_remote to the caller,
and, for reference, MediaRelay.open_session in-process."""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from media.pool import WorkerPool  # noqa: E402
from media.ports import PortPool  # noqa: E402
from media.relay import MediaRelay  # noqa: E402
from media.session import Leg  # noqa: E402

SESSIONS = 300
UPDATES = 500
PBX, TRUNK = "127.0.0.1", "127.0.0.2"


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * len(ordered))]
    return (
        f"{name:<34} median {statistics.median(ordered) * 1e6:7.1f} us"
        f"   p90 {p90 * 1e6:7.1f} us   (n={len(ordered)})"
    )


async def measure() -> None:
    base = random.randrange(30000, 36000, 2)
    pool = WorkerPool((base, base + 2 * 4 * SESSIONS + 99), workers=1, timeout=None)
    await pool.start()
    clock = time.perf_counter
    try:
        allocate: list[float] = []
        for i in range(SESSIONS):
            start = clock()
            await pool.open_session(f"call-{i}", 1, PBX, TRUNK)
            allocate.append(clock() - start)
        awaited: list[float] = []
        for i in range(UPDATES):
            start = clock()
            await pool.apply(
                f"call-{i % SESSIONS}",
                "set_remote",
                stream=0,
                leg=Leg.B,
                remote=("127.0.0.20", 4000 + 2 * (i % 100)),
            )
            awaited.append(clock() - start)
        posted: list[float] = []
        for i in range(UPDATES):
            start = clock()
            pool.set_remote(f"call-{i % SESSIONS}", 0, Leg.A, ("127.0.0.10", 5000 + 2 * (i % 100)))
            posted.append(clock() - start)
        await pool.stats("call-0")  # let the posted updates drain before closing
        delete: list[float] = []
        for i in range(SESSIONS):
            start = clock()
            await pool.close_session(f"call-{i}")
            delete.append(clock() - start)
    finally:
        await pool.close()

    relay = MediaRelay(PortPool(base, base + 2 * 4 * SESSIONS + 99), timeout=None)
    local: list[float] = []
    for i in range(SESSIONS):
        start = clock()
        await relay.open_session(f"call-{i}", 1, PBX, TRUNK)
        local.append(clock() - start)
    await relay.close()

    print(summary("allocate (round trip)", allocate))
    print(summary("set_remote awaited (round trip)", awaited))
    print(summary("set_remote posted (caller's cost)", posted))
    print(summary("delete (round trip)", delete))
    print(summary("open_session in-process (reference)", local))


def main() -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(measure())


if __name__ == "__main__":
    main()
