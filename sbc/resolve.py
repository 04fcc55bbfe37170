"""Trunk host names to gateway addresses, done at start-up so that nothing on the call path
waits for DNS (RFC 3263: NAPTR then SRV records when the URI names no port, else A/AAAA).

dnspython does the DNS (SRV, A, AAAA over UDP with TCP fallback, timeouts): a well-kept
library beats a hand-written resolver, and the standard library has no SRV lookup."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver

from sbc.config import Config, DnsSettings, Trunk
from sbc.log import get_logger

log = get_logger("trunk")

Gateway = tuple[str, int]  # (IP address, port)
RESOLVE_TIMEOUT = 5.0  # s per name: a dead resolver must not keep the SBC from starting
# RFC 3263 §4.2 / RFC 3261 §26: the SRV service per transport of the trunk.
_SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
# RFC 3263 §4.1 / RFC 3261 §26: the NAPTR service field per transport.
_NAPTR_SERVICE = {"udp": "SIP+D2U", "tcp": "SIP+D2T", "tls": "SIPS+D2T"}


def _resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    if not settings.nameservers:
        resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in settings.nameservers]
        resolver.port = settings.nameservers[0][1]
    resolver.lifetime = RESOLVE_TIMEOUT
    return resolver


async def resolve_trunks(config: Config) -> dict[str, list[Gateway]]:
    """Each trunk whose proxy host is a name, mapped to its gateways in the order to try
    them. A name that does not resolve is logged and left out: calls to it fail over."""
    resolver = _resolver(config.dns)
    system = not config.dns.nameservers
    found: dict[str, list[Gateway]] = {}
    for trunk in config.trunks:
        if is_literal(trunk.proxy.host):
            continue
        gateways = await _gateways(resolver, trunk, system)
        if not gateways:
            log.error("trunk.resolve_failed", trunk=trunk.name, host=trunk.proxy.host)
            continue
        shown = ",".join(f"{host}:{port}" for host, port in gateways)
        log.info("trunk.resolved", trunk=trunk.name, host=trunk.proxy.host, gateways=shown)
        found[trunk.name] = gateways
    return found


async def _gateways(
    resolver: dns.asyncresolver.Resolver, trunk: Trunk, system: bool
) -> list[Gateway]:
    proxy = trunk.proxy
    if not proxy.explicit_port:
        names = await _naptr(resolver, proxy.host, trunk.transport)
        if not names:
            names = [f"{_SRV_PREFIX.get(trunk.transport, '_sip._udp')}.{proxy.host}"]
        targets: list[tuple[str, int]] = []
        for name in names:
            targets.extend(await _srv(resolver, name))
        if targets:
            gateways: list[Gateway] = []
            for target, port in targets:
                addresses = await _addresses(resolver, target, system)
                gateways.extend((address, port) for address in addresses)
            return list(dict.fromkeys(gateways))
    addresses = await _addresses(resolver, proxy.host, system)
    return [(address, proxy.port) for address in addresses]


async def _naptr(resolver: dns.asyncresolver.Resolver, host: str, transport: str) -> list[str]:
    """RFC 3263 §4.1: the SRV names the domain's NAPTR records give for the trunk's transport
    (the transport is configured, so records for the others are skipped), lowest order then
    preference first. Only the "S" flag (go on with SRV) is followed; none found: []."""
    try:
        answer = await resolver.resolve(host, "NAPTR")
    except (dns.exception.DNSException, OSError):
        return []
    wanted = _NAPTR_SERVICE.get(transport, "SIP+D2U")
    records = sorted(answer, key=lambda r: (r.order, r.preference))
    return [
        str(r.replacement).rstrip(".")
        for r in records
        if r.flags.decode().upper() == "S"
        and r.service.decode().upper() == wanted
        and str(r.replacement) != "."
    ]


async def _srv(resolver: dns.asyncresolver.Resolver, name: str) -> list[tuple[str, int]]:
    """SRV targets in the order to try: lowest priority first, heavier weight first within
    one (RFC 2782 spreads equal priorities by weight at random; a fixed order keeps the
    start-up list stable, and failover walks all of them anyway)."""
    try:
        answer = await resolver.resolve(name, "SRV")
    except (dns.exception.DNSException, OSError):
        return []
    records = sorted(answer, key=lambda r: (r.priority, -r.weight))
    return [(str(r.target).rstrip("."), int(r.port)) for r in records if str(r.target) != "."]


async def _addresses(resolver: dns.asyncresolver.Resolver, host: str, system: bool) -> list[str]:
    """A then AAAA records (IPv4 first: the usual carrier set-up). With the system's
    resolver, through getaddrinfo, so /etc/hosts counts as it does for everything else."""
    if is_literal(host):
        return [host.strip("[]")]
    if system:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM),
                RESOLVE_TIMEOUT,
            )
        except (OSError, TimeoutError):
            return []
        addresses = dict.fromkeys(str(info[4][0]) for info in infos)
        return sorted(addresses, key=lambda a: ":" in a)
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except (dns.exception.DNSException, OSError):
            continue
        found.extend(str(record.address) for record in answer)
    return list(dict.fromkeys(found))


def is_literal(host: str) -> bool:
    """An IP address (IPv6 with or without brackets), not a name to resolve."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
