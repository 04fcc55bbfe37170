"""Routing: who may call, number rewriting, route choice, and the CallSetup built for each
leg (URIs, local endpoints, policies), including topology hiding toward trunks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sbc.b2bua.api import CallSetup, LocalEndpoint
from sbc.config import Config, parse_config
from sbc.routing import Rejection, Router, route
from sbc.sip.message import Request
from sbc.sip.peer import Peer
from sbc.transport.listeners import listener_name

# Distinct addresses per role so topology leaks show: PBX 127.0.0.10, SBC internal
# 127.0.0.1, SBC external 127.0.0.2 (advertised as 198.51.100.7), ITSPs 127.0.0.20/21.
CONFIG = """\
node: edge7
sip: {user_agent: SBC/1}
interfaces:
  internal:
    listen: [udp:127.0.0.1:5060, tcp:127.0.0.1:5060]
    media_address: 127.0.0.1
  external:
    listen: [udp:127.0.0.2:5080, tcp:127.0.0.2:5081]
    advertise: 198.51.100.7
    media_address: 127.0.0.2
pbxs:
  - name: main
    interface: internal
    address: 127.0.0.10:5070
    trusted_sources: [127.0.0.10/32]
trunks:
  - name: itsp-a
    interface: external
    proxy: "sip:127.0.0.20:5090"
    codecs: [PCMA, telephone-event]
  - name: itsp-b
    interface: external
    proxy: "sip:127.0.0.21:5090;transport=tcp"
    from_domain: itsp.example.net
    headers: [Diversion]
    user_agent: SBC-B
    pai: pass
  - name: itsp-tls
    interface: external
    proxy: "sips:127.0.0.22"
routes:
  outbound:
    - {match: '^\\+49\\d{5,}$', trunks: [itsp-a, itsp-b]}
    - {match: '^\\*\\d+#$', trunks: [itsp-a]}
    - {match: '^\\+44\\d+$', trunks: [itsp-tls]}
  inbound:
    - {match: '^\\d{3}$', pbx: main}
numbers:
  outbound:
    - {match: '^0(\\d+)$', replace: '+49\\1'}
  inbound:
    - {match: '^\\+4930123(\\d{3})$', replace: '\\1'}
