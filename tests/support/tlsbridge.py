"""A TLS bridge for peers that speak only TCP (Debian's SIPp is built without TLS), doing what
stunnel does for such peers in production. With `connect_tls`, each TCP connection accepted
on `listen` is carried to `target` over TLS (client mode: the context's certificate is the
client certificate, `server_name` is checked), from `listen`'s host so the SBC sees the
peer's address. With `accept_tls`, TLS connections accepted on `listen` (server mode: the
context decides whether a client certificate is required) are carried to `target` over TCP.
Either way the bytes pass unchanged."""

from __future__ import annotations

import asyncio
import ssl
import threading
from types import TracebackType


class TlsBridge:
    """Runs on its own event loop in a thread (an SSL object must not be read and written
    from two threads at once, so one loop drives every connection)."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        connect_tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        accept_tls: ssl.SSLContext | None = None,
    ) -> None:
        if (connect_tls is None) == (accept_tls is None):
            raise ValueError("a TlsBridge either connects or accepts over TLS")
        self.listen = listen
        self.target = target
        self.connect_tls = connect_tls
        self.server_name = server_name
        self.accept_tls = accept_tls
        self.connections = 0  # connections carried (accepted and connected)
        self.errors: list[str] = []  # connect or handshake failures, for the test's message
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="tls-bridge", daemon=True)
        self._start_error: BaseException | None = None

    def __enter__(self) -> TlsBridge:
        self._thread.start()
        self._ready.wait(5.0)
        if self._start_error is not None:
            raise RuntimeError(f"TLS bridge could not listen on {self.listen}") from (
                self._start_error
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await asyncio.start_server(self._carry, *self.listen, ssl=self.accept_tls)
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

    async def _carry(self, near_in: asyncio.StreamReader, near_out: asyncio.StreamWriter) -> None:
        try:
            far_in, far_out = await asyncio.wait_for(
                asyncio.open_connection(
                    *self.target,
                    ssl=self.connect_tls,
                    server_hostname=self.server_name if self.connect_tls else None,
                    local_addr=(self.listen[0], 0),
                ),
                5.0,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            near_out.close()
            return
        self.connections += 1
        try:
            await asyncio.gather(_pump(near_in, far_out), _pump(far_in, near_out))
        finally:
            near_out.close()
            far_out.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until the source closes, then close the sink's write side."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, ssl.SSLError):
        pass
    if sink.can_write_eof():
        sink.write_eof()
    else:
        sink.close()  # TLS has no half-close
