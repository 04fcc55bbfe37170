"""What the relay must know about each side of a stream, as negotiated in SDP: plain data the
signalling side works out (sbc.b2bua.media_plan) and hands to the relay, in this process or
over the control channel to a media worker (hence to_dict/from_dict)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DTMF_MODES = ("rfc4733", "info")


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """SDES keys of one side of one stream (RFC 4568), as base64 key||salt like a=crypto:
    `inbound` is the key that side encrypts with (we decrypt what it sends), `outbound` ours
    toward it (we encrypt what we send it). Each leg has its own; none ever crosses."""

    suite: str
    inbound: str
    outbound: str

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"SrtpKeys(suite={self.suite!r}, inbound='***', outbound='***')"


@dataclass(frozen=True, slots=True)
class LegMedia:
    """How the peer on one leg of one stream speaks."""

    media: str = "audio"
    codec: str = "PCMU"  # the main codec's encoding name (for the quality estimate)
    clock_rate: int = 8000
    ptime_ms: float = 20.0
    # telephone-event payload types: the one this side sends with (numbered by the SDP it
    # received from us, RFC 3264 §6.1) and the one it expects (numbered by its own SDP).
    events_in: int | None = None
    events_out: int | None = None
    event_rate: int = 8000
    dtmf: str = "rfc4733"  # how this side signals DTMF: 'rfc4733' or 'info'
    srtp: SrtpKeys | None = None
    direction: str = "sendrecv"  # a=sendrecv/sendonly/recvonly/inactive of this side's SDP
    rtcp_mux: bool = False  # RTCP shares the RTP port with this side (RFC 5761, both agreed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LegMedia:
        """From to_dict()'s output (a control message); ValueError names a bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"leg media must be an object, not {type(data).__name__}")
        fields = dict(data)
        srtp = fields.pop("srtp", None)
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"leg media: unknown fields {', '.join(sorted(unknown))}")
        try:
            media = cls(**fields, srtp=None if srtp is None else SrtpKeys(**srtp))
        except TypeError as exc:
            raise ValueError(f"leg media: {exc}") from None
        media.check()
        return media

    def check(self) -> None:
        for name in ("clock_rate", "event_rate"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"leg media: {name} must be an integer")
        for name in ("events_in", "events_out"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"leg media: {name} must be an integer or null")
        if self.dtmf not in DTMF_MODES:
            raise ValueError(f"leg media: dtmf {self.dtmf!r} is not one of {DTMF_MODES}")
        if self.clock_rate <= 0 or self.event_rate <= 0:
            raise ValueError("leg media: clock rates must be positive")
        for name in ("events_in", "events_out"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 127:
                raise ValueError(f"leg media: {name} {value} is not an RTP payload type")
