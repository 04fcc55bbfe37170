"""Seeded mutations of SIP messages and SDP bodies for fuzz tests: header lines deleted,
doubled, swapped, cut, given hostile values, numbers pushed to their limits, bytes flipped,
Content-Length sometimes wrong. Deterministic for a given random.Random."""

from __future__ import annotations

import random
import re

HOSTILE = (
    "", " ", "\t", ";", ":", "<", ">", "<>", "@", "sip:", "sips:", "tel:", "tel:+", "0", "-1",
    "4294967296", "99999999999999999999", "abc", "\u00e9\u00e8", "%00", "%zz", "a" * 3000,
    ";tag=", ";branch=", "SIP/2.0/UDP", "SIP/2.0/TCP 1.2.3.4:0", "[::1]", "[::1", "1.2.3.4:99999",
    "<sip:a@[::1]:5060;transport=tls>", '"x" <sip:x@y>;tag=1', "*", ",", ",,", "=", "==",
    "INVITE", "application/sdp", "multipart/mixed;boundary=x", "0.0.0.0", "IN IP4", "IN IP6 ::",
    "RTP/SAVP", "RTP/AVP 0 8 101", "UDP/TLS/RTP/SAVPF 111", "65536", "0-16", "crypto:1",
)  # fmt: skip

EXTREMES = ("0", "65535", "99999", "-1")  # what a number in a line may become

SDP_EXTRAS = (
    "m=video {port2} RTP/AVP 96", "a=rtpmap:96 H264/90000", "a=rtcp-mux", "a=rtcp:{port1}",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "m=audio 0 RTP/AVP 0", "a=inactive", "a=sendonly", "a=recvonly", "b=AS:64",
    "a=group:BUNDLE 0", "a=mid:0", "a=ice-ufrag:abcd", "a=candidate:1 1 UDP 1 1.2.3.4 5 typ host",
    "m=image 4000 udptl t38", "c=IN IP6 ::1", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
)  # fmt: skip


def sdp_lines(rng: random.Random, host: str, port: int) -> list[str]:
    """A plausible audio offer or answer, sometimes with extra streams and attributes."""
    lines = [
        "v=0", f"o=fuzz 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=sendrecv", "a=ptime:20",
    ]  # fmt: skip
    for _ in range(rng.randrange(3)):
        lines.append(rng.choice(SDP_EXTRAS).format(port1=port + 1, port2=port + 2))
    return lines


def mutate_lines(rng: random.Random, lines: list[str]) -> list[str]:
    """One to three line-level mutations."""
    lines = list(lines)
    for _ in range(rng.randrange(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(9)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            sep = ":" if ":" in lines[i] else "="
            lines[i] = f"{lines[i].partition(sep)[0]}{sep}{rng.choice(HOSTILE)}"
        elif op == 3:
            lines[i] += rng.choice(HOSTILE)
        elif op == 4:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == 6:
            lines[i] = re.sub(r"\d+", lambda m: rng.choice((*EXTREMES, m.group())), lines[i])
        elif op == 7:
            lines[i] = lines[i].upper() if rng.random() < 0.5 else lines[i].lower()
        else:
            name, sep = rng.choice(HOSTILE), rng.choice((":", "=", ""))
            lines.insert(i, f"{name}{sep}{rng.choice(HOSTILE)}")
    return lines


def assemble(rng: random.Random, head: list[str], body: list[str] | None) -> bytes:
    """Head lines and body lines as one datagram: Content-Length right, except now and then
    left out; a tenth of the time a few bytes are overwritten with random ones."""
    data_body = ("\r\n".join(body) + "\r\n").encode("utf-8", "surrogateescape") if body else b""
    head = [h for h in head if not h.lower().startswith(("content-length", "l:"))]
    if rng.random() < 0.75:
        head.append(f"Content-Length: {len(data_body)}")
    # surrogateescape: header values copied from what the SBC sent may hold bytes that
    # were not UTF-8 (it echoes a mutated To, say); they go back as those bytes.
    data = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + data_body
    if rng.random() < 0.1:
        raw = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        data = bytes(raw)
    return data
