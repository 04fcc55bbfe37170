"""RTP relay benchmark: MediaRelay (uvloop) in its own process relays 200 one-way streams of
172-byte G.711 packets on loopback at rising rates; reports the highest rate relayed with
zero loss and the relay's CPU time per packet (time.process_time inside the relay process)."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from media.plan import LegMedia, SrtpKeys  # noqa: E402
from media.ports import PortPool  # noqa: E402
from media.relay import MediaRelay  # noqa: E402
from media.rtp import build_rtp  # noqa: E402
from media.session import Leg  # noqa: E402
from media.srtp import KEY_LENGTHS  # noqa: E402

STREAMS = 200
PAYLOAD = 160  # 20 ms of G.711 at 8 kHz; + 12 bytes of RTP header = 172
# 10,000/s is 200 streams at the real 50 packets/s; the rest push toward the ceiling.
RATES = (10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000)
STEP_SECONDS = 1.5
TICK = 0.002  # the sender paces in bursts every 2 ms
DRAIN_IDLE = 0.25  # a step is over when nothing arrived for this long
TOTAL_BUDGET = 20.0
SENDER_HOST = "127.0.0.1"  # the "PBX" side
RECEIVER_HOST = "127.0.0.2"  # the "trunk" side
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
# The relay at or under this share of the asked rate was not the limit: the generator was.
MIN_RATE_SHARE = 0.9


# ---------------------------------------------------------------------------- relay process


def relay_process(
    conn: Connection,
    senders: list[int],
    receivers: list[int],
    srtp_keys: list[str] | None = None,
) -> None:
    """Runs in the child: opens one session per stream, then answers 'cpu' queries.
    `srtp_keys`, one per stream: leg A's peer sends SRTP (AES_CM_128_HMAC_SHA1_80) with that
    base64 key||salt (SrtpKeys.inbound of leg A); leg B stays plain RTP."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(conn, senders, receivers, srtp_keys))


async def _serve(
    conn: Connection, senders: list[int], receivers: list[int], srtp_keys: list[str] | None
) -> None:
    loop = asyncio.get_running_loop()
    base = random.randrange(20000, 28000, 2)
    pool = PortPool(base, base + 4 * len(senders) + 199)  # spare pairs for bind retries
    relay = MediaRelay(pool, timeout=None)
    keys = [f"bench-{index}" for index in range(len(senders))]
    endpoints: list[int] = []
    for index, (key, sender, receiver) in enumerate(zip(keys, senders, receivers, strict=True)):
        await relay.open_session(key, 1, SENDER_HOST, RECEIVER_HOST)
        relay.set_remote(key, 0, Leg.A, (SENDER_HOST, sender))
        relay.set_remote(key, 0, Leg.B, (RECEIVER_HOST, receiver))
        if srtp_keys is not None:
            ours = base64.b64encode(os.urandom(KEY_LENGTHS[SRTP_SUITE])).decode()
            keys_a = SrtpKeys(SRTP_SUITE, inbound=srtp_keys[index], outbound=ours)
            relay.configure(key, 0, Leg.A, LegMedia(srtp=keys_a))
        local = relay.endpoints(key, Leg.A)[0]
        assert local is not None
        endpoints.append(local[1])
    conn.send(("ready", endpoints, type(loop).__module__))
    done = loop.create_future()

    def on_command() -> None:
        command = conn.recv()
        if command == "cpu":
            cpu = time.process_time()  # read first: the counting below is not relaying
            forwarded = dropped = refused = 0
            for key in keys:
                leg = relay.stats(key).leg(0, Leg.A).rtp
                forwarded += leg.packets
                dropped += leg.dropped
                refused += leg.refused
            # The CPU time once counted too: the next interval starts here.
            conn.send((cpu, forwarded, dropped, refused, time.process_time()))
        elif not done.done():
            done.set_result(None)

    loop.add_reader(conn.fileno(), on_command)
    await done
    loop.remove_reader(conn.fileno())
    await relay.close()
    conn.send("closed")


# ---------------------------------------------------------------------------- load generator


