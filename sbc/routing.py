"""Where a new INVITE goes (sans-I/O): who sent it, which number it dials after rewriting,
which trunks or PBX take it, and what our side of each leg looks like (a CallSetup)."""

from __future__ import annotations

import functools
import ipaddress
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from sbc.b2bua.api import CallSetup, DigestSecret, LegPolicy, LocalEndpoint, Target
from sbc.config import Config, Interface, ListenAddress, NumberRule, Pbx, Trunk
from sbc.sip.errors import ParseError
from sbc.sip.message import Request
from sbc.sip.peer import Peer
from sbc.sip.uri import SipUri, TelUri, Uri
from trunks.selection import TrunkCandidate, TrunkSelector

__all__ = ["Rejection", "Router", "route"]

# A dialled number this short that matches no route is taken as still being dialled.
SHORTEST_COMPLETE_NUMBER = 3
# RFC 3966 §5.1.1: visual separators carry no meaning in a telephone number.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); quote() always keeps
# letters, digits and '_.-~'; the rest of these may also appear unescaped.
_USER_SAFE = "!*'()&=+$,;?/"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rejection:
    """Routing refused the INVITE: answer `status reason`; `log_reason` says why (for the
    log only: it may name addresses the caller must not learn)."""

    status: int
    reason: str
    log_reason: str
    headers: tuple[tuple[str, str], ...] = ()  # added to the answer (e.g. Warning)


@dataclass(frozen=True, slots=True)
class _Side:
    """A PBX or trunk as routing sees it: its policy and our fixed endpoint toward it."""

    kind: str  # 'pbx' | 'trunk'
    name: str
    interface: str
    transport: str
    policy: LegPolicy
    user_agent: str | None
    local: LocalEndpoint  # our side when we send to it (leg B); leg A uses the listener hit


