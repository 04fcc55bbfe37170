"""TLS contexts for SIP over TLS listeners (server side) and the connections we open (client
side), built from an interface's TlsSettings."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sbc.config imports sbc.transport.limits: no import at run time
    from sbc.config import TlsSettings


class TlsSetupError(Exception):
    """The certificate, key or CA of an interface cannot be loaded."""


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """Context for accepting TLS: our certificate; client certificates required when
    verify_peer is set (mutual TLS, checked against `ca`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2 renegotiation lets a client make us redo the costly handshake at will.
    context.options |= ssl.OP_NO_RENEGOTIATION
    _load_chain(context, settings)
    if settings.verify_peer:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca(context, settings)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """Context for connecting out: the server is verified (chain and host name) against `ca`,
    or the system store when no ca is given, unless verify_peer is off. The name checked is
    the server_hostname the connection passes (TransportLayer: the server name set for the
    address, else the address). Our own certificate is presented so peers that require
    mutual TLS accept us."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, settings)
    if settings.verify_peer:
        if settings.ca:
            _load_ca(context, settings)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_chain(context: ssl.SSLContext, settings: TlsSettings) -> None:
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"cannot load TLS certificate {settings.cert!r} with key {settings.key!r}: {exc}"
        ) from exc


def _load_ca(context: ssl.SSLContext, settings: TlsSettings) -> None:
    if not settings.ca:
        return
    try:
        context.load_verify_locations(cafile=settings.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load TLS CA file {settings.ca!r}: {exc}") from exc
