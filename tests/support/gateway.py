"""A tiny SIP gateway for trunk tests: answers OPTIONS with a status the test sets (200 =
alive, 503 = in trouble), REGISTER with another (a registrar that takes any binding when
200), every INVITE with 503, and counts what it received."""

from __future__ import annotations

import threading

from sbc.sip import parse
from sbc.sip.message import Request, make_response
from tests.support.net import UdpResponder


class FakeGateway(UdpResponder):
    def __init__(
        self, host: str, port: int, options_status: int = 200, register_status: int = 503
    ) -> None:
        super().__init__(host, port)
        self.options_status = options_status
        self.register_status = register_status
        self.silent = False  # True: receive and count, answer nothing (a gateway gone dark)
        self.received: list[str] = []  # methods, in order
        self._lock = threading.Lock()

    def count(self, method: str) -> int:
        with self._lock:
            return self.received.count(method)

    def answer(self, data: bytes) -> bytes | None:
        try:
            message = parse(data)
        except Exception:
            return None
        if not isinstance(message, Request) or message.method == "ACK":
            return None
        with self._lock:
            self.received.append(message.method)
        if self.silent:
            return None
        status = {"OPTIONS": self.options_status, "REGISTER": self.register_status}.get(
            message.method, 503
        )
        return bytes(make_response(message, status, to_tag="gw"))
