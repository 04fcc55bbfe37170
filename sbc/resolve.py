"""Trunk host names to addresses (A/AAAA through the system resolver), done once at start-up
so that nothing on the call path waits for DNS. SRV/NAPTR (RFC 3263) is not done yet: a
name resolves to its addresses on the configured port, tried in turn."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from sbc.config import Config
from sbc.log import get_logger

log = get_logger("trunk")

RESOLVE_TIMEOUT = 5.0  # s per name: a dead resolver must not keep the SBC from starting


async def resolve_trunks(config: Config) -> dict[str, list[str]]:
    """Each trunk whose proxy host is a name, mapped to its addresses (IPv4 first, then
    IPv6, de-duplicated). A name that does not resolve is logged and left out: calls to it
    fail over to the next trunk."""
    loop = asyncio.get_running_loop()
    found: dict[str, list[str]] = {}
    for trunk in config.trunks:
        host = trunk.proxy.host
        if _is_literal(host):
            continue
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, trunk.proxy.port, type=socket.SOCK_DGRAM),
                RESOLVE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.error(
                "trunk.resolve_failed", trunk=trunk.name, host=host, error=str(exc) or "timeout"
            )
            continue
        addresses = sorted(
            dict.fromkeys(str(info[4][0]) for info in infos),
            key=lambda a: ":" in a,  # IPv4 first: the usual carrier set-up
        )
        log.info("trunk.resolved", trunk=trunk.name, host=host, addresses=",".join(addresses))
        found[trunk.name] = addresses
    return found


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
