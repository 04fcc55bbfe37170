"""What the call adapter needs from a media relay, so that sbc.calls can take the in-process
MediaRelay or the WorkerPool of relay processes (and later a remote media node) alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from media.plan import LegMedia
from media.relay import DtmfHeard, MediaTimeout, SessionStats
from media.session import Address, Leg


class MediaBackend(Protocol):
    on_timeout: Callable[[MediaTimeout], None] | None
    on_dtmf: Callable[[DtmfHeard], None] | None
    on_lost: Callable[[list[str], str], None] | None  # sessions gone with a dead worker

    async def start(self) -> None: ...

    @property
    def pairs_in_use(self) -> int: ...

    def __contains__(self, key: str) -> bool: ...

    def __len__(self) -> int: ...

    async def open_session(self, key: str, streams: int, host_a: str, host_b: str) -> object: ...

    async def add_streams(self, key: str, count: int) -> list[int]: ...

    def set_remote(
        self,
        key: str,
        stream: int,
        leg: Leg,
        remote: Address | None,
        remote_rtcp: Address | None = None,
    ) -> None: ...

    def relatch(self, key: str, leg: Leg, stream: int | None = None) -> None: ...

    def configure(self, key: str, stream: int, leg: Leg, media: LegMedia) -> None: ...

    def play_dtmf(self, key: str, stream: int, leg: Leg, digit: str, duration_ms: int) -> None: ...

    def endpoints(self, key: str, leg: Leg) -> list[Address | None]: ...

    async def disable_stream(self, key: str, stream: int) -> None: ...

    async def close_session(self, key: str) -> SessionStats: ...

    async def close(self) -> None: ...
