"""RFC 4028 session timers, one per leg (sans-I/O): the interval in force, who refreshes, and
when the next refresh is due or the session counts as dead. The Call reads headers through
the helpers here and asks `due()` from its own timer."""

from __future__ import annotations

from dataclasses import dataclass

from sbc.sip.message import Message, Request

MIN_SE_FLOOR = 90  # RFC 4028 §5: Min-SE never below 90 s


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires value (RFC 4028 §4): delta-seconds and the optional refresher."""

    interval: int
    refresher: str | None  # 'uac' | 'uas' | None


def session_expires(message: Message) -> SessionExpires | None:
    """The Session-Expires a message carries (compact form x), or None when it has none or
    one we cannot read (treated as absent: the leg then falls back to our own interval)."""
    value = message.header("Session-Expires")
    if value is None:
        return None
    parts = [p.strip() for p in value.split(";")]
    if not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    refresher: str | None = None
    for param in parts[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return SessionExpires(int(parts[0]), refresher)


def min_se(message: Message) -> int | None:
    value = message.header("Min-SE")
    if value is None:
        return None
    number = value.split(";", 1)[0].strip()
    return int(number) if number.isdigit() and len(number) <= 9 else None


def supports_timer(message: Message) -> bool:
    return "timer" in message.option_tags("Supported") or "timer" in message.option_tags("Require")


@dataclass(slots=True)
class SessionTimer:
    """The session timer of one leg. `we_refresh`: we send the refreshes (at half the
    interval, §10); otherwise the peer must, and we end the session when none came by
    interval - min(32, interval/3) (§10)."""

    interval: int
    we_refresh: bool
    last: float
    peer_supports: bool = False  # the peer named 'timer' in Supported: we may Require it
    refreshing: bool = False  # our refresh request is in flight

    def due(self) -> float:
        if self.we_refresh:
            return self.last + self.interval / 2
        return self.last + self.interval - min(32.0, self.interval / 3)

    def refreshed(self, now: float, negotiated: SessionExpires | None = None, *, uac: bool) -> None:
        """A refresh succeeded at `now` (a 2xx to a re-INVITE or UPDATE either way). With the
        Session-Expires it negotiated, take its interval and refresher; `uac`: we sent the
        request that refreshed (so refresher=uac means us)."""
        self.last = now
        if negotiated is not None and negotiated.interval > 0:
            self.interval = negotiated.interval
            if negotiated.refresher is not None:
                self.we_refresh = (negotiated.refresher == "uac") == uac

    def header(self, *, uac: bool) -> str:
        """Session-Expires for a request we send (`uac`) or a 2xx we answer with."""
        ours = "uac" if uac else "uas"
        theirs = "uas" if uac else "uac"
        return f"{self.interval};refresher={ours if self.we_refresh else theirs}"


def answer_timer(
    request: Request, *, interval: int, minimum: int, now: float
) -> tuple[SessionTimer | None, int | None]:
    """How we, as UAS, take up a session timer an INVITE asks for (RFC 4028 §9): the leg's
    timer, or (None, min) when its Session-Expires is below our Min-SE and the answer is 422.
    Without Session-Expires in the request we still run one when `interval` > 0, refreshing
    ourselves: a dead PBX or carrier must not hold a call and its relay ports forever."""
    asked = session_expires(request)
    supports = supports_timer(request)
    floor = max(minimum, MIN_SE_FLOOR)
    if asked is not None and 0 < asked.interval < floor:
        return None, floor
    if asked is not None and asked.interval > 0:
        refresher = asked.refresher or ("uac" if supports else "uas")
        if refresher == "uac" and not supports:
            refresher = "uas"  # a UAC without 'timer' cannot be made to refresh
        timer = SessionTimer(asked.interval, refresher == "uas", now, supports)
        return timer, None
    if interval <= 0:
        return None, None
    their_min = min_se(request) or 0
    return SessionTimer(max(interval, their_min, floor), True, now, supports), None