calls: {no_answer_timeout: 45}
"""

PBX_UDP = Peer("udp", "127.0.0.10", 5070, "internal/udp:127.0.0.1:5060")
PBX_TCP = Peer("tcp", "127.0.0.10", 40123, "internal/tcp:127.0.0.1:5060")
ITSP_A = Peer("udp", "127.0.0.20", 5090, "external/udp:127.0.0.2:5080")


def invite(uri: str, from_uri: str = "sip:201@127.0.0.10", to_uri: str | None = None) -> Request:
    return Request(
        "INVITE",
        uri,
        [
            ("Via", "SIP/2.0/UDP 127.0.0.10:5070;branch=z9hG4bK-1"),
            ("From", f'"Alice" <{from_uri}>;tag=a1'),
            ("To", f"<{to_uri or uri}>"),
            ("Call-ID", "c1@127.0.0.10"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
        ],
    )


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(CONFIG, "routing.yaml")


@pytest.fixture(scope="module")
def router(config: Config) -> Router:
    return Router(config)


def accepted(result: CallSetup | Rejection) -> CallSetup:
    assert isinstance(result, CallSetup), result
    return result


def rejected(result: CallSetup | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# ----------------------------------------------------------------------------- outbound


def test_outbound_rewrites_the_number_and_targets_each_trunk_in_order(router: Router) -> None:
    setup = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert setup.direction == "outbound"
    assert (setup.caller, setup.callee, setup.callee_rewritten) == (
        "201",
        "0301234567",
        "+49301234567",
    )
    assert [target.name for target in setup.targets] == ["itsp-a", "itsp-b"]
    a, b = setup.targets
    assert a.kind == b.kind == "trunk"
    assert a.dest == Peer("udp", "127.0.0.20", 5090, "")
    assert a.request_uri == "sip:+49301234567@127.0.0.20:5090"
    assert b.dest == Peer("tcp", "127.0.0.21", 5090, "")
    assert b.request_uri == "sip:+49301234567@127.0.0.21:5090;transport=tcp"
    assert setup.no_answer_timeout == 45.0
    assert setup.call_key.startswith("edge7-")


def test_outbound_identities_carry_our_address_or_the_trunk_domain(router: Router) -> None:
    a, b = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP)).targets
    # itsp-a: From is ours (the advertised address), To names the proxy host.
    assert a.from_uri == "sip:201@198.51.100.7"
    assert a.to_uri == "sip:+49301234567@127.0.0.20"
    # itsp-b: from_domain goes into both.
    assert b.from_uri == "sip:201@itsp.example.net"
    assert b.to_uri == "sip:+49301234567@itsp.example.net"


def test_nothing_toward_a_trunk_names_the_pbx_or_the_internal_side(router: Router) -> None:
    request = invite("sip:0301234567@127.0.0.1;user=phone", from_uri="sip:201@127.0.0.10:5070")
    setup = accepted(router.route(request, PBX_UDP))
    assert len(setup.targets) == 2
    for target in setup.targets:
        local = target.local
        texts = (
            target.request_uri,
            target.to_uri,
            target.from_uri,
            target.dest.host,
            local.host,
            local.listener,
            local.media_address,
        )
        for text in texts:
            # '127.0.0.1' also catches the PBX's 127.0.0.10.
            assert "127.0.0.1" not in text, f"internal address leaks toward a trunk: {text}"
        assert local.interface == "external"
    assert setup.a_local.interface == "internal"


def test_untrusted_source_is_forbidden(router: Router) -> None:
    stranger = Peer("udp", "127.0.0.99", 5070, "internal/udp:127.0.0.1:5060")
    refusal = rejected(router.route(invite("sip:0301234567@127.0.0.1"), stranger))
    assert (refusal.status, refusal.reason) == (403, "Forbidden")
    assert "127.0.0.99" in refusal.log_reason


def test_trusted_address_on_the_wrong_interface_is_forbidden(router: Router) -> None:
    # The PBX's address arriving on the external side is a spoof, not the PBX.
    spoof = Peer("udp", "127.0.0.10", 5070, "external/udp:127.0.0.2:5080")
    assert rejected(router.route(invite("sip:0301234567@127.0.0.1"), spoof)).status == 403


def test_unknown_listener_is_forbidden(router: Router) -> None:
    unknown = Peer("udp", "127.0.0.10", 5070, "")
    assert rejected(router.route(invite("sip:0301234567@127.0.0.1"), unknown)).status == 403


def test_number_without_route_is_404(router: Router) -> None:
    refusal = rejected(router.route(invite("sip:+861012345678@127.0.0.1"), PBX_UDP))
    assert (refusal.status, refusal.reason) == (404, "No Route")
    assert "+861012345678" in refusal.log_reason


def test_rewritten_number_is_what_routes_match(router: Router) -> None:
    # '0301' becomes '+49301': too short for the national route, long enough not to be 484.
    refusal = rejected(router.route(invite("sip:0301@127.0.0.1"), PBX_UDP))
    assert refusal.status == 404
    assert "rewritten +49301" in refusal.log_reason


@pytest.mark.parametrize("uri", ["sip:12@127.0.0.1", "sip:127.0.0.1"])
def test_short_or_missing_number_is_address_incomplete(router: Router, uri: str) -> None:
    refusal = rejected(router.route(invite(uri, to_uri="sip:127.0.0.1"), PBX_UDP))
    assert (refusal.status, refusal.reason) == (484, "Address Incomplete")


def test_tel_request_uri_gives_the_number_without_separators(router: Router) -> None:
    setup = accepted(router.route(invite("tel:030-123-4567", to_uri="tel:030-123-4567"), PBX_UDP))
    assert setup.callee == "0301234567"
    assert setup.callee_rewritten == "+49301234567"
    assert setup.targets[0].request_uri == "sip:+49301234567@127.0.0.20:5090"


def test_escaped_user_part_is_unescaped_for_routing(router: Router) -> None:
    setup = accepted(router.route(invite("sip:%30%33%301234567@127.0.0.1"), PBX_UDP))
    assert setup.callee == "0301234567"
    assert setup.targets[0].request_uri == "sip:+49301234567@127.0.0.20:5090"


def test_characters_outside_the_user_grammar_are_escaped_again(router: Router) -> None:
    setup = accepted(router.route(invite("sip:*21%23@127.0.0.1"), PBX_UDP))
    assert setup.callee == "*21#"
    assert [target.name for target in setup.targets] == ["itsp-a"]
    assert setup.targets[0].request_uri == "sip:*21%23@127.0.0.20:5090"


def test_user_without_number_is_taken_from_to_when_the_ruri_has_none(router: Router) -> None:
    request = invite("sip:127.0.0.1:5060", to_uri="sip:0301234567@127.0.0.1")
    assert accepted(router.route(request, PBX_UDP)).callee_rewritten == "+49301234567"


def test_non_sip_request_uri_is_416(router: Router) -> None:
    assert rejected(router.route(invite("urn:service:sos"), PBX_UDP)).status == 416


def test_malformed_from_is_a_400_not_an_exception(router: Router) -> None:
    request = invite("sip:0301234567@127.0.0.1")
    request.set_header("From", "<sip:201@127.0.0.10")
    refusal = rejected(router.route(request, PBX_UDP))
    assert refusal.status == 400 and "From" in refusal.log_reason


# ----------------------------------------------------------------------------- inbound


def test_inbound_did_reaches_the_pbx_with_our_internal_address(router: Router) -> None:
    request = invite("sip:+4930123456@198.51.100.7", from_uri="sip:+4940999@127.0.0.20")
    setup = accepted(router.route(request, ITSP_A))
    assert setup.direction == "inbound"
    assert (setup.caller, setup.callee, setup.callee_rewritten) == (
        "+4940999",
        "+4930123456",
        "456",
    )
    (target,) = setup.targets
    assert (target.kind, target.name) == ("pbx", "main")
    assert target.dest == Peer("udp", "127.0.0.10", 5070, "")
    assert target.request_uri == "sip:456@127.0.0.10:5070"
    assert target.to_uri == "sip:456@127.0.0.10"
    assert target.from_uri == "sip:+4940999@127.0.0.1"
    assert target.local.interface == "internal" and target.local.host == "127.0.0.1"
    assert setup.a_local.interface == "external"
    assert setup.a_local.host == "198.51.100.7"


def test_inbound_from_a_stranger_is_forbidden(router: Router) -> None:
    stranger = Peer("udp", "127.0.0.66", 5090, "external/udp:127.0.0.2:5080")
    request = invite("sip:+4930123456@198.51.100.7")
    assert rejected(router.route(request, stranger)).status == 403


def test_trunk_address_on_the_internal_side_is_forbidden(router: Router) -> None:
    wrong_side = Peer("udp", "127.0.0.20", 5090, "internal/udp:127.0.0.1:5060")
    assert rejected(router.route(invite("sip:+4930123456@127.0.0.1"), wrong_side)).status == 403


def test_inbound_without_route_is_404(router: Router) -> None:
    refusal = rejected(router.route(invite("sip:+4930999999@198.51.100.7"), ITSP_A))
    assert refusal.status == 404


def test_inbound_policies_face_the_right_sides(router: Router) -> None:
    setup = accepted(router.route(invite("sip:+4930123456@198.51.100.7"), ITSP_A))
    # Leg A faces itsp-a: trunk defaults; leg B faces the PBX: PBX defaults.
    assert setup.a_policy.codecs == ("PCMA", "telephone-event")
    assert (setup.a_policy.pai, setup.a_policy.refer) == ("strip", "reject")
    assert setup.a_policy.session_expires == 1800
    policy = setup.targets[0].policy
    assert (policy.pai, policy.refer, policy.session_expires) == ("pass", "relay", 0)


def test_dns_trunk_is_known_by_the_addresses_the_caller_resolved() -> None:
    config = parse_config(
        CONFIG.replace('"sip:127.0.0.20:5090"', '"sip:itsp-a.example.net:5090"'), "r.yaml"
    )
    request = invite("sip:+4930123456@198.51.100.7")
    assert rejected(Router(config).route(request, ITSP_A)).status == 403
    resolved = Router(config, trunk_addresses={"itsp-a": {"127.0.0.20"}})
    assert accepted(resolved.route(request, ITSP_A)).direction == "inbound"
    # Calls go to the resolved address; the Request-URI keeps the name the ITSP expects.
    outbound = accepted(resolved.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert outbound.targets[0].dest.host == "127.0.0.20"
    assert "@itsp-a.example.net:5090" in outbound.targets[0].request_uri


def test_shared_host_picks_the_trunk_of_the_arrival_transport() -> None:
    text = CONFIG.replace('"sip:127.0.0.21:5090;transport=tcp"', '"sip:127.0.0.20:5090"')
    text = text.replace("    pai: pass\n", "    pai: pass\n    transport: tcp\n")
    router = Router(parse_config(text, "r.yaml"))
    over_tcp = Peer("tcp", "127.0.0.20", 41000, "external/tcp:127.0.0.2:5081")
    request = invite("sip:+4930123456@198.51.100.7")
    assert accepted(router.route(request, over_tcp)).a_policy.allowed_headers == ("diversion",)
    assert accepted(router.route(request, ITSP_A)).a_policy.allowed_headers == ()


SHARED_HOST = """\
interfaces:
  lan: {listen: [udp:127.0.0.1:5060, tcp:127.0.0.1:5060]}
