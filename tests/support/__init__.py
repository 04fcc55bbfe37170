"""Reusable helpers for integration tests: run the `sbc` process on loopback, talk raw SIP to
it over UDP/TCP/TLS, and drive it with SIPp."""

from tests.support.calls import CallLab, CallOutcome, SippRun, TracedMessage, sdp_media
from tests.support.certs import make_self_signed_cert
from tests.support.net import (
    StreamClient,
    UdpClient,
    free_port,
    ipv6_available,
    tcp_exchange,
    tls_exchange,
    udp_exchange,
)
from tests.support.process import SbcProcess, SbcStartError
from tests.support.rtp import RtpEndpoint, RtpPacket, send_until_received
from tests.support.sipmsg import sip_request
from tests.support.sipp import SCENARIOS, SippResult, run_sipp

__all__ = [
    "SCENARIOS",
    "CallLab",
    "CallOutcome",
    "RtpEndpoint",
    "RtpPacket",
    "SippRun",
    "TracedMessage",
    "SbcProcess",
    "SbcStartError",
    "SippResult",
    "StreamClient",
    "UdpClient",
    "free_port",
    "ipv6_available",
    "make_self_signed_cert",
    "sdp_media",
    "send_until_received",
    "run_sipp",
    "sip_request",
    "tcp_exchange",
    "tls_exchange",
    "udp_exchange",
]
