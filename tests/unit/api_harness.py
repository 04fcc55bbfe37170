"""A FakeControlPlane and the management API server running on 127.0.0.1 (ephemeral port) in
a thread of its own, so plain blocking clients (urllib, sockets, the CLI) can talk to it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sbc.api import ApiServer, ReloadRejected

TOKEN = "s3cret-token-for-tests-0123456789"

CALL: dict[str, Any] = {
    "key": "n1-c1",
    "direction": "outbound",
    "caller": "201",
    "callee": "+3312345678",
    "target": "itsp",
    "phase": "answered",
    "started": 1_700_000_000.0,
    "answered": 1_700_000_005.0,
    "duration": 3725.0,
}


@dataclass
class FakeControlPlane:
    """Canned answers; records the changes asked of it."""

    is_ready: bool = True
    live: dict[str, dict[str, Any]] = field(default_factory=lambda: {CALL["key"]: dict(CALL)})
    trunk_list: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "itsp": {"name": "itsp", "enabled": True, "state": "up", "registration": "registered"},
            "backup": {"name": "backup", "enabled": True, "state": "down", "registration": None},
        }
    )
    block_list: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "198.51.100.7": {
                "key": "198.51.100.7",
                "kind": "source",
                "reason": "flood",
                "hits": 412,
                "left_s": 58.5,
            }
        }
    )
    reload_errors: list[str] = field(default_factory=list)
    hung_up: list[str] = field(default_factory=list)
    reloads: int = 0
    fail: bool = False  # every method raises: the 500 path

    def _check(self) -> None:
        if self.fail:
            raise RuntimeError("boom")

    def ready(self) -> dict[str, Any]:
        return {"ready": self.is_ready, "listeners": ["pbx-udp"], "workers": {"up": 2, "total": 2}}

    def calls(self) -> list[dict[str, Any]]:
        self._check()
        return list(self.live.values())

    async def call(self, key: str) -> dict[str, Any] | None:
        if key not in self.live:
            return None
        legs = [
            {"leg": "A", "remote": "127.0.0.10:5060", "state": "confirmed"},
            {"leg": "B", "remote": "127.0.0.20:5060", "state": "confirmed"},
        ]
        media = [{"stream": 0, "leg": "A", "packets_in": 1500, "packets_out": 1498}]
        return {**self.live[key], "legs": legs, "media": media}

    def hangup(self, key: str) -> bool:
        if self.live.pop(key, None) is None:
            return False
        self.hung_up.append(key)
        return True

    def trunks(self) -> list[dict[str, Any]]:
        return list(self.trunk_list.values())

    def set_trunk_enabled(self, name: str, enabled: bool) -> dict[str, Any] | None:
        trunk = self.trunk_list.get(name)
        if trunk is not None:
            trunk["enabled"] = enabled
        return trunk

    def admission(self) -> dict[str, Any]:
        return {"active": {"total": 1}, "rejections": {"limit:itsp": 3}}

    def blocks(self) -> list[dict[str, Any]]:
        return list(self.block_list.values())

    def unblock(self, key: str) -> bool:
        return self.block_list.pop(key, None) is not None

    async def reload(self) -> dict[str, Any]:
        if self.reload_errors:
            raise ReloadRejected(self.reload_errors)
        self.reloads += 1
        return {"reloaded": True, "changes": ["trunks.itsp.proxy changed"]}

    async def stats(self) -> dict[str, Any]:
        return {"calls": len(self.live), "transactions": 4, "media_sessions": 1}


class ServedApi:
    """The server on its own event loop thread; `url` is its base URL."""

    def __init__(self, control: FakeControlPlane, read_timeout: float) -> None:
        self.control = control
        self._server = ApiServer(control, TOKEN, read_timeout=read_timeout)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.address: tuple[str, int] = ("", 0)
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.address = await self._server.start("127.0.0.1", 0)
        self._started.set()
        await self._stop.wait()
        await self._server.close()

    def __enter__(self) -> ServedApi:
        self._thread.start()
        if not self._started.wait(5):
            raise RuntimeError("API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def serve(control: FakeControlPlane, read_timeout: float = 2.0) -> Iterator[ServedApi]:
    with ServedApi(control, read_timeout) as served:
        yield served


def free_port() -> int:
    """A port nothing listens on (bound then released): for connection-refused tests."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