pbxs:
  - {name: pbx, interface: lan, address: 127.0.0.30:5070, trusted_sources: [127.0.0.0/24]}
trunks:
  - {name: gw, interface: lan, proxy: "sip:127.0.0.30:5090"}
routes:
  outbound: [{match: '.', trunks: [gw]}]
  inbound: [{match: '.', pbx: pbx}]
"""


@pytest.mark.parametrize(
    ("transport", "port", "direction"),
    [
        ("udp", 5090, "inbound"),
        ("udp", 5070, "outbound"),
        ("tcp", 5090, "inbound"),
        ("tcp", 40000, "outbound"),
    ],
)
def test_pbx_and_trunk_on_one_host_are_told_apart_by_port(
    transport: str, port: int, direction: str
) -> None:
    # A trusted PBX range that also holds a trunk: requests from the trunk's port are the
    # trunk's, any other port is the PBX's.
    router = Router(parse_config(SHARED_HOST, "shared.yaml"))
    source = Peer(transport, "127.0.0.30", port, f"lan/{transport}:127.0.0.1:5060")
    setup = accepted(router.route(invite("sip:4930123456@127.0.0.1"), source))
    assert setup.direction == direction


# ----------------------------------------------------------------------------- our endpoints


def test_local_endpoints_follow_transport_and_listener(router: Router) -> None:
    setup = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_TCP))
    assert setup.a_local == LocalEndpoint(
        interface="internal",
        transport="tcp",
        host="127.0.0.1",
        port=5060,
        listener="internal/tcp:127.0.0.1:5060",
        media_address="127.0.0.1",
        user_agent="SBC/1",
    )
    a, b = setup.targets
    assert a.local == LocalEndpoint(
        "external",
        "udp",
        "198.51.100.7",
        5080,
        "external/udp:127.0.0.2:5080",
        "127.0.0.2",
        "SBC/1",
        sdp_address="198.51.100.7",  # behind NAT: SDP names the advertised address
    )
    assert (b.local.transport, b.local.port, b.local.listener) == (
        "tcp",
        5081,
        "external/tcp:127.0.0.2:5081",
    )
    assert b.local.user_agent == "SBC-B"
    assert b.local.listener == listener_name("external", "tcp", "127.0.0.2", 5081)


def test_transport_without_listener_falls_back_to_the_first_listener(router: Router) -> None:
    setup = accepted(router.route(invite("sip:+442071234567@127.0.0.1"), PBX_UDP))
    (target,) = setup.targets
    assert target.dest == Peer("tls", "127.0.0.22", 5061, "")
    # sips: already means TLS: no transport parameter.
    # No port in the trunk URI, none in the Request-URI (RFC 3263: the default, 5061).
    assert target.request_uri == "sips:+442071234567@127.0.0.22"
    assert target.from_uri == "sips:201@198.51.100.7"
    assert (target.local.transport, target.local.port) == ("tls", 5080)
    assert target.local.listener == "external/udp:127.0.0.2:5080"


def test_sips_request_leaves_only_over_tls_rfc3261_26_2_2(router: Router) -> None:
    # A TLS trunk on the route: the call goes there.
    setup = accepted(router.route(invite("sips:+442071234567@127.0.0.1"), PBX_TCP))
    assert [target.name for target in setup.targets] == ["itsp-tls"]
    # A route of UDP/TCP trunks only: refused rather than carried in the clear.
    refused = rejected(router.route(invite("sips:0301234567@127.0.0.1"), PBX_TCP))
    assert (refused.status, refused.reason) == (480, "Temporarily Unavailable")
    assert refused.headers == (("Warning", '380 edge7 "SIPS Not Allowed"'),)
    # The same number as sip: is routed as before.
    assert accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_TCP)).targets


def test_sips_request_from_a_trunk_needs_a_tls_pbx(router: Router) -> None:
    request = invite("sips:+4930123201@198.51.100.7", from_uri="sip:+15550001@127.0.0.20")
    refused = rejected(router.route(request, ITSP_A))
    assert refused.status == 480 and "SIPS Not Allowed" in refused.headers[0][1]


def test_leg_policies_come_from_pbx_and_trunk_settings(router: Router) -> None:
    setup = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert setup.a_policy.pai == "pass" and setup.a_policy.refer == "relay"
    assert setup.a_policy.session_expires == 0 and setup.a_policy.codecs == ()
    a, b = setup.targets
    assert (a.policy.pai, a.policy.refer, a.policy.session_expires) == ("strip", "reject", 1800)
    assert a.policy.codecs == ("PCMA", "telephone-event")
    assert b.policy.allowed_headers == ("diversion",) and b.policy.pai == "pass"


def test_call_keys_are_unique_and_name_the_node(router: Router) -> None:
    keys = {
        accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP)).call_key
        for _ in range(50)
    }
    assert len(keys) == 50 and all(key.startswith("edge7-") for key in keys)


def test_module_function_routes_like_the_router(config: Config) -> None:
    setup = accepted(route(config, invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert [target.name for target in setup.targets] == ["itsp-a", "itsp-b"]


# ----------------------------------------------------------------------------- IPv6

CONFIG_V6 = (
    CONFIG.replace(
        "    listen: [udp:127.0.0.1:5060, tcp:127.0.0.1:5060]\n    media_address: 127.0.0.1",
        "    listen: ['udp:[fd00::1]:5060']\n    media_address: fd00::1",
    )
    .replace(
        "    listen: [udp:127.0.0.2:5080, tcp:127.0.0.2:5081]\n    advertise: 198.51.100.7\n"
        "    media_address: 127.0.0.2",
        "    listen: [udp:127.0.0.2:5080, 'udp:[2001:db8::1]:5080']\n"
        "    media_address: 2001:db8::1",
    )
    .replace("address: 127.0.0.10:5070", "address: '[fd00::10]:5070'")
    .replace("trusted_sources: [127.0.0.10/32]", "trusted_sources: ['fd00::10/128', 127.0.0.10/32]")
    .replace('"sip:127.0.0.20:5090"', '"sip:[2001:db8::20]:5090"')
)


@pytest.fixture(scope="module")
def router_v6() -> Router:
    return Router(parse_config(CONFIG_V6, "v6.yaml"))


def test_ipv6_outbound_uses_the_ipv6_listener_and_brackets(router_v6: Router) -> None:
    pbx = Peer("udp", "fd00::10", 5070, "internal/udp:[fd00::1]:5060")
    setup = accepted(router_v6.route(invite("sip:0301234567@[fd00::1]"), pbx))
    assert setup.a_local.host == "fd00::1"
    assert setup.a_local.listener == "internal/udp:[fd00::1]:5060"
    target = setup.targets[0]
    assert target.dest == Peer("udp", "2001:db8::20", 5090, "")
    assert target.request_uri == "sip:+49301234567@[2001:db8::20]:5090"
    assert target.to_uri == "sip:+49301234567@[2001:db8::20]"
    assert target.from_uri == "sip:201@[2001:db8::1]"
    assert target.local.listener == listener_name("external", "udp", "2001:db8::1", 5080)
    assert target.local.media_address == "2001:db8::1"


def test_ipv6_inbound_reaches_the_pbx_in_brackets(router_v6: Router) -> None:
    itsp = Peer("udp", "2001:db8::20", 5090, "external/udp:[2001:db8::1]:5080")
    setup = accepted(router_v6.route(invite("sip:+4930123456@[2001:db8::1]"), itsp))
    target = setup.targets[0]
    assert target.request_uri == "sip:456@[fd00::10]:5070"
    assert target.from_uri == "sip:201@[fd00::1]"
    assert setup.a_local.listener == "external/udp:[2001:db8::1]:5080"


def test_ipv4_mapped_source_matches_an_ipv4_trusted_range(router_v6: Router) -> None:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    pbx = Peer("udp", "::ffff:127.0.0.10", 5070, "internal/udp:[fd00::1]:5060")
    assert accepted(router_v6.route(invite("sip:0301234567@[fd00::1]"), pbx)).direction == (
        "outbound"
    )


def test_router_refuses_a_config_with_an_interface_without_listeners(config: Config) -> None:
    bare = replace(config.interfaces["external"], listen=())
    broken = replace(config, interfaces={**config.interfaces, "external": bare})
    with pytest.raises(ValueError, match="trunk 'itsp-a': interface 'external' has no listener"):
        Router(broken)


def test_trunk_caller_id_replaces_the_callers_number_toward_it() -> None:
    text = CONFIG.replace(
        "codecs: [PCMA, telephone-event]", "codecs: [PCMA]\n    caller_id: '+4930555000'", 1
    )
    setup = accepted(
        Router(parse_config(text, "r.yaml")).route(invite("sip:0301234567@127.0.0.1"), PBX_UDP)
    )
    assert setup.targets[0].from_uri.startswith("sip:+4930555000@"), setup.targets[0].from_uri
    assert setup.caller == "201"  # the CDR keeps who really called


def test_weighted_route_and_max_calls_shape_the_trunk_order() -> None:
    text = CONFIG.replace(
        "- {match: '^\\+49\\d{5,}$', trunks: [itsp-a, itsp-b]}",
        "- {match: '^\\+49\\d{5,}$', trunks: [itsp-a, itsp-b], strategy: least_calls}",
        1,
    )
    busy = {"itsp-a": 5, "itsp-b": 1}
    router = Router(parse_config(text, "r.yaml"), calls=lambda name: busy.get(name, 0))
    setup = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert [t.name for t in setup.targets] == ["itsp-b", "itsp-a"]
    down = Router(parse_config(text, "r.yaml"), health=lambda name: name != "itsp-b")
    setup = accepted(down.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert [t.name for t in setup.targets] == ["itsp-a"]


def test_a_trunk_name_resolved_to_several_gateways_tries_them_in_turn() -> None:
    router = Router(parse_config(CONFIG, "r.yaml"))
    router.set_trunk_addresses({"itsp-a": ["127.0.0.20", "127.0.0.25"]})
    setup = accepted(router.route(invite("sip:0301234567@127.0.0.1"), PBX_UDP))
    assert [(t.name, t.dest.host) for t in setup.targets] == [
        ("itsp-a", "127.0.0.20"),
        ("itsp-a", "127.0.0.25"),
        ("itsp-b", "127.0.0.21"),
    ]
    # Requests from the second gateway are the trunk's (inbound calls).
    second = Peer("udp", "127.0.0.25", 5090, "external/udp:127.0.0.2:5080")
    assert accepted(router.route(invite("sip:+4930123456@127.0.0.2"), second)).direction == (
        "inbound"
    )


def test_a_trunk_gets_the_number_in_its_own_format() -> None:
    # Global rules make +49...; this carrier wants national format (0...).
    text = CONFIG.replace(
        "codecs: [PCMA, telephone-event]",
        "codecs: [PCMA, telephone-event]\n    numbers: [{match: '^\\+49(\\d+)$', replace: '0\\1'}]",
        1,
    )
    setup = accepted(
        Router(parse_config(text, "r.yaml")).route(invite("sip:0301234567@127.0.0.1"), PBX_UDP)
    )
    assert setup.targets[0].request_uri.startswith("sip:0301234567@"), setup.targets[0].request_uri
    assert setup.targets[1].request_uri.startswith("sip:+49301234567@")  # itsp-b: unchanged
    assert setup.callee_rewritten == "+49301234567"
