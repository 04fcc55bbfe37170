"""What a request must be answered before anything else looks at it (RFC 3261 §8.2.1-§8.2.3,
§16.3): the 400/405/406/415/416/420/483/501 rules, as one sans-I/O function."""

from __future__ import annotations

from sbc.sip.errors import ParseError
from sbc.sip.message import Request, Response, make_response, new_tag

# Methods the SBC takes part in. Anything else that is a valid token gets 501 (RFC 3261
# §21.5.2: the server does not recognise the method); a method it recognises but does not
# take gets 405 with Allow (§8.2.1).
ALLOWED_METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "PRACK",
    "UPDATE",
    "INFO",
    "MESSAGE",
    "NOTIFY",
    "REFER",
    "REGISTER",
)
KNOWN_METHODS = frozenset(ALLOWED_METHODS) | {"SUBSCRIBE", "PUBLISH"}
ALLOW = ", ".join(ALLOWED_METHODS)
SUPPORTED_OPTIONS = frozenset({"100rel", "timer"})
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
# Bodies we read (offer/answer) versus bodies we only carry (INFO, MESSAGE, NOTIFY...).
SDP_TYPES = frozenset({"application/sdp"})
MULTIPART_TYPES = frozenset({"multipart/mixed", "multipart/alternative", "multipart/related"})
OFFER_ANSWER_METHODS = frozenset({"INVITE", "ACK", "PRACK", "UPDATE"})
ACCEPT = "application/sdp, multipart/mixed"
CONTACT_REQUIRED = frozenset({"INVITE", "REGISTER", "SUBSCRIBE", "REFER", "NOTIFY", "UPDATE"})


def check_request(req: Request, *, local_target: bool = False) -> Response | None:
    """The error response `req` must get, or None when it may be processed.

    `local_target` says the SBC itself is the request's target (e.g. an OPTIONS keepalive
    addressed to it), which matters for Max-Forwards: 0 (RFC 3261 §11, RFC 4475 §3.3.11).
    ACK never gets a response (RFC 3261 §17.2.1): the caller drops a bad ACK.
    """
    try:
        req.check()
        if req.method in CONTACT_REQUIRED:
            req.contacts  # noqa: B018 - a malformed Contact is a 400 (RFC 4475 §3.1.2.13)
        mf = req.max_forwards
        req.ruri  # noqa: B018
    except ParseError as exc:
        return _answer(req, exc.status, exc.reason)
    # RFC 3261 §8.2.1 (the method) comes before §8.2.2.1 (the Request-URI scheme).
    if req.method not in KNOWN_METHODS:
        return _answer(req, 501)
    if req.method not in ALLOWED_METHODS:
        return _answer(req, 405, headers=[("Allow", ALLOW)])
    if req.ruri.scheme not in SUPPORTED_SCHEMES:
        return _answer(req, 416)
    if mf == 0 and not (local_target and req.method == "OPTIONS") and req.method != "ACK":
        return _answer(req, 483)  # RFC 3261 §16.3 item 3
    if req.method not in ("ACK", "CANCEL"):
        # RFC 3261 §8.2.2.3: unknown Require options get 420 listing them; an SBC at the
        # edge acts as the proxy for Proxy-Require too (RFC 4475 §3.3.5).
        unknown = [
            tag
            for tag in req.option_tags("require") + req.option_tags("proxy-require")
            if tag.lower() not in SUPPORTED_OPTIONS
        ]
        if unknown:
            return _answer(req, 420, headers=[("Unsupported", ", ".join(unknown))])
    return _check_content(req)


def _check_content(req: Request) -> Response | None:
    """RFC 3261 §8.2.3: bodies we must understand, and what the client will accept back."""
    if req.method not in OFFER_ANSWER_METHODS:
        return None
    if req.body:
        ctype = req.content_type
        if ctype not in SDP_TYPES and ctype not in MULTIPART_TYPES:
            return _answer(req, 415, headers=[("Accept", ACCEPT)])
        encoding = req.header("content-encoding")
        if encoding and encoding.strip().lower() != "identity":
            return _answer(req, 415, headers=[("Accept-Encoding", "identity")])
    if req.method == "INVITE":
        accept = req.header_values("accept")
        if accept and not _accepts_sdp(accept):
            return _answer(req, 406, headers=[("Accept", "application/sdp")])  # §21.4.7
    return None


def _accepts_sdp(values: list[str]) -> bool:
    """RFC 3261 §20.1: an empty Accept accepts nothing; q=0 marks a type not acceptable."""
    for value in values:
        for item in value.split(","):
            media, _, params = item.partition(";")
            if media.strip().lower() in ("application/sdp", "application/*", "*/*"):
                if _quality(params) > 0:
                    return True
    return False


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 1.0
    return 1.0


def _answer(
    req: Request,
    status: int,
    reason: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response | None:
    if req.method == "ACK":
        return None
    return make_response(req, status, reason, to_tag=_tag_for(req), headers=headers or ())


def _tag_for(req: Request) -> str | None:
    try:
        return None if req.to.tag is not None else new_tag()
    except ParseError:
        return None
