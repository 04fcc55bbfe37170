"""Helpers for driving a TransportLayer in-process on loopback: an inbox that collects what it
delivers and reports, a runner for the stock asyncio loop and uvloop, interface builders."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sbc.config import Interface, ListenAddress, TlsSettings
from sbc.sip.peer import Peer
from sbc.transport import TransportLayer

Runner = Callable[[Callable[[], Awaitable[None]]], None]
LOOPS = ["asyncio", "uvloop"]


class Inbox:
    """Collects what the layer delivers; `wait(predicate)` resolves when it holds."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, Peer]] = []
        self.errors: list[tuple[Peer, str, object]] = []
        self._changed = asyncio.Event()

    def on_message(self, data: bytes, source: Peer) -> None:
        self.messages.append((data, source))
        self._changed.set()

    def on_error(self, peer: Peer, reason: str, context: object) -> None:
        self.errors.append((peer, reason, context))
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)


def loop_runner(kind: str, limit: float = 20.0) -> Runner:
    """Runs a scenario on the stock asyncio loop ('asyncio') or on uvloop ('uvloop', what
    `sbc run` uses; the test is skipped when uvloop is not installed)."""
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def runner(scenario: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), limit)

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


def interface(name: str, host: str, *listen: str, tls: TlsSettings | None = None) -> Interface:
    """An interface listening on `host` at each 'transport:port' of `listen`."""
    addresses = []
    for item in listen:
        transport, _, port = item.partition(":")
        addresses.append(ListenAddress(transport, host, int(port)))
    return Interface(name, tuple(addresses), None, host, tls)


def tls_settings(
    cert: Path, key: Path, ca: Path | None = None, *, verify_peer: bool = False
) -> TlsSettings:
    return TlsSettings(str(cert), str(key), str(ca) if ca else None, verify_peer=verify_peer)


async def start_layer(*interfaces: Interface, inbox: Inbox, **options: Any) -> TransportLayer:
    layer = TransportLayer(
        interfaces, inbox.on_message, on_transport_error=inbox.on_error, **options
    )
    await layer.start()
    return layer


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 3.0) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as a
    close); raises TimeoutError if it stays open longer than `timeout`."""
    received = bytearray()

    async def drain() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return  # a TLS alert from the server ends the connection too
            if not data:
                return
            received.extend(data)

    await asyncio.wait_for(drain(), timeout)
    return bytes(received)


class LogWatcher(logging.Handler):
    """Records the events an sbc logger emits (with their fields) so a test can await one
    instead of guessing when it happened."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((str(record.msg), dict(getattr(record, "sbc_fields", {}))))
        self._changed.set()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]

    async def wait_for(self, event: str, timeout: float = 3.0) -> dict[str, Any]:
        """The fields of the first `event` logged (waiting for it if need be)."""

        async def loop() -> dict[str, Any]:
            while not (found := self.named(event)):
                self._changed.clear()
                await self._changed.wait()
            return found[0]

        return await asyncio.wait_for(loop(), timeout)


@contextmanager
def watch_log(name: str = "sbc.transport", level: int = logging.WARNING) -> Iterator[LogWatcher]:
    """A LogWatcher on logger `name` (and its children) at `level` for the `with` block."""
    logger = logging.getLogger(name)
    watcher = LogWatcher()
    previous = logger.level
    logger.addHandler(watcher)
    logger.setLevel(level)
    try:
        yield watcher
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(previous)
