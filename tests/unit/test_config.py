"""Configuration loading: the shipped files load, and every validation rule reports the
file, line and key of the problem."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sbc.config import (
    Config,
    ConfigError,
    ListenAddress,
    SocketAddress,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
FILE = "cfg.yaml"
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")

BASE = """\
node: sbc1
log: {level: info, format: kv}
sip: {t1: 0.5, t2: 4.0, t4: 5.0, max_message_size: 65535, user_agent: null}
interfaces:
  internal:
    listen: [udp:127.0.0.1:5060, tcp:127.0.0.1:5060]
    media_address: 127.0.0.1
  external:
    listen: [udp:127.0.0.1:5080]
    advertise: 127.0.0.1
    media_address: 127.0.0.1
pbxs:
  - name: main
    interface: internal
    address: 127.0.0.1:5070
    trusted_sources: [127.0.0.1/32]
trunks:
  - name: itsp-a
    interface: external
    proxy: "sip:127.0.0.1:5090"
    codecs: [PCMU, PCMA, telephone-event]
routes:
  outbound:
    - {match: '^\\+?\\d+$', trunks: [itsp-a]}
  inbound:
    - {match: '.*', pbx: main}
numbers:
  outbound:
    - {match: '^0(\\d+)$', replace: '+49\\1'}
  inbound: []
