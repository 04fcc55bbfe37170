"""RFC 5761 rtcp-mux per leg through the call model: granted to a side that asks, asked of
the other side only when the first asked, and the relay told which legs mux."""

from __future__ import annotations

from sbc.b2bua.media_plan import plan_leg
from tests.unit.b2bua_harness import A, Harness, body_sdp, itsp_sdp, one, responses, sdp


def with_mux(body: bytes, *, only: bool = False) -> bytes:
    attribute = "a=rtcp-mux-only\r\na=rtcp-mux" if only else "a=rtcp-mux"
    return body.replace(b"a=sendrecv\r\n", f"{attribute}\r\na=sendrecv\r\n".encode())


def attributes(message: object, name: str) -> int:
    return len(body_sdp(message).media[0].attributes(name))  # type: ignore[arg-type]


def test_mux_asked_by_the_pbx_is_granted_to_it_though_the_carrier_declines() -> None:
    h = Harness(invite_body=with_mux(sdp(), only=True))
    h.start()
    invite = h.b_invite().request
    # Asked of the carrier, never as rtcp-mux-only: the relay can do either there (RFC 8858).
    assert attributes(invite, "rtcp-mux") == 1 and attributes(invite, "rtcp-mux-only") == 0
    h.ring()
    out = h.answered(body=itsp_sdp())  # no a=rtcp-mux: the carrier keeps RTCP apart
    ok = one(responses(out, A, 200)).response
    assert attributes(ok, "rtcp-mux") == 1 and attributes(ok, "rtcp") == 0
    (ours_a, theirs_a), (ours_b, theirs_b) = h.call.media_views()
    plan_a, plan_b = (
        plan_leg(ours_a, theirs_a, "rfc4733")[0],
        plan_leg(ours_b, theirs_b, "rfc4733")[0],
    )
    assert plan_a is not None and plan_a.rtcp_mux
    assert plan_b is not None and not plan_b.rtcp_mux


def test_both_sides_agreeing_mux_on_both_legs() -> None:
    h = Harness(invite_body=with_mux(sdp()))
    h.start()
    h.ring()
    h.answered(body=with_mux(itsp_sdp()))
    (ours_a, theirs_a), (ours_b, theirs_b) = h.call.media_views()
    assert plan_leg(ours_a, theirs_a, "rfc4733")[0].rtcp_mux  # type: ignore[union-attr]
    assert plan_leg(ours_b, theirs_b, "rfc4733")[0].rtcp_mux  # type: ignore[union-attr]


def test_no_mux_asked_none_offered_none_granted() -> None:
    h = Harness()
    h.start()
    assert attributes(h.b_invite().request, "rtcp-mux") == 0
    h.ring()
    out = h.answered(body=with_mux(itsp_sdp()))  # an answer may not add it: not granted
    ok = one(responses(out, A, 200)).response
    assert attributes(ok, "rtcp-mux") == 0


def test_bundle_is_not_carried_across_the_relay_rfc9143() -> None:
    # Each m-line gets its own relay ports: a BUNDLE group would send all media to one.
    offer = (
        sdp(streams=2)
        .replace(b"t=0 0\r\n", b"t=0 0\r\na=group:BUNDLE 0 1\r\n")
        .replace(b"a=sendrecv\r\n", b"a=mid:0\r\na=sendrecv\r\n", 1)
    )
    h = Harness(invite_body=offer)
    h.start()
    invite = h.b_invite().request
    text = (invite.body or b"").decode()
    assert "BUNDLE" not in text and "a=mid" not in text
    ports = [m.port for m in body_sdp(invite).media]
    assert len(set(ports)) == 2
