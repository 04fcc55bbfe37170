"""The error a SIP parser raises: it carries the status and reason to answer with."""

from __future__ import annotations


class ParseError(ValueError):
    """A message (or one of its headers) does not follow the RFC 3261 §25 grammar.

    `str(err)` says what is wrong in words fit for a 400 reason phrase; `status` is the
    response code a request in this state must get (400, or 505 for an unknown version).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