class Router:
    """Routing decisions for one Config; build it once per (re)load, then `route` per INVITE.

    `trunk_addresses` maps a trunk name to the IP addresses its requests may come from (the
    caller resolves DNS names); a trunk it leaves out is known by its proxy host as written.
    """

    def __init__(
        self,
        config: Config,
        trunk_addresses: Mapping[str, Iterable[str]] | None = None,
        new_call_key: Callable[[], str] | None = None,
        *,
        health: Callable[[str], bool] | None = None,
        calls: Callable[[str], int] | None = None,
        gateway_up: Callable[[str, tuple[str, int]], bool] | None = None,
    ) -> None:
        """`health(trunk)`: whether probing finds it up (default: always); `calls(trunk)`:
        its live calls, for least_calls and max_calls (default: none); `gateway_up(trunk,
        (address, port))`: whether probing finds that address of the trunk up."""
        self._gateway_up = gateway_up or (lambda _name, _gateway: True)
        self.config = config
        self._new_key = new_call_key or (lambda: f"{config.node}-{secrets.token_hex(8)}")
        self._interfaces = config.interfaces
        for owner, interface in _referenced_interfaces(config):
            if interface not in config.interfaces or not config.interfaces[interface].listen:
                raise ValueError(f"{owner}: interface '{interface}' has no listener to use")
        self._pbx_sides = {pbx.name: self._pbx_side(pbx) for pbx in config.pbxs}
        self._trunk_sides = {trunk.name: self._trunk_side(trunk) for trunk in config.trunks}
        # interface -> [(network, pbx)] and interface -> address -> trunks, in config order
        self._pbx_sources: dict[str, list[tuple[_Network, Pbx]]] = {}
        self._source_cache: dict[tuple[str, str], Pbx | None] = {}
        for pbx in config.pbxs:
            sources = self._pbx_sources.setdefault(pbx.interface, [])
            sources.extend((network, pbx) for network in pbx.trusted_sources)
        self._trunk_sources: dict[str, dict[str, list[Trunk]]] = {}
        self._gateways: dict[str, tuple[tuple[str, int], ...]] = {}
        self.set_trunk_addresses(trunk_addresses or {})
        self._leg_a_cache: dict[tuple[str, str, str], LocalEndpoint] = {}
        # One selector per outbound route: round robin and weights keep per-route state.
        self._selectors = [
            TrunkSelector(
                [
                    TrunkCandidate(name, config.trunk(name).weight, config.trunk(name).max_calls)
                    for name in route.trunks
                ],
                route.strategy,
                health or _always_up,
                calls or _no_calls,
            )
            for route in config.routes.outbound
        ]

    def set_trunk_addresses(self, addresses: Mapping[str, Iterable[str | tuple[str, int]]]) -> None:
        """What each trunk's proxy name resolved to (SRV/A/AAAA, in order): an address, or
        (address, port) from SRV. Calls go to those gateways in turn, and requests from any
        of them are the trunk's. A trunk left out (or an IP literal) is known by its proxy
        host and port as written."""
        sources: dict[str, dict[str, list[Trunk]]] = {}
        gateways: dict[str, tuple[tuple[str, int], ...]] = {}
        for trunk in self.config.trunks:
            port = trunk.proxy.port
            given = addresses.get(trunk.name) or (trunk.proxy.host,)
            found = tuple(dict.fromkeys(g if isinstance(g, tuple) else (g, port) for g in given))
            gateways[trunk.name] = found
            by_address = sources.setdefault(trunk.interface, {})
            for host, _ in found:
                trunks = by_address.setdefault(_normal_address(host), [])
                if trunk not in trunks:
                    trunks.append(trunk)
        self._trunk_sources, self._gateways = sources, gateways
        self._source_cache.clear()

    def gateways(self, name: str) -> tuple[tuple[str, int], ...]:
        """The addresses a trunk's calls, probes and registrations go to, in order."""
        return self._gateways.get(name, ())

    def _live_gateways(self, name: str) -> tuple[tuple[str, int], ...]:
        """The trunk's addresses that probes do not find down; all of them when every one
        is down (the trunk was chosen anyway: a probe may be behind the truth)."""
        gateways = self._gateways.get(name, ())
        if len(gateways) < 2:
            return gateways
        live = tuple(g for g in gateways if self._gateway_up(name, g))
        return live or gateways

    def trunk_local(self, name: str) -> LocalEndpoint:
        """Our side toward a trunk (Via, Contact, listener): what its probes go out with."""
        return self._trunk_sides[name].local

    # ------------------------------------------------------------------ the decision

    def auth_pbx(self, source: Peer) -> Pbx | None:
        """The PBX whose digest users may call from `source`'s interface (the first one with
        `auth` there), for a request no trusted source or trunk address accounts for."""
        interface = source.listener.split("/", 1)[0]
        for pbx in self.config.pbxs:
            if pbx.auth is not None and pbx.interface == interface:
                return pbx
        return None

    def knows(self, source: Peer) -> bool:
        """Whether `source` is a trunk address or a trusted PBX source on its interface."""
        interface = source.listener.split("/", 1)[0]
        address = _normal_address(source.host)
        return (
            self._trunk_source(interface, address, source) is not None
            or self._pbx_source(interface, address) is not None
        )

    def route(
        self, request: Request, source: Peer, *, as_pbx: str | None = None
    ) -> CallSetup | Rejection:
        """The CallSetup for a new INVITE from `source`, or why it is refused. `as_pbx`: the
        caller proved with digest credentials that it belongs to that PBX."""
        interface = source.listener.split("/", 1)[0]
        address = _normal_address(source.host)
        trunk: Trunk | None
        pbx: Pbx | None
        if as_pbx is not None:
            trunk, pbx = None, self.config.pbx(as_pbx)
        else:
            trunk = self._trunk_source(interface, address, source)
            pbx = self._pbx_source(interface, address)
        if pbx is not None and trunk is not None and not _pbx_claims(source, pbx, trunk):
            pbx = None
        try:
            if pbx is not None:
                return self._outbound(request, source, interface, pbx)
            if trunk is not None:
                return self._inbound(request, source, interface, trunk)
        except ParseError as err:
            return Rejection(400, "Bad Request", f"malformed request: {err}")
        return Rejection(
            403,
            "Forbidden",
            f"source {source.host} on interface '{interface}' is no trusted PBX source"
            " and no trunk",
        )

    def _outbound(
        self, request: Request, source: Peer, interface: str, pbx: Pbx
    ) -> CallSetup | Rejection:
        callee = _called_number(request)
        if isinstance(callee, Rejection):
            return callee
        rewritten = _rewrite(callee, self.config.numbers.outbound)
        routes = self.config.routes.outbound
        index = next((i for i, r in enumerate(routes) if r.match.search(rewritten)), None)
        if index is None:
            return _no_route(callee, rewritten, "outbound")
        names = self._selectors[index].order()
        if not names:
            # Every trunk of the route is at its max_calls (TRAPS #12: the carrier's limit).
            return Rejection(503, "Service Unavailable", f"all trunks of route {index} are full")
        if _wants_tls(request):
            names = [name for name in names if self._trunk_sides[name].transport == "tls"]
            if not names:
                return self._sips_refused(f"route {index} has no TLS trunk")
        caller = _caller(request)
        targets = tuple(
            self._trunk_target(
                self._trunk_sides[name], self.config.trunk(name), caller, rewritten, gateway
            )
            for name in names
            for gateway in self._live_gateways(name)
        )
        a_side = self._pbx_sides[pbx.name]
        return self._setup(
            "outbound",
            caller,
            callee,
            rewritten,
            source,
            interface,
            a_side,
            targets,
            f"outbound[{index}]",
        )

    def _inbound(
        self, request: Request, source: Peer, interface: str, trunk: Trunk
    ) -> CallSetup | Rejection:
        callee = _called_number(request)
        if isinstance(callee, Rejection):
            return callee
        rewritten = _rewrite(callee, self.config.numbers.inbound)
        found = next(
            (
                (index, inbound)
                for index, inbound in enumerate(self.config.routes.inbound)
                if inbound.match.search(rewritten) is not None
            ),
            None,
        )
        if found is None:
            return _no_route(callee, rewritten, "inbound")
        index, inbound = found
        caller = _caller(request)
        pbx = self.config.pbx(inbound.pbx)
        if _wants_tls(request) and self._pbx_sides[pbx.name].transport != "tls":
            return self._sips_refused(f"PBX {pbx.name} is not reached over TLS")
        target = self._pbx_target(self._pbx_sides[pbx.name], pbx, caller, rewritten)
        a_side = self._trunk_sides[trunk.name]
        return self._setup(
            "inbound",
            caller,
            callee,
            rewritten,
            source,
            interface,
            a_side,
            (target,),
            f"inbound[{index}]",
        )

    def _sips_refused(self, why: str) -> Rejection:
        """480 with RFC 5630's warn-code 380 "SIPS Not Allowed" (the request cannot be
        carried as SIPS); the warn-agent is our node name, nothing about the network."""
        warning = ("Warning", f'380 {self.config.node} "SIPS Not Allowed"')
        return Rejection(480, "Temporarily Unavailable", f"sips: Request-URI but {why}", (warning,))

    def _setup(
        self,
        direction: str,
        caller: str,
        callee: str,
        rewritten: str,
        source: Peer,
        interface: str,
        a_side: _Side,
        targets: tuple[Target, ...],
        route: str,
    ) -> CallSetup:
        return CallSetup(
            call_key=self._new_key(),
            direction=direction,
            caller=caller,
            callee=callee,
            callee_rewritten=rewritten,
            a_local=self._leg_a_local(source, interface, a_side),
            a_policy=a_side.policy,
            targets=targets,
            no_answer_timeout=self.config.calls.no_answer_timeout,
            origin=a_side.name,
            route=route,
        )

    # ------------------------------------------------------------------ who is calling

    def _trunk_source(self, interface: str, address: str, source: Peer) -> Trunk | None:
        trunks = self._trunk_sources.get(interface, {}).get(address)
        if not trunks:
            return None
        # Two trunks of one ITSP often share a host (TLS primary, UDP fallback): the one
        # using the transport the request came over is the one speaking.
        for trunk in trunks:
            if trunk.transport == source.transport:
                return trunk
        return trunks[0]

    def _pbx_source(self, interface: str, address: str) -> Pbx | None:
        key = (interface, address)
        if key in self._source_cache:
            return self._source_cache[key]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        found: Pbx | None = None
        for network, pbx in self._pbx_sources.get(interface, ()):
            if ip in network:
                found = pbx
                break
        if len(self._source_cache) < 4096:  # bounded: sources are PBXs, not the internet
            self._source_cache[key] = found
        return found

    # ------------------------------------------------------------------ targets

    def _trunk_target(
        self, side: _Side, trunk: Trunk, caller: str, number: str, gateway: tuple[str, int]
    ) -> Target:
        proxy = trunk.proxy
        scheme = "sips" if proxy.scheme == "sips" else "sip"
        host = _uri_host(proxy.host)
        user = _escape_user(_rewrite(number, trunk.numbers))  # the carrier's number format
        port = f":{proxy.port}" if proxy.explicit_port else ""
        # Toward the ITSP the caller's identity is ours (topology hiding) unless the ITSP
        # wants its own domain there.
        from_host = (
            _uri_host(trunk.from_domain) if trunk.from_domain else _uri_host(side.local.host)
        )
        to_host = _uri_host(trunk.from_domain) if trunk.from_domain else host
        return Target(
            kind="trunk",
            name=trunk.name,
            # One gateway address of the trunk; the Request-URI keeps the name as configured.
            dest=Peer(side.transport, gateway[0], gateway[1]),
            # No port when the URI gave none: RFC 3263 leaves it to SRV (or the default).
            request_uri=f"{scheme}:{user}@{host}{port}{_transport_param(scheme, side)}",
            to_uri=f"{scheme}:{user}@{to_host}",
            # The trunk's own caller_id (the company number the carrier accepts) or the
            # caller's number as the PBX sent it.
            from_uri=_user_uri(scheme, trunk.caller_id or caller, from_host),
            local=side.local,
            policy=side.policy,
            credentials=_secret(trunk),
            setup_timeout=trunk.setup_timeout,
            fail_on_6xx=trunk.fail_on_6xx,
            identity=trunk.caller_id,
        )

    def _pbx_target(self, side: _Side, pbx: Pbx, caller: str, number: str) -> Target:
        host = _uri_host(pbx.address.host)
        user = _escape_user(number)
        return Target(
            kind="pbx",
            name=pbx.name,
            dest=Peer(side.transport, pbx.address.host, pbx.address.port),
            request_uri=f"sip:{user}@{host}:{pbx.address.port}{_transport_param('sip', side)}",
            to_uri=f"sip:{user}@{host}",
            from_uri=_user_uri("sip", caller, _uri_host(side.local.host)),
            local=side.local,
            policy=side.policy,
        )

    # ------------------------------------------------------------------ our side of each leg

    def _pbx_side(self, pbx: Pbx) -> _Side:
        policy = LegPolicy(
            codecs=(),
            allowed_headers=pbx.headers,
            pai=pbx.pai,
            refer=pbx.refer,
            supports_100rel=pbx.supports_100rel,
            session_expires=pbx.session_expires,
            min_se=pbx.min_se,
            dtmf=pbx.dtmf,
            srtp=pbx.srtp,
        )
        user_agent = pbx.user_agent or self.config.sip.user_agent
        local = self._endpoint(pbx.interface, pbx.transport, pbx.address.host, user_agent)
        return _Side("pbx", pbx.name, pbx.interface, pbx.transport, policy, user_agent, local)

    def _trunk_side(self, trunk: Trunk) -> _Side:
        policy = LegPolicy(
            codecs=trunk.codecs,
            allowed_headers=trunk.headers,
            pai=trunk.pai,
            refer=trunk.refer,
            supports_100rel=trunk.supports_100rel,
            session_expires=trunk.session_expires,
            min_se=trunk.min_se,
            dtmf=trunk.dtmf,
            srtp=trunk.srtp,
        )
        user_agent = trunk.user_agent or self.config.sip.user_agent
        local = self._endpoint(trunk.interface, trunk.transport, trunk.proxy.host, user_agent)
        return _Side(
            "trunk", trunk.name, trunk.interface, trunk.transport, policy, user_agent, local
        )

    def _endpoint(
        self, interface_name: str, transport: str, remote: str, user_agent: str | None
    ) -> LocalEndpoint:
        """Our side toward `remote` over `transport`: the first listener of that transport
        and of the remote's address family (a DNS name: any family), else of that
        transport, else the interface's first listener."""
        interface = self._interfaces[interface_name]
        ipv6 = _ipv6(remote)
        listen = interface.listen
        chosen = (
            _first(listen, lambda a: a.transport == transport and _ipv6(a.host) in (ipv6, None))
            or _first(listen, lambda a: a.transport == transport)
            or _first(listen, lambda a: _ipv6(a.host) in (ipv6, None))
            or listen[0]
        )
        return _local(interface, transport, chosen, user_agent)

    def _leg_a_local(self, source: Peer, interface_name: str, side: _Side) -> LocalEndpoint:
        """Our side toward the caller: the listener the INVITE arrived on."""
        key = (source.listener, source.transport, side.name)
        local = self._leg_a_cache.get(key)
        if local is not None:
            return local
        interface = self._interfaces[interface_name]
        for address in interface.listen:
            if address.transport == source.transport and (
                _listener_name(interface_name, address) == source.listener
            ):
                local = _local(interface, source.transport, address, side.user_agent)
                # Listener names come from our own config, so this cache stays small.
                self._leg_a_cache[key] = local
                return local
        return self._endpoint(interface_name, source.transport, source.host, side.user_agent)