class Receiver(asyncio.DatagramProtocol):
    """The trunk side of one stream; counts packets per step (the step number is the first
    payload byte, so late packets of a step are never counted in the next)."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.counts[data[12]] += 1


@dataclass(slots=True)
class Step:
    rate: int
    sent: int
    received: int
    seconds: float  # sending time
    cpu_seconds: float
    forwarded: int
    wall_seconds: float  # the interval over which cpu_seconds was measured (drain included)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def lost_before_relay(self) -> int:
        """Never read by the relay: its socket buffers overflowed (the relay was too slow)."""
        return max(0, self.sent - self.forwarded)

    @property
    def lost_after_relay(self) -> int:
        """Forwarded but not received: the generator, which also receives, was too slow."""
        return max(0, self.forwarded - self.received)

    @property
    def send_rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cpu_us_per_packet(self) -> float:
        return 1e6 * self.cpu_seconds / self.forwarded if self.forwarded else float("nan")

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds

    @property
    def verdict(self) -> str:
        if self.send_rate < MIN_RATE_SHARE * self.rate:
            return "generator-limited"
        return "ok" if self.lost == 0 else "LOSS"


class LoadGenerator:
    def __init__(self, conn: Connection, senders: list[socket.socket], counts: list[int]):
        self.conn = conn
        self.senders = senders
        self.counts = counts
        self.targets: list[tuple[str, int]] = []

    def relay_cpu(self) -> tuple[float, int]:
        self.conn.send("cpu")
        cpu, forwarded, *_ = self.conn.recv()
        return float(cpu), int(forwarded)

    async def blast(self, step: int, rate: int, seconds: float) -> tuple[int, float]:
        """Send at `rate` packets/s in total, round robin over the streams; returns what was
        really sent and over how long."""
        packets = [
            build_rtp(0, step, 0, index, bytes([step]) * PAYLOAD)
            for index in range(len(self.senders))
        ]
        pairs = list(zip(self.senders, self.targets, packets, strict=True))
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        cursor = 0
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int(rate * (loop.time() - start))) - sent
            for _ in range(due):
                sock, target, packet = pairs[cursor]
                cursor = (cursor + 1) % len(pairs)
                try:
                    sock.sendto(packet, target)
                except BlockingIOError:
                    break  # the kernel buffer is full; the next tick retries
                sent += 1
            await asyncio.sleep(TICK)
        return sent, loop.time() - start

    async def drain(self, step: int, expected: int) -> int:
        """Wait until every packet arrived or nothing arrived for DRAIN_IDLE seconds."""
        last, quiet = -1, 0.0
        while self.counts[step] < expected and quiet < DRAIN_IDLE:
            await asyncio.sleep(0.01)
            quiet = quiet + 0.01 if self.counts[step] == last else 0.0
            last = self.counts[step]
        return self.counts[step]

    async def run_step(self, step: int, rate: int) -> Step:
        wall0 = time.monotonic()
        cpu0, forwarded0 = self.relay_cpu()
        sent, seconds = await self.blast(step, rate, STEP_SECONDS)
        received = await self.drain(step, sent)
        cpu1, forwarded1 = self.relay_cpu()
        wall = time.monotonic() - wall0
        return Step(rate, sent, received, seconds, cpu1 - cpu0, forwarded1 - forwarded0, wall)


async def generate(
    conn: Connection,
    senders: list[socket.socket],
    receivers: list[socket.socket],
    counts: list[int],
) -> list[Step]:
    deadline = time.monotonic() + TOTAL_BUDGET - 3.0  # start-up is already behind us
    loop = asyncio.get_running_loop()
    transports = []
    for sock in receivers:
        transport, _ = await loop.create_datagram_endpoint(lambda: Receiver(counts), sock=sock)
        transports.append(transport)
    generator = LoadGenerator(conn, senders, counts)
    message = conn.recv()
    _, relay_ports, relay_loop = message
    generator.targets = [(SENDER_HOST, port) for port in relay_ports]
    print(f"relay ready: {len(relay_ports)} sessions, event loop {relay_loop}", flush=True)

    # Step 0 warms up: one packet per stream, so every leg is latched before measuring.
    await generator.blast(0, len(senders) * 20, 0.05)
    warm = await generator.drain(0, len(senders))
    if warm < len(senders):
        print(f"warm-up: only {warm}/{len(senders)} streams relayed a packet", flush=True)

    steps: list[Step] = []
    for number, rate in enumerate(RATES, start=1):
        if time.monotonic() + STEP_SECONDS + DRAIN_IDLE + 0.5 > deadline:
            print(f"(stopping before {rate}/s: time budget)", flush=True)
            break
        step = await generator.run_step(number, rate)
        steps.append(step)
        print(
            f"  {rate:>7}/s asked: sent {step.sent} at {step.send_rate:,.0f}/s, "
            f"relayed {step.forwarded}, received {step.received}, lost {step.lost}: "
            f"{step.verdict}",
            flush=True,
        )
        if step.verdict != "ok":
            break
    for transport in transports:
        transport.close()
    return steps


def report(steps: list[Step]) -> None:
    print()
    print(
        f"{'asked/s':>8} {'sent/s':>9} {'sent':>8} {'lost':>7} {'loss %':>7} "
        f"{'in relay':>9} {'after':>7} {'relay CPU %':>12} {'CPU us/pkt':>11}  result"
    )
    for s in steps:
        print(
            f"{s.rate:>8} {s.send_rate:>9.0f} {s.sent:>8} {s.lost:>7} "
            f"{100 * s.lost / max(1, s.sent):>7.2f} {s.lost_before_relay:>9} "
            f"{s.lost_after_relay:>7} {100 * s.cpu_share:>12.1f} "
            f"{s.cpu_us_per_packet:>11.2f}  {s.verdict}"
        )
    clean = [s for s in steps if s.verdict == "ok"]
    print()
    if not clean:
        print("No rate was relayed without loss.")
        return
    best = max(clean, key=lambda s: s.send_rate)
    print(
        f"Highest rate relayed with zero loss: {best.send_rate:,.0f} packets/s "
        f"({STREAMS} streams, {PAYLOAD + 12}-byte packets), i.e. ~{best.send_rate / 100:,.0f} "
        "G.711 calls (50 packets/s each way)"
    )
    print(
        f"Relay CPU per packet at that rate: {best.cpu_us_per_packet:.2f} us "
        f"(one core: ~{1e6 / best.cpu_us_per_packet:,.0f} packets/s)"
    )
    real = clean[0]
    print(
        f"At {real.rate:,}/s ({STREAMS} streams at real time) the relay used "
        f"{100 * real.cpu_share:.1f}% of a core"
    )
    last = steps[-1]
    if last.verdict == "LOSS":
        print(
            f"At {last.send_rate:,.0f}/s {last.lost} of {last.sent} packets were lost "
            f"({100 * last.lost / max(1, last.sent):.2f}%): {last.lost_before_relay} before the "
            f"relay read them (relay too slow), {last.lost_after_relay} after it forwarded "
            "them (the generator, receiving on the same machine, too slow)"
        )
    elif last.verdict == "generator-limited":
        print("(the load generator, sharing the CPU with the relay, could not send faster)")


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def main() -> int:
    started = time.monotonic()
    senders = [_bind(SENDER_HOST) for _ in range(STREAMS)]
    receivers = [_bind(RECEIVER_HOST) for _ in range(STREAMS)]
    sender_ports = [s.getsockname()[1] for s in senders]
    receiver_ports = [s.getsockname()[1] for s in receivers]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=relay_process, args=(child, sender_ports, receiver_ports), daemon=True
    )
    process.start()
    counts = [0] * 256
    print(
        f"relay pid {process.pid}: {STREAMS} streams {SENDER_HOST} -> relay -> "
        f"{RECEIVER_HOST}, {PAYLOAD + 12}-byte packets, {STEP_SECONDS:g} s per rate step",
        flush=True,
    )
    try:
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        except ImportError:
            factory = asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            steps = runner.run(generate(parent, senders, receivers, counts))
        parent.send("stop")
        if parent.poll(5):
            parent.recv()
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
        for sock in senders + receivers:
            sock.close()
    report(steps)
    print(
        f"(benchmark took {time.monotonic() - started:.1f} s; the relay and the load generator "
        f"share {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
