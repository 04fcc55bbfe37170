"""The SIP core: messages, transactions, dialogs and digest authentication (sans-I/O)."""

from sbc.sip.errors import ParseError
from sbc.sip.message import Message, Request, Response, make_response, parse

__all__ = ["Message", "ParseError", "Request", "Response", "make_response", "parse"]