media: {port_range: [20000, 29999], timeout: 60}
"""


def edited(old: str, new: str) -> str:
    assert old in BASE, f"test bug: {old!r} is not in BASE"
    return BASE.replace(old, new, 1)


def line_of(text: str, fragment: str) -> int:
    """1-based line on which `fragment` starts in `text`."""
    return text[: text.index(fragment)].count("\n") + 1


def is_rfc1918(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(net) for net in RFC1918)


def config_error(text: str, filename: str = FILE) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename)
    return str(info.value)


# ----------------------------------------------------------------------------- valid files


def test_base_text_is_valid() -> None:
    config = parse_config(BASE, FILE)
    assert set(config.interfaces) == {"internal", "external"}
    assert config.source == FILE


def test_shipped_default_config_loads() -> None:
    config = load_config(ROOT / "config" / "sbc.yaml")
    internal = config.interfaces["internal"]
    assert internal.listen == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    assert config.interfaces["external"].listen == (ListenAddress("udp", "127.0.0.1", 5080),)
    assert config.pbx("main").address == SocketAddress("127.0.0.1", 5070)
    proxy = config.trunk("itsp-a").proxy
    assert (proxy.scheme, proxy.host, proxy.port) == ("sip", "127.0.0.1", 5090)
    assert config.routes.outbound[0].trunks == ("itsp-a",)
    assert config.routes.inbound[0].pbx == "main"
    assert config.media.port_range == (20000, 29999)


def test_production_example_loads() -> None:
    config = load_config(ROOT / "config" / "examples" / "production.yaml")
    external = config.interfaces["external"]
    assert external.advertise is not None
    # Behind NAT: the advertised address is public, the bound ones are RFC 1918 addresses.
    assert not is_rfc1918(external.advertise)
    assert is_rfc1918(external.media_address)
    assert all(is_rfc1918(address.host) for address in external.listen)
    assert is_rfc1918(config.pbxs[0].address.host)
    assert any(address.transport == "tls" for address in external.listen)
    assert external.tls is not None and external.tls.verify_peer
    # The API off loopback: HTTPS with client certificates.
    assert config.api.tls is not None and config.api.tls.verify_peer and config.api.tls.ca
    # International calls are off by default: no outbound route accepts a foreign E.164 number.
    dialled = "+12125550100"
    assert not any(route.match.search(dialled) for route in config.routes.outbound)
    assert any(route.match.search("+493012345678") for route in config.routes.outbound)


def test_parsed_values_have_the_contract_types() -> None:
    config = parse_config(BASE, FILE)
    assert isinstance(config, Config)
    assert config.node == "sbc1"
    assert config.sip.t1 == 0.5 and config.sip.max_message_size == 65535
    assert config.sip.user_agent is None
    assert config.log.level == "info" and config.log.format == "kv"
    assert config.interfaces["external"].advertise == "127.0.0.1"
    assert config.interfaces["internal"].advertise is None
    assert config.interfaces["internal"].tls is None
    assert config.pbxs[0].trusted_sources == (ipaddress.ip_network("127.0.0.1/32"),)
    assert config.trunks[0].codecs == ("PCMU", "PCMA", "telephone-event")
    assert config.numbers.outbound[0].apply("0301234") == "+49301234"
    assert config.numbers.outbound[0].apply("+49301234") is None
    assert config.media.timeout == 60.0


def test_defaults_when_optional_sections_are_absent() -> None:
    config = parse_config("interfaces:\n  a: {listen: [udp:127.0.0.1:5060]}\n", FILE)
    assert config.node == "sbc1"
    assert config.sip.t2 == 4.0 and config.sip.t4 == 5.0
    assert config.log.format == "kv"
    assert config.pbxs == () and config.trunks == ()
    assert config.routes.outbound == () and config.numbers.inbound == ()
    # Without media_address the first listener's address is used.
    assert config.interfaces["a"].media_address == "127.0.0.1"


def test_ipv6_listener_in_brackets() -> None:
    text = edited("[udp:127.0.0.1:5080]", "['udp:[::1]:5080']")
    address = parse_config(text, FILE).interfaces["external"].listen[0]
    assert address == ListenAddress("udp", "::1", 5080)
    assert str(address) == "udp:[::1]:5080"


def test_proxy_port_defaults_to_5060_and_host_names_are_accepted() -> None:
    text = edited('"sip:127.0.0.1:5090"', '"sip:itsp.example.net;transport=tcp"')
    proxy = parse_config(text, FILE).trunks[0].proxy
    assert (proxy.host, proxy.port, proxy.transport) == ("itsp.example.net", 5060, "tcp")


def test_sips_proxy_defaults_to_5061() -> None:
    # RFC 3261 §19.1.2: sips: URIs default to port 5061.
    text = edited('"sip:127.0.0.1:5090"', '"sips:itsp.example.net"')
    assert parse_config(text, FILE).trunks[0].proxy.port == 5061


def test_tls_paths_are_relative_to_the_config_file() -> None:
    text = edited("[udp:127.0.0.1:5080]", "[udp:127.0.0.1:5080, tls:127.0.0.1:5081]").replace(
        "    advertise: 127.0.0.1\n",
        "    advertise: 127.0.0.1\n    tls: {cert: tls/c.pem, key: /abs/k.pem}\n",
    )
    tls = parse_config(text, "etc/sbc/sbc.yaml").interfaces["external"].tls
    assert tls is not None
    assert tls.cert == "etc/sbc/tls/c.pem" and tls.key == "/abs/k.pem"
    assert tls.ca is None and tls.verify_peer is False


TRUNK_LAST = "    codecs: [PCMU, PCMA, telephone-event]"
PBX_LAST = "    trusted_sources: [127.0.0.1/32]"


def test_leg_settings_default_per_side() -> None:
    config = parse_config(BASE, FILE)
    trunk, pbx = config.trunks[0], config.pbxs[0]
    assert trunk.transport == "udp" and trunk.headers == () and trunk.from_domain is None
    assert (trunk.pai, trunk.refer, trunk.user_agent) == ("strip", "reject", None)
    assert (trunk.session_expires, trunk.min_se, trunk.supports_100rel) == (1800, 90, True)
    assert pbx.transport == "udp" and pbx.headers == ()
    assert (pbx.pai, pbx.refer, pbx.user_agent) == ("pass", "relay", None)
    assert (pbx.session_expires, pbx.min_se, pbx.supports_100rel) == (0, 90, True)
    assert config.calls.no_answer_timeout == 180.0


def test_every_leg_setting_is_read() -> None:
    trunk_keys = (
        "\n    transport: tcp\n    headers: [Diversion, X-Account, diversion]\n    pai: pass"
        "\n    refer: relay\n    user_agent: Edge/2\n    session_expires: 600\n    min_se: 120"
        "\n    100rel: false\n    from_domain: itsp.example.net"
    )
    pbx_keys = (
        "\n    transport: tcp\n    headers: [History-Info]\n    pai: strip\n    refer: reject"
        "\n    user_agent: Edge/3\n    session_expires: 90\n    100rel: no"
    )
    text = edited(TRUNK_LAST, TRUNK_LAST + trunk_keys).replace(PBX_LAST, PBX_LAST + pbx_keys)
    text += "calls: {no_answer_timeout: 42.5}\n"
    config = parse_config(text, FILE)
    trunk, pbx = config.trunks[0], config.pbxs[0]
    assert trunk.transport == "tcp"
    # Names are kept lower-case (header names are case-insensitive), once each.
    assert trunk.headers == ("diversion", "x-account")
    assert (trunk.pai, trunk.refer, trunk.user_agent) == ("pass", "relay", "Edge/2")
    assert (trunk.session_expires, trunk.min_se, trunk.supports_100rel) == (600, 120, False)
    assert trunk.from_domain == "itsp.example.net"
    assert pbx.transport == "tcp" and pbx.headers == ("history-info",)
    assert (pbx.pai, pbx.refer, pbx.user_agent) == ("strip", "reject", "Edge/3")
    assert (pbx.session_expires, pbx.min_se, pbx.supports_100rel) == (90, 90, False)
    assert config.calls.no_answer_timeout == 42.5


@pytest.mark.parametrize(
    ("proxy", "extra", "transport"),
    [
        ('"sip:itsp;transport=tcp"', "", "tcp"),
        ('"sips:itsp"', "", "tls"),
        ('"sip:itsp"', "\n    transport: tls", "tls"),
        ('"sip:itsp;transport=tcp"', "\n    transport: tcp", "tcp"),
    ],
)
def test_trunk_transport_defaults_to_what_the_proxy_uri_says(
    proxy: str, extra: str, transport: str
) -> None:
    text = edited('"sip:127.0.0.1:5090"', proxy).replace(TRUNK_LAST, TRUNK_LAST + extra)
    assert parse_config(text, FILE).trunks[0].transport == transport


def test_from_domain_may_be_an_address() -> None:
    text = edited(TRUNK_LAST, TRUNK_LAST + "\n    from_domain: '2001:DB8::1'")
    assert parse_config(text, FILE).trunks[0].from_domain == "2001:db8::1"


def test_session_timer_off_ignores_min_se() -> None:
    text = edited(TRUNK_LAST, TRUNK_LAST + "\n    session_expires: 0\n    min_se: 300")
    trunk = parse_config(text, FILE).trunks[0]
    assert (trunk.session_expires, trunk.min_se) == (0, 300)


# ----------------------------------------------------------------------------- each rule

# (id, old text, new text, key, message fragment, text at the expected line or None = new)
CASES = [
    ("unknown-top-key", "media:", "medai:", "medai", "unknown key (did you mean 'media'?)", None),
    (
        "unknown-nested-key",
        "    codecs:",
        "    codec:",
        "trunks[0].codec",
        "unknown key (did you mean 'codecs'?)",
        None,
    ),
    (
        "listen-transport",
        "[udp:127.0.0.1:5080]",
        "[sctp:127.0.0.1:5080]",
        "interfaces.external.listen[0]",
        "transport 'sctp' is not one of udp, tcp, tls",
        None,
    ),
    (
        "listen-port-range",
        "tcp:127.0.0.1:5060]",
        "tcp:127.0.0.1:70000]",
        "interfaces.internal.listen[1]",
        "port '70000' is not a number from 1 to 65535",
        None,
    ),
    (
        "listen-port-zero",
        "[udp:127.0.0.1:5080]",
        "[udp:127.0.0.1:0]",
        "interfaces.external.listen[0]",
        "port '0' is not a number from 1 to 65535",
        None,
    ),
    (
        "listen-no-port",
        "[udp:127.0.0.1:5080]",
        "[udp:127.0.0.1]",
        "interfaces.external.listen[0]",
        "'udp:127.0.0.1': has no port",
        None,
    ),
    (
        "listen-host-not-ip",
        "[udp:127.0.0.1:5080]",
        "[udp:localhost:5080]",
        "interfaces.external.listen[0]",
        "host 'localhost' is not an IP address",
        None,
    ),
    (
        "listen-ipv6-needs-brackets",
        "[udp:127.0.0.1:5080]",
        "['udp:::1:5080']",
        "interfaces.external.listen[0]",
        "must be written in brackets",
        None,
    ),
    (
        "listen-not-a-list",
        "    listen: [udp:127.0.0.1:5080]",
        "    listen: udp:127.0.0.1:5080",
        "interfaces.external.listen",
        "expected a list, got str",
        None,
    ),
    (
        "listen-empty",
        "    listen: [udp:127.0.0.1:5080]",
        "    listen: []",
        "interfaces.external.listen",
        "needs at least one",
        None,
    ),
    (
        "listen-clash",
        "[udp:127.0.0.1:5080]",
        "[udp:127.0.0.1:5060]",
        "interfaces.external.listen[0]",
        "udp:127.0.0.1:5060 clashes with udp:127.0.0.1:5060 in interfaces.internal.listen[0]",
        None,
    ),
    (
        "listen-wildcard-clash",
        "[udp:127.0.0.1:5080]",
        "[tls:0.0.0.0:5060]",
        "interfaces.external.listen[0]",
        "clashes with tcp:127.0.0.1:5060",
        None,
    ),
    (
        "media-address-not-ip",
        "    media_address: 127.0.0.1\n  external",
        "    media_address: 127.0.0.300\n  external",
        "interfaces.internal.media_address",
        "'127.0.0.300' is not an IP address",
        "    media_address: 127.0.0.300",
    ),
    (
        "advertise-not-ip",
        "advertise: 127.0.0.1",
        "advertise: sbc.example.com",
        "interfaces.external.advertise",
        "'sbc.example.com' is not an IP address",
        None,
    ),
    (
        "interface-name",
        "  external:",
        "  'ext ernal':",
        "interfaces.ext ernal",
        "not a valid interface name",
        None,
    ),
    (
        "tls-required",
        "[udp:127.0.0.1:5080]",
        "[tls:127.0.0.1:5081]",
        "interfaces.external.tls",
        "required because a tls: listener is configured",
        "  external:",
    ),
    (
        "tls-unused",
        "    advertise: 127.0.0.1\n",
        "    advertise: 127.0.0.1\n    tls: {cert: c.pem, key: k.pem}\n",
        "interfaces.external.tls",
        "given but unused",
        "    tls:",
    ),
    (
        "tls-missing-key",
        "[udp:127.0.0.1:5080]",
        "[tls:127.0.0.1:5081]\n    tls: {cert: c.pem}",
        "interfaces.external.tls.key",
        "required key is missing",
        "    tls:",
    ),
    (
        "tls-verify-peer-type",
        "[udp:127.0.0.1:5080]",
        "[tls:127.0.0.1:5081]\n    tls: {cert: c.pem, key: k.pem, verify_peer: 'yes'}",
        "interfaces.external.tls.verify_peer",
        "expected true or false, got str",
        "    tls:",
    ),
    (
        "pbx-address-no-port",
        "address: 127.0.0.1:5070",
        "address: 127.0.0.1",
        "pbxs[0].address",
        "'127.0.0.1': has no port (expected host:port)",
        "    address: 127.0.0.1\n",
    ),
    (
        "pbx-address-bad-port",
        "address: 127.0.0.1:5070",
        "address: 127.0.0.1:x",
        "pbxs[0].address",
        "port 'x' is not a number",
        None,
    ),
    (
        "pbx-interface-ref",
        "interface: internal",
        "interface: intrenal",
        "pbxs[0].interface",
        "no interface named 'intrenal' (did you mean 'internal'?)",
        None,
    ),
    (
        "cidr-prefix",
        "[127.0.0.1/32]",
        "[10.0.0.0/33]",
        "pbxs[0].trusted_sources[0]",
        "'10.0.0.0/33' is not a CIDR network",
        None,
    ),
    (
        "cidr-host-bits",
        "[127.0.0.1/32]",
        "[127.0.0.1/32, 10.0.0.1/24]",
        "pbxs[0].trusted_sources[1]",
        "has host bits set",
        None,
    ),
    (
        "cidr-type",
        "trusted_sources: [127.0.0.1/32]",
        "trusted_sources: 127.0.0.1/32",
        "pbxs[0].trusted_sources",
        "expected a list, got str",
        None,
    ),
    (
        "proxy-scheme",
        '"sip:127.0.0.1:5090"',
        '"http://itsp"',
        "trunks[0].proxy",
        "'http://itsp' is not a sip: or sips: URI",
        None,
    ),
    (
        "proxy-no-host",
        '"sip:127.0.0.1:5090"',
        '"sip:"',
        "trunks[0].proxy",
        "'sip:' has no host",
        None,
    ),
    (
        "proxy-bad-host",
        '"sip:127.0.0.1:5090"',
        '"sip:itsp_a:5090"',
        "trunks[0].proxy",
        "'itsp_a' is neither an IP address nor a host name",
        None,
    ),
    (
        "proxy-bad-port",
        '"sip:127.0.0.1:5090"',
        '"sip:itsp:99999"',
        "trunks[0].proxy",
        "port '99999' is not a number from 1 to 65535",
        None,
    ),
    (
        "proxy-sips-udp",
        '"sip:127.0.0.1:5090"',
        '"sips:itsp;transport=udp"',
        "trunks[0].proxy",
        "a sips: URI needs TLS",
        None,
    ),
    (
        "trunk-interface-ref",
        "interface: external",
        "interface: dmz",
        "trunks[0].interface",
        "no interface named 'dmz'",
        None,
    ),
    (
        "codecs-type",
        "codecs: [PCMU, PCMA, telephone-event]",
        "codecs: PCMU",
        "trunks[0].codecs",
        "expected a list, got str",
        None,
    ),
    (
        "duplicate-trunk",
        "routes:",
        "  - {name: itsp-a, interface: external, proxy: 'sip:h'}\nroutes:",
        "trunks[1].name",
        "duplicate trunk name 'itsp-a'",
        "  - {name: itsp-a",
    ),
    (
        "duplicate-pbx",
        "trunks:",
        "  - {name: main, interface: internal, address: 'h:1'}\ntrunks:",
        "pbxs[1].name",
        "duplicate pbx name 'main' (first defined at pbxs[0].name)",
        "  - {name: main",
    ),
    (
        "name-syntax",
        "  - name: itsp-a",
        "  - name: itsp a",
        "trunks[0].name",
        "'itsp a' is not a valid name",
        None,
    ),
    (
        "route-regex",
        "{match: '^\\+?\\d+$'",
        "{match: '^(+'",
        "routes.outbound[0].match",
        "bad regular expression '^(+': nothing to repeat",
        None,
    ),
    (
        "route-trunk-ref",
        "trunks: [itsp-a]",
        "trunks: [itsp-b]",
        "routes.outbound[0].trunks[0]",
        "no trunk named 'itsp-b' (did you mean 'itsp-a'?)",
        None,
    ),
    (
        "route-no-trunks",
        "trunks: [itsp-a]",
        "trunks: []",
        "routes.outbound[0].trunks",
        "name at least one trunk",
        None,
    ),
    (
        "route-pbx-ref",
        "pbx: main",
        "pbx: mian",
        "routes.inbound[0].pbx",
        "no pbx named 'mian' (did you mean 'main'?)",
        None,
    ),
    (
        "route-unknown-key",
        "pbx: main}",
        "pbx: main, trunk: x}",
        "routes.inbound[0].trunk",
        "unknown key",
        None,
    ),
    (
        "number-regex",
        "{match: '^0(\\d+)$'",
        "{match: '^0(\\d+$'",
        "numbers.outbound[0].match",
        "missing ), unterminated subpattern",
        None,
    ),
    (
        "number-replace-group",
        "replace: '+49\\1'",
        "replace: '+49\\2'",
        "numbers.outbound[0].replace",
        "invalid group reference 2",
        None,
    ),
    (
        "number-replace-missing",
        ", replace: '+49\\1'}",
        "}",
        "numbers.outbound[0].replace",
        "required key is missing",
        "    - {match: '^0",
    ),
    (
        "port-range-order",
        "[20000, 29999]",
        "[30000, 29999]",
        "media.port_range",
        "low bound 30000 must be below high bound 29999",
        None,
    ),
    (
        "port-range-even",
        "[20000, 29999]",
        "[20001, 29999]",
        "media.port_range[0]",
        "low bound 20001 must be even",
        None,
    ),
    (
        "port-range-length",
        "[20000, 29999]",
        "[20000]",
        "media.port_range",
        "expected [low, high], got 1 values",
        None,
    ),
    (
        "port-range-bound",
        "[20000, 29999]",
        "[20000, 70000]",
        "media.port_range[1]",
        "70000 is out of range: must be between 1 and 65535",
        None,
    ),
    (
        "timeout-positive",
        "timeout: 60",
        "timeout: 0",
        "media.timeout",
        "must be a positive number, got 0",
        None,
    ),
    ("t1-positive", "t1: 0.5", "t1: -1", "sip.t1", "must be a positive number, got -1", None),
    ("t1-type", "t1: 0.5", "t1: fast", "sip.t1", "expected a number, got str", None),
    ("t1-bool", "t1: 0.5", "t1: true", "sip.t1", "expected a number, got bool", None),
    ("t2-below-t1", "t2: 4.0", "t2: 0.1", "sip.t2", "must not be smaller than t1", None),
    (
        "max-message-size",
        "max_message_size: 65535",
        "max_message_size: 0",
        "sip.max_message_size",
        "0 is out of range: must be at least 1",
        None,
    ),
    (
        "user-agent-type",
        "user_agent: null",
        "user_agent: [x]",
        "sip.user_agent",
        "expected a string, got list",
        None,
    ),
    (
        "log-level",
        "level: info",
        "level: verbose",
        "log.level",
        "'verbose' is not one of debug, info, warning, error, critical",
        None,
    ),
    (
        "log-format",
        "format: kv",
        "format: jsno",
        "log.format",
        "'jsno' is not one of kv, json (did you mean 'json'?)",
        None,
    ),
    ("node-type", "node: sbc1", "node: 42", "node", "expected a string, got int", None),
    (
        "section-type",
        "media: {port_range: [20000, 29999], timeout: 60}",
        "media: [1, 2]",
        "media",
        "expected a mapping, got list",
        None,
    ),
    ("duplicate-yaml-key", "media:", "node: sbc2\nmedia:", "node", "duplicate key", "node: sbc2"),
    *[
        (f"trunk-{name}", TRUNK_LAST, f"{TRUNK_LAST}\n    {line}", f"trunks[0].{key}", msg, line)
        for name, line, key, msg in [
            ("transport", "transport: sctp", "transport", "'sctp' is not one of udp, tcp, tls"),
            ("headers-type", "headers: Diversion", "headers", "expected a list, got str"),
            ("header-name", "headers: ['X Account']", "headers[0]", "is not a header name"),
            ("header-compact", "headers: [f]", "headers[0]", "compact form"),
            ("header-owned", "headers: [Via]", "headers[0]", "built by the SBC on each leg"),
            ("header-pai", "headers: [P-Asserted-Identity]", "headers[0]", "use pai: pass"),
            ("pai", "pai: keep", "pai", "'keep' is not one of pass, strip"),
            ("refer", "refer: forward", "refer", "'forward' is not one of reject, relay"),
            ("user-agent", "user_agent: 7", "user_agent", "expected a string, got int"),
            ("se-type", "session_expires: long", "session_expires", "expected an integer"),
            ("se-negative", "session_expires: -1", "session_expires", "must be at least 0"),
            ("se-below-min", "session_expires: 60", "session_expires", "at least min_se (90)"),
            ("min-se", "min_se: 30", "min_se", "30 is out of range: must be at least 90"),
            ("100rel", "100rel: sometimes", "100rel", "expected true or false, got str"),
            ("from-domain", "from_domain: 'itsp..net'", "from_domain", "nor a host name"),
            ("unknown", "from_domian: x", "from_domian", "did you mean 'from_domain'?"),
        ]
    ],
    *[
        (f"pbx-{name}", PBX_LAST, f"{PBX_LAST}\n    {line}", f"pbxs[0].{key}", msg, line)
        for name, line, key, msg in [
            ("transport", "transport: ws", "transport", "'ws' is not one of udp, tcp, tls"),
            ("headers", "headers: [Contact]", "headers[0]", "built by the SBC on each leg"),
            ("pai", "pai: yes", "pai", "expected a string, got bool"),
            ("refer", "refer: relai", "refer", "(did you mean 'relay'?)"),
            (
                "se-below-min",
                "session_expires: 100\n    min_se: 120",
                "session_expires",
                "at least min_se (120)",
            ),
            ("100rel", "100rel: 1", "100rel", "expected true or false, got int"),
            ("from-domain", "from_domain: pbx.lan", "from_domain", "unknown key"),
        ]
    ],
    (
        "trunk-transport-contradicts-proxy",
        '"sip:127.0.0.1:5090"',
        '"sip:127.0.0.1:5090;transport=tcp"\n    transport: udp',
        "trunks[0].transport",
        "'udp' contradicts transport=tcp in the proxy URI",
        "    transport: udp",
    ),
    (
        "trunk-transport-contradicts-sips",
        '"sip:127.0.0.1:5090"',
        '"sips:127.0.0.1:5090"\n    transport: tcp',
        "trunks[0].transport",
        "'tcp' contradicts the sips: scheme",
        "    transport: tcp",
    ),
    (
        "no-answer-timeout",
        "media: {port_range",
        "calls: {no_answer_timeout: 0}\nmedia: {port_range",
        "calls.no_answer_timeout",
        "must be a positive number, got 0",
        None,
    ),
    (
        "calls-unknown-key",
        "media: {port_range",
        "calls: {ring_timeout: 30}\nmedia: {port_range",
        "calls.ring_timeout",
        "unknown key",
        None,
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment", "at"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rule_reports_file_line_and_key(
    old: str, new: str, key: str, fragment: str, at: str | None
) -> None:
    text = edited(old, new)
    message = config_error(text)
    line = line_of(text, at if at is not None else new)
    expected = f"{FILE}:{line}: {key}: "
    matching = [entry for entry in message.splitlines() if entry.startswith(expected)]
    assert matching, f"no line starting {expected!r} in:\n{message}"
    assert any(fragment in entry for entry in matching), message


def test_value_on_its_own_line_is_reported_there() -> None:
    text = edited('    proxy: "sip:127.0.0.1:5090"', '    proxy:\n      "http://itsp"')
    line = line_of(text, '      "http')
    assert config_error(text).startswith(f"{FILE}:{line}: trunks[0].proxy: ")


def test_missing_required_key_points_at_its_mapping() -> None:
    text = edited("    address: 127.0.0.1:5070\n", "")
    message = config_error(text)
    assert (
        message == f"{FILE}:{line_of(text, '  - name: main')}: pbxs[0].address: "
        "required key is missing"
    )


def test_missing_interfaces() -> None:
    assert config_error("node: sbc1\n") == f"{FILE}:1: interfaces: required key is missing"


def test_interfaces_must_not_be_empty() -> None:
    assert (
        config_error("interfaces: {}\n") == f"{FILE}:1: interfaces: define at least one interface"
    )


def test_wildcard_listener_needs_media_address() -> None:
    message = config_error("interfaces:\n  a:\n    listen: [udp:0.0.0.0:5060]\n")
    assert message == (
        f"{FILE}:2: interfaces.a.media_address: "
        "required when the first listener binds the wildcard address 0.0.0.0"
    )


def test_every_error_is_reported_one_per_line_in_file_order() -> None:
    text = edited("timeout: 60", "timeout: -5").replace("level: info", "level: loud")
    with pytest.raises(ConfigError) as info:
        parse_config(text, FILE)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.issues) == 2
    assert lines[0].startswith(f"{FILE}:{line_of(text, 'level: loud')}: log.level: ")
    assert lines[1].startswith(f"{FILE}:{line_of(text, 'timeout: -5')}: media.timeout: ")
    assert [issue.key for issue in info.value.issues] == ["log.level", "media.timeout"]


def test_one_bad_trunk_does_not_cascade_into_its_routes() -> None:
    # The route names a trunk whose interface is wrong: only the interface is reported.
    text = edited("interface: external", "interface: extrenal")
    message = config_error(text)
    assert message.splitlines() == [
        f"{FILE}:{line_of(text, 'interface: extrenal')}: trunks[0].interface: "
        "no interface named 'extrenal' (did you mean 'external'?)"
    ]


# ----------------------------------------------------------------------------- the file itself


def test_yaml_syntax_error_names_file_and_line() -> None:
    text = edited("[udp:127.0.0.1:5080]", "[udp:127.0.0.1:5080}")
    message = config_error(text)
    assert message.startswith(f"{FILE}:{line_of(text, '[udp:127.0.0.1:5080}')}: YAML syntax error")


def test_tab_indentation_is_a_syntax_error_on_its_line() -> None:
    text = edited("    advertise: 127.0.0.1", "\tadvertise: 127.0.0.1")
    assert config_error(text).startswith(f"{FILE}:{line_of(text, chr(9))}: YAML syntax error")


def test_empty_file() -> None:
    assert config_error("") == f"{FILE}:1: the file is empty; at least 'interfaces' is required"


def test_top_level_must_be_a_mapping() -> None:
    assert config_error("- a\n") == f"{FILE}:1: expected a mapping at the top level, got list"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:1: cannot read the file: No such file or directory"


def test_load_config_names_the_path_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "sbc.yaml"
    path.write_text(edited("timeout: 60", "timeout: soon"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = line_of(path.read_text(encoding="utf-8"), "timeout: soon")
    assert str(info.value) == f"{path}:{line}: media.timeout: expected a number, got str"


def test_config_error_from_a_single_message() -> None:
    error = ConfigError(
        "'sip:itsp' has no host:port", filename="a.yaml", line=14, key="trunks[1].proxy"
    )
    assert str(error) == "a.yaml:14: trunks[1].proxy: 'sip:itsp' has no host:port"


def test_shipped_files_spell_out_the_leg_settings() -> None:
    default = load_config(ROOT / "config" / "sbc.yaml")
    assert default.calls.no_answer_timeout == 180.0
    assert default.trunk("itsp-a").session_expires == 1800
    assert default.pbx("main").refer == "relay"
    production = load_config(ROOT / "config" / "examples" / "production.yaml")
    tls, udp = production.trunk("itsp-tls"), production.trunk("itsp-udp")
    assert (tls.transport, udp.transport) == ("tls", "udp")
    assert tls.from_domain == udp.from_domain == "sip.itsp.example.net"
    assert tls.pai == "strip" and tls.refer == "reject"
    assert production.calls.no_answer_timeout == 120.0


# ----------------------------------------------------------------------------- media plane


def test_dtmf_and_srtp_per_side_with_yaml_off_read_as_off() -> None:
    text = edited(
        "    codecs: [PCMU, PCMA, telephone-event]\n",
        "    codecs: [PCMU, PCMA, telephone-event]\n    dtmf: info\n    srtp: required\n",
    ).replace(
        "    trusted_sources: [127.0.0.1/32]\n",
        "    trusted_sources: [127.0.0.1/32]\n    srtp: off\n",
    )
    config = parse_config(text, FILE)
    trunk, pbx = config.trunk("itsp-a"), config.pbx("main")
    assert (trunk.dtmf, trunk.srtp) == ("info", "required")
    assert (pbx.dtmf, pbx.srtp) == ("rfc4733", "off")  # YAML 1.1 reads `off` as false


def test_bad_dtmf_and_srtp_values_name_file_line_and_key() -> None:
    text = edited(
        "    codecs: [PCMU, PCMA, telephone-event]\n",
        "    codecs: [PCMU, PCMA, telephone-event]\n    dtmf: inband\n    srtp: yes\n",
    )
    message = config_error(text)
    assert f"{FILE}:{line_of(text, 'dtmf: inband')}: trunks[0].dtmf:" in message
    assert "'inband' is not one of rfc4733, info" in message
    assert f"{FILE}:{line_of(text, 'srtp: yes')}: trunks[0].srtp:" in message


def test_media_workers_balancing_and_hold_timeout() -> None:
    text = edited(
        "media: {port_range: [20000, 29999], timeout: 60}",
        "media: {port_range: [20000, 29999], timeout: 60, hold_timeout: 0, workers: 3,"
        " balancing: weighted, worker_weights: [2, 1, 0], strict_source: false}",
    )
    media = parse_config(text, FILE).media
    assert (media.workers, media.balancing, media.worker_weights) == (
        3,
        "weighted",
        (2.0, 1.0, 0.0),
    )
    assert media.hold_timeout == 0 and media.strict_source is False
    auto = parse_config(BASE, FILE).media
    assert auto.workers >= 1  # absent: one per core


def test_weighted_balancing_needs_one_weight_per_worker() -> None:
    text = edited(
        "media: {port_range: [20000, 29999], timeout: 60}",
        "media: {port_range: [20000, 29999], timeout: 60, workers: 2, balancing: weighted,"
        " worker_weights: [1]}",
    )
    message = config_error(text)
    assert (
        "media.balancing: weighted needs worker_weights with one weight per worker (2), got 1"
        in message
    )


# ----------------------------------------------------------------------------- secrets


def _with_credentials(fragment: str) -> str:
    return edited(
        "    codecs: [PCMU, PCMA, telephone-event]\n",
        "    codecs: [PCMU, PCMA, telephone-event]\n"
        f"    credentials: {{username: alice, {fragment}}}\n",
    )


def test_trunk_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "itsp.secret").write_text("from-file\n")
    monkeypatch.setenv("SBC_TEST_ITSP_PASSWORD", "from-env")
    config_file = tmp_path / "sbc.yaml"
    config_file.write_text(_with_credentials("password_file: itsp.secret"))
    creds = load_config(config_file).trunk("itsp-a").credentials
    assert creds is not None and creds.password == "from-file"  # relative to the file
    config_file.write_text(_with_credentials("password_env: SBC_TEST_ITSP_PASSWORD"))
    creds = load_config(config_file).trunk("itsp-a").credentials
    assert creds is not None and creds.password == "from-env"
    assert "from-env" not in repr(creds)


def test_secret_problems_are_named_without_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SBC_TEST_MISSING", raising=False)
    message = config_error(_with_credentials("password_env: SBC_TEST_MISSING"))
    assert "trunks[0].credentials.password_env: environment variable SBC_TEST_MISSING" in message
    message = config_error(_with_credentials("password: a, password_file: /x"))
    assert "give one of password, password_file, password_env" in message
    message = config_error(_with_credentials("password_file: /nonexistent/secret"))
    assert "cannot read /nonexistent/secret" in message


def test_operations_sections_are_validated_with_file_line_and_key() -> None:
    text = BASE + "metrics: {listen: nowhere}\ncapture: {hep: 'homer.example:9060'}\n"
    message = config_error(text)
    assert f"{FILE}:{line_of(text, 'metrics:')}: metrics.listen:" in message
    assert "capture.hep: homer.example is not an IP address" in message
    ok = parse_config(BASE + "api: {listen: '127.0.0.1:8080', token_file: api.token}\n", FILE)
    assert ok.api.listen is not None and ok.api.token_file.endswith("api.token")
    missing = config_error(BASE + "api: {listen: '127.0.0.1:8080'}\n")
    assert "api.token_file: required with listen" in missing
