"""A tiny SIP gateway for trunk tests: answers OPTIONS with a status the test sets (200 =
alive, 503 = in trouble) and every INVITE with 503, and counts what it received. It runs on a
thread over a real UDP socket on loopback."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from sbc.sip import parse
from sbc.sip.message import Request, make_response


class FakeGateway:
    def __init__(self, host: str, port: int, options_status: int = 200) -> None:
        self.options_status = options_status
        self.received: list[str] = []  # methods, in order
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._lock = threading.Lock()

    def count(self, method: str) -> int:
        with self._lock:
            return self.received.count(method)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = parse(data)
            except Exception:
                continue
            if not isinstance(message, Request) or message.method == "ACK":
                continue
            with self._lock:
                self.received.append(message.method)
            status = self.options_status if message.method == "OPTIONS" else 503
            self._sock.sendto(bytes(make_response(message, status, to_tag="gw")), source)

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