# --------------------------------------------------------------------------- helpers


def route(
    config: Config,
    request: Request,
    source: Peer,
    trunk_addresses: Mapping[str, Iterable[str]] | None = None,
) -> CallSetup | Rejection:
    """One-off routing; long-lived code keeps a Router, which builds its lookups once."""
    return Router(config, trunk_addresses).route(request, source)


def _pbx_claims(source: Peer, pbx: Pbx, trunk: Trunk) -> bool:
    """Whether a source both a trusted PBX range and a trunk address hold is the PBX: yes,
    unless it comes from the trunk's own port (UDP peers usually send from it)."""
    return source.port != trunk.proxy.port or source.port == pbx.address.port


def _referenced_interfaces(config: Config) -> Iterable[tuple[str, str]]:
    for pbx in config.pbxs:
        yield f"pbx '{pbx.name}'", pbx.interface
    for trunk in config.trunks:
        yield f"trunk '{trunk.name}'", trunk.interface


def _local(
    interface: Interface, transport: str, address: ListenAddress, user_agent: str | None
) -> LocalEndpoint:
    host = interface.advertise or address.host
    if ipaddress.ip_address(host).is_unspecified:
        # A wildcard bind names no address a peer can reach; the config insists on a
        # concrete media_address in that case, and it is an address of this host.
        host = interface.media_address
    return LocalEndpoint(
        interface=interface.name,
        transport=transport,
        host=host,
        port=address.port,
        listener=_listener_name(interface.name, address),
        media_address=interface.media_address,
        user_agent=user_agent,
        sdp_address=interface.advertise,
    )


def _listener_name(interface: str, address: ListenAddress) -> str:
    # Same spelling as sbc.transport.listeners.listener_name (not imported: that package
    # pulls in asyncio, and this module stays sans-I/O).
    return f"{interface}/{address}"


def _first(
    items: Sequence[ListenAddress], test: Callable[[ListenAddress], bool]
) -> ListenAddress | None:
    for item in items:
        if test(item):
            return item
    return None


def _ipv6(host: str) -> bool | None:
    """Whether `host` is an IPv6 address; None for a DNS name (family unknown)."""
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # a few peers, asked on every request
def _normal_address(host: str) -> str:
    """One spelling per address: compressed IPv6, IPv4-mapped IPv6 as IPv4 (dual-stack
    sockets report IPv4 peers that way), DNS names lower-cased."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _wants_tls(request: Request) -> bool:
    """A sips: Request-URI asks for TLS on every hop to the target (RFC 3261 §19.1, §26.2.2;
    RFC 5630): the call leaves only over TLS, never quietly over UDP or TCP."""
    return request.ruri.scheme == "sips"


def _transport_param(scheme: str, side: _Side) -> str:
    # UDP is the default of sip: and TLS is what sips: means (RFC 3261 §19.1.2).
    if side.transport == "udp" or (scheme == "sips" and side.transport == "tls"):
        return ""
    return f";transport={side.transport}"


def _escape_user(user: str) -> str:
    # Bytes that were not UTF-8 arrive as surrogates (the parser decodes with
    # surrogateescape): escaped back as the bytes they were, not a crash.
    return quote(user, safe=_USER_SAFE, errors="surrogateescape")


def _user_uri(scheme: str, user: str, host: str) -> str:
    return f"{scheme}:{_escape_user(user)}@{host}" if user else f"{scheme}:{host}"


def _uri_user(uri: Uri) -> str | None:
    """The user part (unescaped) of a sip:/sips: URI or the number of a tel: URI."""
    if isinstance(uri, TelUri):
        return uri.number.translate(_VISUAL_SEPARATORS)
    if isinstance(uri, SipUri) and uri.user is not None:
        user = unquote(uri.user)
        if uri.params.get("user") == "phone":
            # RFC 3261 §19.1.1: with user=phone the user part is a telephone-subscriber.
            number, _, _ = user.partition(";")
            return number.translate(_VISUAL_SEPARATORS)
        return user
    return None


def _called_number(request: Request) -> str | Rejection:
    """The dialled number: the Request-URI's user part, else (an INVITE addressed to the
    SBC itself) the To URI's."""
    ruri = request.ruri
    if not isinstance(ruri, SipUri | TelUri):
        return Rejection(416, "Unsupported URI Scheme", f"Request-URI scheme {ruri.scheme}")
    number = _uri_user(ruri)
    if number is None:
        number = _uri_user(request.to.parsed_uri())
    if not number:
        return Rejection(484, "Address Incomplete", "no called number in Request-URI or To")
    return number


def _caller(request: Request) -> str:
    return _uri_user(request.from_.parsed_uri()) or ""


def _rewrite(number: str, rules: Sequence[NumberRule]) -> str:
    for rule in rules:
        rewritten = rule.apply(number)
        if rewritten is not None:
            return rewritten
    return number


def _no_route(callee: str, rewritten: str, direction: str) -> Rejection:
    shown = callee if callee == rewritten else f"{callee} (rewritten {rewritten})"
    if len(rewritten) < SHORTEST_COMPLETE_NUMBER:
        return Rejection(484, "Address Incomplete", f"{direction} number {shown} is too short")
    return Rejection(404, "No Route", f"no {direction} route matches {shown}")


def _secret(trunk: Trunk) -> DigestSecret | None:
    creds = trunk.credentials
    if creds is None:
        return None
    return DigestSecret(creds.digest_username, creds.password, creds.realm)


def _always_up(trunk: str) -> bool:
    return True


def _no_calls(trunk: str) -> int:
    return 0
