"""The SBC configuration: one YAML file parsed once into frozen dataclasses and validated.

Every problem found is reported together, each as `file:line: key: message`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import yaml

from sbc.policy.guard import (
    AuthLockoutSettings,
    FloodSettings,
    GuardSettings,
    ScannerSettings,
)
from sbc.policy.settings import (
    AdmissionSettings,
    DialRule,
    FraudSettings,
    Limit,
    PolicySettings,
    TimeWindow,
)
from sbc.transport.limits import TransportLimits

__all__ = [
    "CallSettings",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "InboundRoute",
    "Interface",
    "ListenAddress",
    "LogSettings",
    "MediaSettings",
    "NumberRule",
    "NumberRules",
    "OutboundRoute",
    "Pbx",
    "ProxyUri",
    "Routes",
    "SipSettings",
    "SocketAddress",
    "TlsSettings",
    "Trunk",
    "load_config",
    "parse_config",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TRANSPORTS = ("udp", "tcp", "tls")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("kv", "json")
PAI_MODES = ("pass", "strip")
REFER_MODES = ("reject", "relay")
DTMF_MODES = ("rfc4733", "info")
SRTP_POLICIES = (
    "off",
    "optional",
    "required",
)  # SDES-SRTP toward a side (RFC 4568)  # telephone-event in RTP, or SIP INFO (application/dtmf-relay)
# RFC 4028 §5: a Min-SE below 90 seconds is not allowed.
MIN_SESSION_INTERVAL = 90
DEFAULT_NODE = "sbc1"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file."""

    filename: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `str()` lists every problem, one per line."""

    def __init__(
        self,
        issues: str | Sequence[ConfigIssue],
        *,
        filename: str = "",
        line: int = 0,
        key: str = "",
    ) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(filename, line, key, issues)]
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A local socket to listen on, written `transport:host:port` (IPv6 host in brackets)."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """A remote `host:port`; the host is an IP address or a DNS name."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: str
    key: str
    ca: str | None = None
    verify_peer: bool = False


@dataclass(frozen=True, slots=True)
class Interface:
    """A named side of the SBC (e.g. 'internal' toward the PBX, 'external' toward trunks)."""

    name: str
    listen: tuple[ListenAddress, ...]
    advertise: str | None
    media_address: str
    tls: TlsSettings | None = None
    # False: a request from a source that is neither a trunk address nor a trusted PBX
    # network gets no answer at all (scanners learn nothing); True: the usual 403.
    respond_to_unknown: bool = True


@dataclass(frozen=True, slots=True)
class SipSettings:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65535
    user_agent: str | None = None
    # Server transactions one source address may hold at once; more get 503 (no state).
    max_transactions_per_source: int = 1000


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: str = "kv"


@dataclass(frozen=True, slots=True)
class PbxAuth:
    """Digest users a PBX (or its phones) may prove themselves with instead of, or besides,
    coming from a trusted source (RFC 3261 §22)."""

    realm: str
    users: tuple[tuple[str, str], ...]  # (username, password)
    # Offered strongest first (RFC 8760 §2.4); some PBXs (and SIPp) only answer MD5 and take
    # the first challenge whatever it is: list just MD5 for those.
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")

    def password(self, username: str) -> str | None:
        for name, password in self.users:
            if name == username:
                return password
        return None

    def __repr__(self) -> str:  # never print passwords
        names = ", ".join(name for name, _ in self.users)
        return f"PbxAuth(realm={self.realm!r}, users=[{names}])"


@dataclass(frozen=True, slots=True)
class Pbx:
    """A PBX the SBC serves. The settings after `trusted_sources` shape the leg facing it."""

    name: str
    interface: str
    address: SocketAddress
    trusted_sources: tuple[IPNetwork, ...] = ()
    transport: str = "udp"
    headers: tuple[str, ...] = ()  # lower-case names of extra headers that may cross to it
    pai: str = "pass"  # P-Asserted-Identity toward the PBX (RFC 3325): trusted side
    refer: str = "relay"
    user_agent: str | None = None  # None: sip.user_agent
    session_expires: int = 0  # PBXs refresh their own sessions
    min_se: int = MIN_SESSION_INTERVAL
    supports_100rel: bool = True
    dtmf: str = "rfc4733"  # how the PBX signals DTMF: 'rfc4733' (RTP) or 'info' (SIP INFO)
    srtp: str = "off"  # SDES-SRTP toward the PBX: off | optional | required
    auth: PbxAuth | None = None  # digest users; None: trusted_sources only


@dataclass(frozen=True, slots=True)
class ProxyUri:
    """A trunk's outbound proxy: a sip:/sips: URI reduced to where requests are sent."""

    uri: str
    scheme: str
    host: str
    port: int
    transport: str | None = None
    explicit_port: bool = True  # the URI names a port: no SRV lookup (RFC 3263 §4.2)

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class TrunkCredentials:
    """What the SBC answers the trunk's digest challenges with (RFC 3261 §22.2)."""

    username: str
    password: str
    auth_username: str | None = None  # the digest username when it differs from the AoR user
    realm: str | None = None  # answer only challenges of this realm; None: any

    @property
    def digest_username(self) -> str:
        return self.auth_username or self.username

    def __repr__(self) -> str:  # never print the password
        return (
            f"TrunkCredentials(username={self.username!r}, auth_username="
            f"{self.auth_username!r}, realm={self.realm!r}, password='***')"
        )


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """One REGISTER binding a trunk keeps up (RFC 3261 §10): AoR user@domain at the registrar,
    answered with the trunk's credentials."""

    user: str  # AoR user part, e.g. the main number
    domain: str | None = None  # AoR domain; None: the trunk proxy's host
    registrar: str | None = None  # Request-URI; None: sip:<domain>
    expires: int = 3600


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """OPTIONS health probing of a trunk's gateway."""

    interval: float = 30.0
    up_after: int = 2  # successes in a row that mark a down trunk up
    down_after: int = 3  # failures (timeouts, 408, 503) in a row that mark it down


@dataclass(frozen=True, slots=True)
class Trunk:
    """An ITSP gateway. The settings after `codecs` shape the leg facing it."""

    name: str
    interface: str
    proxy: ProxyUri
    codecs: tuple[str, ...] = ()
    transport: str = "udp"  # the parser derives it from the proxy URI when not given
    headers: tuple[str, ...] = ()  # lower-case names of extra headers that may cross to it
    pai: str = "strip"  # P-Asserted-Identity toward the ITSP (RFC 3325): untrusted side
    refer: str = "reject"
    user_agent: str | None = None  # None: sip.user_agent
    session_expires: int = 1800
    min_se: int = MIN_SESSION_INTERVAL
    supports_100rel: bool = True
    dtmf: str = "rfc4733"  # how the carrier signals DTMF: 'rfc4733' (RTP) or 'info' (SIP INFO)
    srtp: str = "off"  # SDES-SRTP toward the carrier: off | optional | required
    from_domain: str | None = None  # host of From/To toward the trunk; None: see sbc.routing
    credentials: TrunkCredentials | None = None  # None: challenges from it fail the call
    setup_timeout: float = 0  # s without a final answer before trying the next trunk; 0: off
    fail_on_6xx: bool = False  # a 6xx counts as a trunk failure (next trunk) rather than an answer
    weight: float = 1.0  # share of calls under the `weighted` strategy (0: standby only)
    max_calls: int | None = None  # concurrent calls at most; None: no cap
    probe: ProbeConfig | None = None  # None: not probed (always considered up)
    registrations: tuple[RegistrationConfig, ...] = ()
    caller_id: str | None = None  # number shown toward this trunk (From user); None: caller's
    # The dialled number as this carrier wants it (e.g. E.164 to national), after the global
    # outbound rules; the first matching rule applies.
    numbers: tuple[NumberRule, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """Calls from the PBX whose dialled user part matches go to these trunks, in order."""

    match: re.Pattern[str]
    trunks: tuple[str, ...]
    strategy: str = "priority"  # priority | weighted | round_robin | least_calls


@dataclass(frozen=True, slots=True)
class InboundRoute:
    """Calls from a trunk whose dialled user part matches go to this PBX."""

    match: re.Pattern[str]
    pbx: str


@dataclass(frozen=True, slots=True)
class Routes:
    outbound: tuple[OutboundRoute, ...] = ()
    inbound: tuple[InboundRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class NumberRule:
    """Rewrite a number matching `match` to `match.sub(replace, number)`."""

    match: re.Pattern[str]
    replace: str

    def apply(self, number: str) -> str | None:
        """The rewritten number, or None when this rule does not match."""
        if self.match.search(number) is None:
            return None
        return self.match.sub(self.replace, number, count=1)


@dataclass(frozen=True, slots=True)
class NumberRules:
    outbound: tuple[NumberRule, ...] = ()
    inbound: tuple[NumberRule, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaSettings:
    port_range: tuple[int, int] = (20000, 29999)
    timeout: float = 60.0
    # The no-media limit for streams on hold (a side sent sendonly/recvonly/inactive): many
    # PBXs play no music on hold. 0: no limit (session timers still end dead calls).
    hold_timeout: float = 3600.0
    # Once latched, drop packets from any other source (TRAPS #8); false follows a source
    # that moves without a re-INVITE (some NATs rebind mid-call).
    strict_source: bool = True
    # Relay processes, each with a slice of port_range; 0 relays in the signalling process
    # (development, tiny installs). 'auto' in the file means one per CPU core.
    workers: int = 0
    balancing: str = "least_streams"  # which worker takes a new call
    worker_weights: tuple[float, ...] = ()  # for balancing: weighted, one per worker


@dataclass(frozen=True, slots=True)
class CdrSettings:
    """Call detail records in SQLite (WAL) or PostgreSQL, written in batches off the call
    path. At most one of `path` and `dsn`."""

    path: str | None = None  # SQLite file; relative paths are from the config file
    # PostgreSQL, e.g. postgresql://sbc@db.example/cdr; the password comes from PGPASSWORD or
    # ~/.pgpass (PGPASSFILE), not from this file. Neither path nor dsn: no CDRs.
    dsn: str | None = None
    batch_size: int = 100
    flush_interval: float = 0.5  # s
    max_queue: int = 100_000  # records waiting for the disk before new ones are dropped
    rejected: bool = True  # also a record for each call refused by routing or policy


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The management API (HTTP/JSON with a bearer token; docs/api.yaml)."""

    listen: SocketAddress | None = None  # None: no API
    token_file: str = ""  # the bearer token's file (required with listen)
    read_timeout: float = 5.0
    # HTTPS with this certificate and key; with verify_peer, clients must show a
    # certificate signed by `ca` as well as the token. None: plain HTTP (loopback only).
    tls: TlsSettings | None = None


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """Copies of every SIP message: to a Homer/sngrep HEP v3 collector, and/or as a ladder
    per call on stderr (`sbc run --trace`)."""

    hep: SocketAddress | None = None  # the collector (an IP literal: no DNS per message)
    hep_id: int = 2001  # capture agent id, to tell several SBCs apart in Homer
    hep_password: str | None = None
    trace: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics over HTTP (/metrics)."""

    listen: SocketAddress | None = None  # None: not served; never a wildcard by default


@dataclass(frozen=True, slots=True)
class CallSettings:
    no_answer_timeout: float = 180.0  # seconds from INVITE to a final answer
    # On SIGTERM: refuse new calls (503) and let live ones end by themselves for up to this
    # long before hanging up the rest (BYE both ways, CDRs written). 0: hang up at once.
    drain_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """How trunk host names are resolved (RFC 3263: SRV, then A/AAAA)."""

    nameservers: tuple[tuple[str, int], ...] = ()  # (): the system's (/etc/resolv.conf)
    refresh: float = 300.0  # s between re-resolutions (carriers move gateways)


@dataclass(frozen=True, slots=True)
class Config:
    interfaces: dict[str, Interface]
    node: str = DEFAULT_NODE
    log: LogSettings = field(default_factory=LogSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    pbxs: tuple[Pbx, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    routes: Routes = field(default_factory=Routes)
    numbers: NumberRules = field(default_factory=NumberRules)
    media: MediaSettings = field(default_factory=MediaSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    connections: TransportLimits = field(default_factory=TransportLimits)
    cdr: CdrSettings = field(default_factory=CdrSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    api: ApiConfig = field(default_factory=ApiConfig)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    source: str = ""

    def pbx(self, name: str) -> Pbx:
        for pbx in self.pbxs:
            if pbx.name == name:
                return pbx
        raise KeyError(f"no pbx named '{name}'")

    def trunk(self, name: str) -> Trunk:
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        raise KeyError(f"no trunk named '{name}'")


# --------------------------------------------------------------------------- YAML with lines


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the 1-based line of itself and of each key's value."""

    line: int
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]


class _Seq(list[Any]):
    """A YAML sequence that remembers the 1-based line of itself and of each item."""

    line: int
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences record where their parts are."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, str]] = []


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    data = _Map()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.value_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in data:
            # YAML forbids duplicate keys (YAML 1.2 §3.2.1.1) but PyYAML keeps the last one
            # silently; a second 'trunks:' block would otherwise vanish without a word.
            loader.duplicate_keys.append((key_node.start_mark.line + 1, str(key)))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1
        data.value_lines[key] = value_node.start_mark.line + 1
    return data


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    data = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    return data


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# --------------------------------------------------------------------------- validation helpers


class _Invalid(Exception):
    """Raised by a field check after its issue was recorded: stop checking that field."""


T = TypeVar("T")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?\Z"
)
_TYPE_NAMES = {dict: "mapping", _Map: "mapping", list: "list", _Seq: "list", type(None): "null"}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _hint(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    """Collects issues for one file; readers below report through it."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.issues: list[ConfigIssue] = []

    def add(self, line: int, key: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.filename, line, key, message))

    def fail(self, line: int, key: str, message: str) -> NoReturn:
        self.add(line, key, message)
        raise _Invalid


class _Node:
    """A value from the file together with its dotted key path and line."""

    __slots__ = ("checker", "value", "path", "line")

    def __init__(self, checker: _Checker, value: Any, path: str, line: int) -> None:
        self.checker = checker
        self.value = value
        self.path = path
        self.line = line

    def fail(self, message: str) -> NoReturn:
        self.checker.fail(self.line, self.path, message)

    def error(self, message: str) -> None:
        self.checker.add(self.line, self.path, message)

    # -- scalars

    def string(self) -> str:
        if not isinstance(self.value, str):
            self.fail(f"expected a string, got {_type_name(self.value)}")
        if not self.value.strip():
            self.fail("must not be empty")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail(f"expected true or false, got {_type_name(self.value)}")
        return self.value

    def integer(self, low: int, high: int | None = None) -> int:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected an integer, got {_type_name(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(f"{value} is out of range: must be {bound}")
        return value

    def positive_number(self) -> float:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"expected a number, got {_type_name(value)}")
        if not value > 0 or value == float("inf"):
            self.fail(f"must be a positive number, got {value}")
        return float(value)

    def choice(self, choices: Sequence[str]) -> str:
        value = self.string()
        if value not in choices:
            self.fail(f"'{value}' is not one of {', '.join(choices)}{_hint(value, choices)}")
        return value

    def name(self) -> str:
        value = self.string()
        if not _NAME_RE.match(value):
            self.fail(f"'{value}' is not a valid name (letters, digits, '_', '.', '-')")
        return value

    def ip_address(self) -> str:
        value = self.string()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.fail(f"'{value}' is not an IP address")

    def regex(self) -> re.Pattern[str]:
        value = self.string()
        try:
            return re.compile(value)
        except re.error as exc:
            self.fail(f"bad regular expression '{value}': {exc}")

    # -- containers

    def items(self) -> Iterator[_Node]:
        """The nodes of a list (an error and no items when the value is not a list)."""
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_type_name(self.value)}")
        lines = getattr(self.value, "item_lines", None)
        for index, item in enumerate(self.value):
            line = lines[index] if lines else self.line
            yield _Node(self.checker, item, f"{self.path}[{index}]", line)

    def mapping(self, allowed: Sequence[str] | None) -> _Section:
        """This value as a mapping; keys outside `allowed` are reported (None: any key)."""
        if not isinstance(self.value, dict):
            self.fail(f"expected a mapping, got {_type_name(self.value)}")
        section = _Section(self.checker, self.value, self.path, self.line)
        if allowed is not None:
            section.reject_unknown(allowed)
        return section


class _Section:
    """A mapping from the file; hands out its values as `_Node`s with their own lines."""

    def __init__(self, checker: _Checker, data: dict[Any, Any], path: str, line: int) -> None:
        self.checker = checker
        self.data = data
        self.path = path
        self.line = line
        self._key_lines: dict[Any, int] = getattr(data, "key_lines", {})
        self._value_lines: dict[Any, int] = getattr(data, "value_lines", {})

    def key_path(self, key: object) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def reject_unknown(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                line = self._key_lines.get(key, self.line)
                hint = _hint(key, allowed) if isinstance(key, str) else ""
                self.checker.add(line, self.key_path(key), f"unknown key{hint}")

    def has(self, key: str) -> bool:
        return key in self.data

    def node(self, key: object) -> _Node:
        """The value at `key`; a missing key is reported against the mapping's line."""
        if key not in self.data:
            self.checker.fail(self.line, self.key_path(key), "required key is missing")
        value = self.data[key]
        # A block list or mapping starts on the line after its key: point at the key.
        lines = self._key_lines if isinstance(value, dict | list) else self._value_lines
        return _Node(self.checker, value, self.key_path(key), lines.get(key, self.line))

    def get(self, key: str, read: Callable[[_Node], T], default: T) -> T:
        """`read(node)` for a present, non-null key, else `default`; `default` on error."""
        if self.data.get(key) is None:
            return default
        try:
            return read(self.node(key))
        except _Invalid:
            return default


def _section(node: _Node, allowed: Sequence[str] | None) -> _Section | None:
    """The mapping at `node` (None, with the issue recorded, when it is not a mapping)."""
    try:
        return node.mapping(allowed)
    except _Invalid:
        return None


def _optional_section(parent: _Section, key: str, allowed: Sequence[str]) -> _Section | None:
    if parent.data.get(key) is None:
        return _Section(parent.checker, {}, parent.key_path(key), parent.line)
    return _section(parent.node(key), allowed)


def _items(node: _Node) -> list[_Node]:
    try:
        return list(node.items())
    except _Invalid:
        return []


# --------------------------------------------------------------------------- address parsing


def _split_host_port(text: str) -> tuple[str, str | None]:
    """'h:p' / '[v6]:p' / 'h' / '[v6]' -> (host, port text or None); ValueError if malformed."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected '{rest}' after ']'")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        raise ValueError("an IPv6 address must be written in brackets, e.g. [::1]:5060")
    host, sep, port = text.partition(":")
    return host, port if sep else None


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port '{text}' is not a number from 1 to 65535")
    return int(text)


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME_RE.match(host)) and not host.replace(".", "").isdigit()
    return True


def _listen_address(node: _Node) -> ListenAddress:
    text = node.string()
    transport, sep, rest = text.partition(":")
    if not sep:
        node.fail(f"'{text}' is not transport:host:port (e.g. udp:127.0.0.1:5060)")
    if transport not in TRANSPORTS:
        node.fail(
            f"'{text}': transport '{transport}' is not one of {', '.join(TRANSPORTS)}"
            f"{_hint(transport, TRANSPORTS)}"
        )
    try:
        host, port = _split_host_port(rest)
        if port is None:
            raise ValueError("has no port")
        port_number = _parse_port(port)
    except ValueError as exc:
        node.fail(f"'{text}': {exc}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        node.fail(f"'{text}': host '{host}' is not an IP address")
    return ListenAddress(transport, str(address), port_number)


def _socket_address(node: _Node) -> SocketAddress:
    text = node.string()
    try:
        host, port = _split_host_port(text)
        if port is None:
            raise ValueError("has no port")
        port_number = _parse_port(port)
    except ValueError as exc:
        node.fail(f"'{text}': {exc} (expected host:port)")
    if not _is_host(host):
        node.fail(f"'{text}': '{host}' is neither an IP address nor a host name")
    return SocketAddress(host, port_number)


_SIP_URI_RE = re.compile(r"(?P<scheme>sips?):(?:[^@;?]*@)?(?P<hostport>[^;?]*)(?P<params>[^?]*)")


def _proxy_uri(node: _Node) -> ProxyUri:
    text = node.string().strip()
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        node.fail(f"'{text}' is not a sip: or sips: URI")
    scheme = match["scheme"]
    try:
        host, port = _split_host_port(match["hostport"])
    except ValueError as exc:
        node.fail(f"'{text}' has a malformed host:port: {exc}")
    if not host:
        node.fail(f"'{text}' has no host")
    if not _is_host(host):
        node.fail(f"'{text}': '{host}' is neither an IP address nor a host name")
    try:
        # RFC 3261 §19.1.2: the default port is 5060 for sip: and 5061 for sips:.
        port_number = (
            _parse_port(port) if port is not None else (5061 if scheme == "sips" else 5060)
        )
    except ValueError as exc:
        node.fail(f"'{text}': {exc}")
    transport = None
    for param in match["params"].split(";")[1:]:
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            transport = value.lower()
            if transport not in TRANSPORTS:
                node.fail(f"'{text}': transport '{value}' is not one of {', '.join(TRANSPORTS)}")
    if scheme == "sips" and transport not in (None, "tls"):
        node.fail(f"'{text}': a sips: URI needs TLS, not transport={transport}")
    return ProxyUri(text, scheme, host, port_number, transport, explicit_port=port is not None)


def _network(node: _Node) -> IPNetwork:
    text = node.string()
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        # ipaddress repeats the input in its generic message; keep only the specific ones.
        detail = "" if "does not appear" in str(exc) else f" ({exc})"
        node.fail(f"'{text}' is not a CIDR network{detail}")


# --------------------------------------------------------------------------- sections

_TOP_KEYS = (
    "node",
    "log",
    "sip",
    "interfaces",
    "pbxs",
    "trunks",
    "routes",
    "numbers",
    "media",
    "calls",
    "dns",
    "admission",
    "fraud",
    "security",
    "connections",
    "cdr",
    "metrics",
    "api",
    "capture",
)
_IFACE_KEYS = ("listen", "advertise", "media_address", "tls", "respond_to_unknown")
_TLS_KEYS = ("cert", "key", "ca", "verify_peer")
_LEG_KEYS = (
    "transport",
    "headers",
    "pai",
    "refer",
    "user_agent",
    "session_expires",
    "min_se",
    "100rel",
    "dtmf",
    "srtp",
)
_PBX_KEYS = ("name", "interface", "address", "trusted_sources", *_LEG_KEYS, "auth")
_TRUNK_KEYS = (
    "name",
    "interface",
    "proxy",
    "codecs",
    *_LEG_KEYS,
    "from_domain",
    "credentials",
    "setup_timeout",
    "fail_on_6xx",
    "weight",
    "max_calls",
    "probe",
    "registrations",
    "caller_id",
    "numbers",
)
_REGISTRATION_KEYS = ("user", "domain", "registrar", "expires")
_PROBE_KEYS = ("interval", "up_after", "down_after")
STRATEGIES = ("priority", "weighted", "round_robin", "least_calls")
_CREDENTIAL_KEYS = (
    "username",
    "password",
    "password_file",
    "password_env",
    "auth_username",
    "realm",
)
_SECRET_KEYS = ("password", "password_file", "password_env")


def _read_log(top: _Section) -> LogSettings:
    section = _optional_section(top, "log", ("level", "format"))
    if section is None:
        return LogSettings()
    return LogSettings(
        level=section.get("level", lambda n: n.choice(LOG_LEVELS), "info"),
        format=section.get("format", lambda n: n.choice(LOG_FORMATS), "kv"),
    )


def _read_sip(top: _Section) -> SipSettings:
    keys = ("t1", "t2", "t4", "max_message_size", "user_agent", "max_transactions_per_source")
    section = _optional_section(top, "sip", keys)
    if section is None:
        return SipSettings()
    defaults = SipSettings()
    sip = SipSettings(
        t1=section.get("t1", _Node.positive_number, defaults.t1),
        t2=section.get("t2", _Node.positive_number, defaults.t2),
        t4=section.get("t4", _Node.positive_number, defaults.t4),
        max_message_size=section.get(
            "max_message_size", lambda n: n.integer(1), defaults.max_message_size
        ),
        user_agent=section.get("user_agent", _Node.string, None),
        max_transactions_per_source=section.get(
            "max_transactions_per_source",
            lambda n: n.integer(1),
            defaults.max_transactions_per_source,
        ),
    )
    if sip.t2 < sip.t1 and section.has("t2"):
        # RFC 3261 §17.1.2.2: T2 caps the retransmit interval that starts at T1.
        section.node("t2").error(f"must not be smaller than t1 ({sip.t1})")
    return sip


def _read_tls(node: _Node, base_dir: str) -> TlsSettings | None:
    section = _section(node, _TLS_KEYS)
    if section is None:
        return None

    def path(n: _Node) -> str:
        return os.path.join(base_dir, n.string())

    try:
        cert = path(section.node("cert"))
    except _Invalid:
        cert = ""
    try:
        key = path(section.node("key"))
    except _Invalid:
        key = ""
    return TlsSettings(
        cert=cert,
        key=key,
        ca=section.get("ca", path, None),
        verify_peer=section.get("verify_peer", _Node.boolean, False),
    )


def _read_listen(
    node: _Node, claimed: list[tuple[ListenAddress, str]]
) -> tuple[ListenAddress, ...]:
    listen: list[ListenAddress] = []
    for item in _items(node):
        try:
            address = _listen_address(item)
        except _Invalid:
            continue
        for other, owner in claimed:
            if _listeners_clash(address, other):
                item.error(f"{address} clashes with {other} in {owner}")
                break
        else:
            claimed.append((address, item.path))
            listen.append(address)
    if isinstance(node.value, list) and not node.value:
        node.error("needs at least one transport:host:port")
    return tuple(listen)


def _listeners_clash(a: ListenAddress, b: ListenAddress) -> bool:
    """Whether two listeners cannot both bind: same port and protocol, same or wildcard host."""
    # TLS runs over TCP, so tcp and tls listeners compete for the same ports.
    if a.port != b.port or (a.transport == "udp") != (b.transport == "udp"):
        return False
    if a.host == b.host:
        return True
    ip_a, ip_b = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    return ip_a.version == ip_b.version and (ip_a.is_unspecified or ip_b.is_unspecified)


def _read_interface(
    name: str, node: _Node, base_dir: str, claimed: list[tuple[ListenAddress, str]]
) -> Interface | None:
    section = _section(node, _IFACE_KEYS)
    if section is None:
        return None
    try:
        listen = _read_listen(section.node("listen"), claimed)
    except _Invalid:
        listen = ()
    advertise = section.get("advertise", _Node.ip_address, None)
    media_address = section.get("media_address", _Node.ip_address, "")
    if not section.has("media_address") and listen:
        media_address = listen[0].host
        if ipaddress.ip_address(media_address).is_unspecified:
            section.checker.add(
                section.line,
                section.key_path("media_address"),
                f"required when the first listener binds the wildcard address {media_address}",
            )
    tls = None
    if section.data.get("tls") is not None:
        tls = _read_tls(section.node("tls"), base_dir)
    elif any(address.transport == "tls" for address in listen):
        section.checker.add(
            section.line,
            section.key_path("tls"),
            "required because a tls: listener is configured (give cert and key)",
        )
    respond = section.get("respond_to_unknown", _Node.boolean, True)
    return Interface(name, listen, advertise, media_address, tls, respond)


def _read_interfaces(top: _Section, base_dir: str) -> dict[str, Interface]:
    interfaces: dict[str, Interface] = {}
    try:
        section = top.node("interfaces").mapping(None)
    except _Invalid:
        return interfaces
    if not section.data:
        section.checker.add(section.line, "interfaces", "define at least one interface")
    claimed: list[tuple[ListenAddress, str]] = []
    for key in section.data:
        node = section.node(key)
        if not isinstance(key, str) or not _NAME_RE.match(key):
            node.error(f"'{key}' is not a valid interface name (letters, digits, '_', '.', '-')")
            continue
        interface = _read_interface(key, node, base_dir, claimed)
        if interface is not None:
            interfaces[key] = interface
    return interfaces


def _line_of(top: _Section, path: Sequence[str | int]) -> int:
    """The line of the key (or list item) at the end of a path (or the closest known)."""
    value: Any = top.data
    line = top.line
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and 0 <= step < len(value):
            lines = getattr(value, "item_lines", None)
            line = lines[step] if lines else line
            value = value[step]
            continue
        if not isinstance(value, dict) or step not in value:
            break
        line = getattr(value, "key_lines", {}).get(step, line)
        value = value[step]
    return line


def _check_interface_ref(section: _Section, interfaces: dict[str, Interface]) -> str:
    node = section.node("interface")
    name = node.string()
    if name not in interfaces:
        known = sorted(interfaces)
        node.fail(f"no interface named '{name}'{_hint(name, known)}")
    return name


def _unique(node: _Node, name: str, seen: dict[str, str], what: str) -> None:
    if name in seen:
        node.error(f"duplicate {what} name '{name}' (first defined at {seen[name]})")
    else:
        seen[name] = node.path


def _read_pbxs(
    top: _Section, interfaces: dict[str, Interface], names: dict[str, str]
) -> tuple[Pbx, ...]:
    """The valid PBX entries; `names` receives every well-formed name, valid entry or not."""
    if top.data.get("pbxs") is None:
        return ()
    pbxs: list[Pbx] = []
    for item in _items(top.node("pbxs")):
        section = _section(item, _PBX_KEYS)
        if section is None:
            continue
        try:
            name_node = section.node("name")
            name = name_node.name()
            _unique(name_node, name, names, "pbx")
        except _Invalid:
            name = ""
        try:
            interface = _check_interface_ref(section, interfaces)
        except _Invalid:
            interface = ""
        try:
            address = _socket_address(section.node("address"))
        except _Invalid:
            address = None
        trusted: list[IPNetwork] = []
        if section.data.get("trusted_sources") is not None:
            for source in _items(section.node("trusted_sources")):
                try:
                    trusted.append(_network(source))
                except _Invalid:
                    pass
        leg = _read_leg(section, _PBX_LEG_DEFAULTS)
        if name and interface and address is not None:
            pbxs.append(
                Pbx(
                    name,
                    interface,
                    address,
                    tuple(trusted),
                    transport=section.get("transport", _transport, "udp"),
                    headers=leg.headers,
                    pai=leg.pai,
                    refer=leg.refer,
                    user_agent=leg.user_agent,
                    session_expires=leg.session_expires,
                    min_se=leg.min_se,
                    supports_100rel=leg.supports_100rel,
                    dtmf=leg.dtmf,
                    srtp=leg.srtp,
                    auth=_read_pbx_auth(section),
                )
            )
    return tuple(pbxs)


def _read_pbx_auth(pbx: _Section) -> PbxAuth | None:
    if pbx.data.get("auth") is None:
        return None
    section = _section(pbx.node("auth"), ("realm", "users", "algorithms"))
    if section is None:
        return None
    try:
        realm = section.node("realm").string()
        users_node = section.node("users")
        users_section = users_node.mapping(None)
    except _Invalid:
        return None
    users: list[tuple[str, str]] = []
    for name in users_section.data:
        try:
            users.append((str(name), _read_user_secret(users_section.node(name))))
        except _Invalid:
            pass
    if not users:
        users_node.error("name at least one user: {username: password}")
        return None
    default: tuple[str, ...] = ("SHA-256", "MD5")
    algorithms = section.get("algorithms", _read_algorithms, default)
    return PbxAuth(realm, tuple(users), algorithms)


def _read_user_secret(node: _Node) -> str:
    """A PBX user's password: a string, or {password_file: ...} / {password_env: ...}."""
    if isinstance(node.value, str):
        return node.string()
    section = node.mapping(_SECRET_KEYS)
    return _read_secret(section)


def _read_algorithms(node: _Node) -> tuple[str, ...]:
    names = tuple(item.choice(("SHA-512-256", "SHA-256", "MD5")) for item in _items(node))
    if not names:
        node.fail("name at least one of SHA-512-256, SHA-256, MD5")
    return names


def _read_codecs(node: _Node) -> tuple[str, ...]:
    codecs: list[str] = []
    for item in _items(node):
        try:
            codec = item.string()
        except _Invalid:
            continue
        if any(ch.isspace() for ch in codec):
            item.error(f"'{codec}' is not a codec name (e.g. PCMU, PCMA, telephone-event)")
        else:
            codecs.append(codec)
    return tuple(codecs)


def _read_trunks(
    top: _Section, interfaces: dict[str, Interface], names: dict[str, str]
) -> tuple[Trunk, ...]:
    """The valid trunk entries; `names` receives every well-formed name, valid entry or not."""
    if top.data.get("trunks") is None:
        return ()
    trunks: list[Trunk] = []
    for item in _items(top.node("trunks")):
        section = _section(item, _TRUNK_KEYS)
        if section is None:
            continue
        try:
            name_node = section.node("name")
            name = name_node.name()
            _unique(name_node, name, names, "trunk")
        except _Invalid:
            name = ""
        try:
            interface = _check_interface_ref(section, interfaces)
        except _Invalid:
            interface = ""
        try:
            proxy = _proxy_uri(section.node("proxy"))
        except _Invalid:
            proxy = None
        codecs: tuple[str, ...] = section.get("codecs", _read_codecs, ())
        leg = _read_leg(section, _TRUNK_LEG_DEFAULTS)
        transport = _trunk_transport(section, proxy)
        from_domain = section.get("from_domain", _host, None)
        credentials = _read_credentials(section)
        setup_timeout = section.get("setup_timeout", _Node.positive_number, 0.0)
        fail_on_6xx = section.get("fail_on_6xx", _Node.boolean, False)
        weight = section.get("weight", lambda n: float(n.integer(0, 1000)), 1.0)
        max_calls = section.get("max_calls", lambda n: n.integer(1), None)
        probe = _read_probe(section)
        registrations = _read_registrations(section, credentials)
        caller_id = section.get("caller_id", _Node.string, None)
        no_rules: tuple[NumberRule, ...] = ()
        numbers = section.get("numbers", _read_number_rules, no_rules)
        if name and interface and proxy is not None:
            trunks.append(
                Trunk(
                    name,
                    interface,
                    proxy,
                    codecs,
                    transport=transport,
                    headers=leg.headers,
                    pai=leg.pai,
                    refer=leg.refer,
                    user_agent=leg.user_agent,
                    session_expires=leg.session_expires,
                    min_se=leg.min_se,
                    supports_100rel=leg.supports_100rel,
                    dtmf=leg.dtmf,
                    srtp=leg.srtp,
                    from_domain=from_domain,
                    credentials=credentials,
                    setup_timeout=setup_timeout,
                    fail_on_6xx=fail_on_6xx,
                    weight=weight,
                    max_calls=max_calls,
                    probe=probe,
                    registrations=registrations,
                    caller_id=caller_id,
                    numbers=numbers,
                )
            )
    return tuple(trunks)


def _read_registrations(
    trunk: _Section, credentials: TrunkCredentials | None
) -> tuple[RegistrationConfig, ...]:
    if trunk.data.get("registrations") is None:
        return ()
    node = trunk.node("registrations")
    found: list[RegistrationConfig] = []
    for item in _items(node):
        section = _section(item, _REGISTRATION_KEYS)
        if section is None:
            continue
        try:
            user = section.node("user").string()
        except _Invalid:
            continue
        found.append(
            RegistrationConfig(
                user,
                domain=section.get("domain", _host, None),
                registrar=section.get("registrar", _Node.string, None),
                expires=section.get("expires", lambda n: n.integer(60, 86400), 3600),
            )
        )
    if found and credentials is None:
        node.error("registrations need the trunk's credentials (username and password)")
    return tuple(found)


def _read_probe(trunk: _Section) -> ProbeConfig | None:
    value = trunk.data.get("probe")
    if value is None or value is False:
        return None
    if value is True:
        return ProbeConfig()
    section = _section(trunk.node("probe"), _PROBE_KEYS)
    if section is None:
        return None
    defaults = ProbeConfig()
    return ProbeConfig(
        interval=section.get("interval", _Node.positive_number, defaults.interval),
        up_after=section.get("up_after", lambda n: n.integer(1, 100), defaults.up_after),
        down_after=section.get("down_after", lambda n: n.integer(1, 100), defaults.down_after),
    )


def _base_dir(checker: _Checker) -> str:
    """Relative paths in the file are relative to the file's directory."""
    name = checker.filename
    return os.path.dirname(name) if name and not name.startswith("<") else ""


def _read_secret(section: _Section) -> str:
    """A password written inline (`password`), read from a file (`password_file`: its
    first line, so the secret stays out of the configuration) or from the environment
    (`password_env`: a variable's name). Exactly one of them."""
    given = [key for key in _SECRET_KEYS if section.data.get(key) is not None]
    if len(given) != 1:
        where = " and ".join(given) if given else "none of them"
        section.checker.fail(
            section.line,
            section.path,
            f"give one of password, password_file, password_env ({where} given)",
        )
    key = given[0]
    node = section.node(key)
    if key == "password":
        return node.string()
    if key == "password_env":
        name = node.string()
        value = os.environ.get(name)
        if not value:
            node.fail(f"environment variable {name} is not set or empty")
        return value
    path = os.path.join(_base_dir(section.checker), node.string())
    try:
        with open(path, encoding="utf-8") as stream:
            value = stream.readline().rstrip("\r\n")
    except OSError as exc:
        node.fail(f"cannot read {path}: {exc.strerror or exc}")
    if not value:
        node.fail(f"{path} is empty")
    return value


def _read_credentials(trunk: _Section) -> TrunkCredentials | None:
    if trunk.data.get("credentials") is None:
        return None
    section = _section(trunk.node("credentials"), _CREDENTIAL_KEYS)
    if section is None:
        return None
    try:
        username = section.node("username").string()
        password = _read_secret(section)
    except _Invalid:
        return None
    return TrunkCredentials(
        username,
        password,
        auth_username=section.get("auth_username", _Node.string, None),
        realm=section.get("realm", _Node.string, None),
    )


@dataclass(frozen=True, slots=True)
class _LegSettings:
    """The per-leg keys pbxs and trunks share (their defaults differ per side)."""

    headers: tuple[str, ...] = ()
    pai: str = "pass"
    refer: str = "relay"
    user_agent: str | None = None
    session_expires: int = 0
    min_se: int = MIN_SESSION_INTERVAL
    supports_100rel: bool = True
    dtmf: str = "rfc4733"
    srtp: str = "off"


_PBX_LEG_DEFAULTS = _LegSettings(pai="pass", refer="relay", session_expires=0)
_TRUNK_LEG_DEFAULTS = _LegSettings(pai="strip", refer="reject", session_expires=1800)

_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")  # RFC 3261 §25.1 token
# Headers each leg builds for itself (dialog, transaction, routing, RFC 4028/3262 state) or
# that have their own setting: letting the other leg's copy across would break the leg or
# leak its topology.
_LEG_OWNED_HEADERS = frozenset(
    "via from to call-id cseq contact route record-route max-forwards content-length"
    " content-type session-expires min-se supported require rseq rack".split()
)


def _read_srtp(node: _Node) -> str:
    # YAML 1.1 reads a bare `off` as false: take it for what the user wrote.
    if node.value is False:
        return "off"
    if node.value is True:
        node.fail("write optional or required (true is ambiguous)")
    return node.choice(SRTP_POLICIES)


def _read_leg(section: _Section, defaults: _LegSettings) -> _LegSettings:
    leg = _LegSettings(
        headers=section.get("headers", _read_header_names, defaults.headers),
        pai=section.get("pai", lambda n: n.choice(PAI_MODES), defaults.pai),
        refer=section.get("refer", lambda n: n.choice(REFER_MODES), defaults.refer),
        user_agent=section.get("user_agent", _Node.string, defaults.user_agent),
        session_expires=section.get(
            "session_expires", lambda n: n.integer(0), defaults.session_expires
        ),
        min_se=section.get("min_se", lambda n: n.integer(MIN_SESSION_INTERVAL), defaults.min_se),
        supports_100rel=section.get("100rel", _Node.boolean, defaults.supports_100rel),
        dtmf=section.get("dtmf", lambda n: n.choice(DTMF_MODES), defaults.dtmf),
        srtp=section.get("srtp", _read_srtp, defaults.srtp),
    )
    if 0 < leg.session_expires < leg.min_se and section.has("session_expires"):
        # RFC 4028 §4: a Session-Expires below the Min-SE would only earn a 422.
        section.node("session_expires").error(
            f"must be 0 (no session timer) or at least min_se ({leg.min_se})"
        )
    return leg


def _read_header_names(node: _Node) -> tuple[str, ...]:
    names: list[str] = []
    for item in _items(node):
        try:
            name = item.string().strip()
        except _Invalid:
            continue
        key = name.lower()
        if not _HEADER_NAME_RE.match(name):
            item.error(f"'{name}' is not a header name (e.g. Diversion, X-Account)")
        elif len(key) == 1:
            item.error(f"'{name}' is a compact form: write the full header name")
        elif key == "p-asserted-identity":
            item.error(f"'{name}' has its own setting: use pai: pass")
        elif key in _LEG_OWNED_HEADERS:
            item.error(f"'{name}' is built by the SBC on each leg and cannot be passed across")
        elif key not in names:
            names.append(key)
    return tuple(names)


def _transport(node: _Node) -> str:
    return node.choice(TRANSPORTS)


def _host(node: _Node) -> str:
    value = node.string().strip()
    if not _is_host(value):
        node.fail(f"'{value}' is neither an IP address nor a host name")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _trunk_transport(section: _Section, proxy: ProxyUri | None) -> str:
    """The `transport` key, else what the proxy URI implies (RFC 3261 §19.1.2: sips is TLS)."""
    implied = None
    if proxy is not None:
        implied = proxy.transport or ("tls" if proxy.scheme == "sips" else None)
    if section.data.get("transport") is None:
        return implied or "udp"
    node = section.node("transport")
    try:
        transport = _transport(node)
    except _Invalid:
        return implied or "udp"
    if proxy is not None and implied is not None and transport != implied:
        given = f"transport={implied}" if proxy.transport else "the sips: scheme"
        node.error(f"'{transport}' contradicts {given} in the proxy URI '{proxy}'")
    return transport


def _reference(node: _Node, known: Sequence[str], what: str) -> str:
    name = node.string()
    if name not in known:
        node.fail(f"no {what} named '{name}'{_hint(name, known)}")
    return name


def _read_routes(top: _Section, pbx_names: Sequence[str], trunk_names: Sequence[str]) -> Routes:
    # Names of entries that have other errors still count, so one typo is reported once.
    section = _optional_section(top, "routes", ("outbound", "inbound"))
    if section is None:
        return Routes()
    outbound: list[OutboundRoute] = []
    if section.data.get("outbound") is not None:
        for item in _items(section.node("outbound")):
            route = _section(item, ("match", "trunks", "strategy"))
            if route is None:
                continue
            try:
                match = route.node("match").regex()
            except _Invalid:
                match = None
            names: list[str] = []
            try:
                trunks_node = route.node("trunks")
                for ref in _items(trunks_node):
                    try:
                        names.append(_reference(ref, trunk_names, "trunk"))
                    except _Invalid:
                        pass
                if not trunks_node.value:
                    trunks_node.error("name at least one trunk")
            except _Invalid:
                pass
            strategy = route.get("strategy", lambda n: n.choice(STRATEGIES), "priority")
            if match is not None and names:
                outbound.append(OutboundRoute(match, tuple(names), strategy))
    inbound: list[InboundRoute] = []
    if section.data.get("inbound") is not None:
        for item in _items(section.node("inbound")):
            route = _section(item, ("match", "pbx"))
            if route is None:
                continue
            try:
                match = route.node("match").regex()
            except _Invalid:
                match = None
            try:
                pbx = _reference(route.node("pbx"), pbx_names, "pbx")
            except _Invalid:
                continue
            if match is not None:
                inbound.append(InboundRoute(match, pbx))
    return Routes(tuple(outbound), tuple(inbound))


def _read_number_rules(node: _Node) -> tuple[NumberRule, ...]:
    rules: list[NumberRule] = []
    for item in _items(node):
        section = _section(item, ("match", "replace"))
        if section is None:
            continue
        try:
            match = section.node("match").regex()
        except _Invalid:
            continue
        try:
            replace_node = section.node("replace")
            replace = replace_node.value
            if not isinstance(replace, str):
                replace_node.fail(f"expected a string, got {_type_name(replace)}")
            try:
                # Parsing the template happens on every sub(); an empty subject checks its
                # group references once, here, instead of on the first call.
                match.sub(replace, "")
            except re.error as exc:
                replace_node.fail(f"bad replacement '{replace}': {exc}")
        except _Invalid:
            continue
        rules.append(NumberRule(match, replace))
    return tuple(rules)


def _read_numbers(top: _Section) -> NumberRules:
    section = _optional_section(top, "numbers", ("outbound", "inbound"))
    if section is None:
        return NumberRules()
    return NumberRules(
        outbound=section.get("outbound", _read_number_rules, ()),
        inbound=section.get("inbound", _read_number_rules, ()),
    )


def _read_port_range(node: _Node) -> tuple[int, int]:
    items = list(node.items())
    if len(items) != 2:
        node.fail(f"expected [low, high], got {len(items)} values")
    low, high = items[0].integer(1, 65535), items[1].integer(1, 65535)
    if low >= high:
        node.fail(f"low bound {low} must be below high bound {high}")
    if low % 2:
        # RFC 3550 §11: RTP uses an even port and RTCP the odd one above it.
        items[0].fail(f"low bound {low} must be even (RTP ports are even, RTCP odd)")
    return (low, high)


_MEDIA_KEYS = (
    "port_range",
    "timeout",
    "hold_timeout",
    "strict_source",
    "workers",
    "balancing",
    "worker_weights",
)


def _non_negative_seconds(node: _Node) -> float:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        node.fail(f"expected seconds (0 for no limit), got {value!r}")
    return float(value)


BALANCING_POLICIES = ("least_streams", "round_robin", "weighted")


def _auto_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _read_workers(node: _Node) -> int:
    if node.value == "auto":
        return _auto_workers()
    return node.integer(0, 256)


def _read_weights(node: _Node) -> tuple[float, ...]:
    weights = []
    for item in node.items():
        value = item.value
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            item.fail(f"expected a weight of 0 or more, got {value!r}")
        weights.append(float(value))
    return tuple(weights)


def _read_media(top: _Section) -> MediaSettings:
    section = _optional_section(top, "media", _MEDIA_KEYS)
    if section is None:
        return MediaSettings(workers=_auto_workers())
    defaults = MediaSettings()
    settings = MediaSettings(
        port_range=section.get("port_range", _read_port_range, defaults.port_range),
        timeout=section.get("timeout", _Node.positive_number, defaults.timeout),
        hold_timeout=section.get("hold_timeout", _non_negative_seconds, defaults.hold_timeout),
        strict_source=section.get("strict_source", _Node.boolean, defaults.strict_source),
        workers=section.get("workers", _read_workers, _auto_workers()),
        balancing=section.get(
            "balancing", lambda n: n.choice(BALANCING_POLICIES), defaults.balancing
        ),
        worker_weights=section.get("worker_weights", _read_weights, ()),
    )
    if settings.balancing == "weighted":
        if len(settings.worker_weights) != settings.workers:
            section.node("balancing").error(
                f"weighted needs worker_weights with one weight per worker"
                f" ({settings.workers}), got {len(settings.worker_weights)}"
            )
        elif settings.worker_weights and not any(settings.worker_weights):
            section.node("worker_weights").error("at least one weight must be above 0")
    elif settings.worker_weights and section.has("worker_weights"):
        section.node("worker_weights").error("only used with balancing: weighted")
    low, high = settings.port_range
    if settings.workers > 0 and (high - low + 1) // 2 < settings.workers:
        section.node("workers").error(
            f"{settings.workers} workers cannot share {(high - low + 1) // 2} port pairs"
        )
    return settings


def _read_calls(top: _Section) -> CallSettings:
    section = _optional_section(top, "calls", ("no_answer_timeout", "drain_timeout"))
    if section is None:
        return CallSettings()
    defaults = CallSettings()
    return CallSettings(
        no_answer_timeout=section.get(
            "no_answer_timeout", _Node.positive_number, defaults.no_answer_timeout
        ),
        drain_timeout=section.get("drain_timeout", _non_negative_seconds, defaults.drain_timeout),
    )


# --------------------------------------------------------------------------- entry points


def _load_yaml(text: str, filename: str) -> tuple[Any, list[ConfigIssue]]:
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        parts = [part for part in (exc.context, exc.problem) if part]
        raise ConfigError(
            f"YAML syntax error: {', '.join(parts)}", filename=filename, line=line
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", filename=filename, line=1) from None
    finally:
        loader.dispose()
    issues = [
        ConfigIssue(filename, line, key, "duplicate key (an earlier value would be ignored)")
        for line, key in loader.duplicate_keys
    ]
    return data, issues


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Parse and validate configuration text; raises ConfigError listing every problem."""
    data, issues = _load_yaml(text, filename)
    checker = _Checker(filename)
    checker.issues.extend(issues)
    if data is None:
        raise ConfigError(
            "the file is empty; at least 'interfaces' is required", filename=filename, line=1
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {_type_name(data)}",
            filename=filename,
            line=getattr(data, "line", 1),
        )
    top = _Section(checker, data, "", 1)
    top.reject_unknown(_TOP_KEYS)
    base_dir = os.path.dirname(filename) if filename and not filename.startswith("<") else ""
    node = top.get("node", _Node.name, DEFAULT_NODE)
    log = _read_log(top)
    sip = _read_sip(top)
    interfaces = _read_interfaces(top, base_dir)
    pbx_names: dict[str, str] = {}
    trunk_names: dict[str, str] = {}
    pbxs = _read_pbxs(top, interfaces, pbx_names)
    trunks = _read_trunks(top, interfaces, trunk_names)
    routes = _read_routes(top, list(pbx_names), list(trunk_names))
    numbers = _read_numbers(top)
    media = _read_media(top)
    calls = _read_calls(top)
    dns = _read_dns(top)
    policy = _read_policy(top, pbx_names, trunk_names)
    guard = _read_guard(top, interfaces)
    connections = TransportLimits()
    if top.data.get("connections") is not None:
        try:
            connections = _dataclass_of(top.node("connections"), TransportLimits, {})
        except _Invalid:
            pass
    cdr = _read_cdr(top)
    metrics = _read_metrics(top)
    api = _read_api(top)
    capture = _read_capture(top)
    _check_tls_use(top, interfaces, trunks)
    if checker.issues:
        raise ConfigError(sorted(checker.issues, key=lambda issue: issue.line))
    return Config(
        interfaces=interfaces,
        node=node,
        log=log,
        sip=sip,
        pbxs=pbxs,
        trunks=trunks,
        routes=routes,
        numbers=numbers,
        media=media,
        calls=calls,
        dns=dns,
        policy=policy,
        guard=guard,
        connections=connections,
        cdr=cdr,
        metrics=metrics,
        api=api,
        capture=capture,
        source=filename,
    )


def _read_dns(top: _Section) -> DnsSettings:
    section = _optional_section(top, "dns", ("nameservers", "refresh"))
    if section is None:
        return DnsSettings()
    refresh = section.get("refresh", _Node.positive_number, 300.0)
    if section.data.get("nameservers") is None:
        return DnsSettings(refresh=refresh)
    servers: list[tuple[str, int]] = []
    for item in _items(section.node("nameservers")):
        try:
            text = item.string()
            host, port = _split_host_port(text)
            ipaddress.ip_address(host)
            servers.append((host, _parse_port(port) if port is not None else 53))
        except (_Invalid, ValueError):
            item.error("expected an IP address, optionally with :port (e.g. 10.0.0.53:53)")
    return DnsSettings(tuple(servers), refresh)


def _check_tls_use(
    top: _Section, interfaces: dict[str, Interface], trunks: Sequence[Trunk]
) -> None:
    """TLS settings belong to an interface that listens on TLS or reaches a trunk over it."""
    for interface in interfaces.values():
        if interface.tls is None or any(a.transport == "tls" for a in interface.listen):
            continue
        if any(trunk.interface == interface.name and trunk.transport == "tls" for trunk in trunks):
            continue
        line = _line_of(top, ("interfaces", interface.name, "tls"))
        top.checker.add(
            line,
            f"interfaces.{interface.name}.tls",
            "given but unused: add a tls: listener or a trunk using TLS (sips:, transport=tls,"
            " transport: tls), or remove it",
        )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at `path`; raises ConfigError."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}", filename=filename, line=1
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", filename=filename, line=1) from None
    return parse_config(text, filename)


# --------------------------------------------------------------------------- limits, fraud, security
#
# These sections map onto the frozen settings dataclasses of sbc.policy, whose own checks
# (ValueError with a message) are reported at the YAML entry they came from.

_SCALARS: dict[str, Callable[[_Node], Any]] = {
    "str": _Node.string,
    "int": lambda n: n.integer(0),
    "float": lambda n: _number(n),
    "bool": _Node.boolean,
}


def _number(node: _Node) -> float:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        node.fail(f"expected a number, got {_type_name(value)}")
    return float(value)


def _strings(node: _Node) -> tuple[str, ...]:
    out = []
    for item in node.items():
        value = item.value
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a prefix written without quotes: 900
        if not isinstance(value, str) or not value:
            item.fail(f"expected a string, got {_type_name(value)}")
        out.append(value)
    return tuple(out)


def _field_reader(annotation: str, nested: Mapping[str, type]) -> Callable[[_Node], Any]:
    base = annotation.replace(" | None", "").strip()
    if base in _SCALARS:
        return _SCALARS[base]
    if base == "tuple[str, ...]":
        return _strings
    if base.startswith("tuple[") and base.endswith(", ...]"):
        inner = nested[base[len("tuple[") : -len(", ...]")]]
        return lambda n: tuple(_dataclass_of(item, inner, nested) for item in n.items())
    if base in nested:
        return lambda n: _dataclass_of(n, nested[base], nested)
    raise TypeError(f"config: no reader for {annotation!r}")  # a programming error


def _dataclass_of(node: _Node, cls: type[T], nested: Mapping[str, type]) -> T:
    """`cls` from the mapping at `node`: keys are its field names, values read by the
    fields' annotations; the dataclass's own ValueError is reported at the entry."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    section = node.mapping(tuple(fields_))
    values: dict[str, Any] = {}
    for name, spec in fields_.items():
        if section.data.get(name) is None:
            continue
        values[name] = _field_reader(str(spec.type), nested)(section.node(name))
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        node.fail(str(exc))


_POLICY_TYPES: dict[str, type] = {
    "Limit": Limit,
    "TimeWindow": TimeWindow,
    "DialRule": DialRule,
    "FloodSettings": FloodSettings,
    "AuthLockoutSettings": AuthLockoutSettings,
    "ScannerSettings": ScannerSettings,
}


def _read_policy(
    top: _Section, pbx_names: Mapping[str, str], trunk_names: Mapping[str, str]
) -> PolicySettings:
    admission, fraud = AdmissionSettings(), FraudSettings()
    if top.data.get("admission") is not None:
        try:
            admission = _dataclass_of(top.node("admission"), AdmissionSettings, {"Limit": Limit})
        except _Invalid:
            pass
        else:
            for index, limit in enumerate(admission.limits):
                _check_named(
                    top,
                    ("admission", "limits", index),
                    limit.scope,
                    limit.name,
                    pbx_names,
                    trunk_names,
                )
    if top.data.get("fraud") is not None:
        try:
            fraud = _dataclass_of(top.node("fraud"), FraudSettings, _POLICY_TYPES)
        except _Invalid:
            pass
        else:
            for index, rule in enumerate(fraud.rules):
                _check_named(
                    top, ("fraud", "rules", index), rule.scope, rule.name, pbx_names, trunk_names
                )
    return PolicySettings(admission=admission, fraud=fraud)


def _check_named(
    top: _Section,
    where: tuple[str | int, ...],
    scope: str,
    name: str | None,
    pbx_names: Mapping[str, str],
    trunk_names: Mapping[str, str],
) -> None:
    known = {"pbx": pbx_names, "trunk": trunk_names}.get(scope)
    if name is None or known is None or name in known:
        return
    path = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in where).replace(".[", "[")
    top.checker.add(
        _line_of(top, where), f"{path}.name", f"no {scope} named '{name}'{_hint(name, list(known))}"
    )


def _read_guard(top: _Section, interfaces: Mapping[str, Interface]) -> GuardSettings:
    quiet = tuple(name for name, iface in interfaces.items() if not iface.respond_to_unknown)
    if top.data.get("security") is None:
        return GuardSettings(quiet_interfaces=quiet)
    try:
        settings = _dataclass_of(top.node("security"), GuardSettings, _POLICY_TYPES)
    except _Invalid:
        return GuardSettings(quiet_interfaces=quiet)
    return dataclasses.replace(settings, quiet_interfaces=quiet)


def _read_cdr(top: _Section) -> CdrSettings:
    keys = ("path", "dsn", "batch_size", "flush_interval", "max_queue", "rejected")
    section = _optional_section(top, "cdr", keys)
    defaults = CdrSettings()
    if section is None or not section.data:
        return defaults
    path = section.get("path", _Node.string, None)
    if path is not None:
        path = os.path.join(_base_dir(top.checker), path)
    dsn = section.get("dsn", _Node.string, None)
    if path is not None and dsn is not None:
        section.checker.add(
            section.line,
            section.key_path("dsn"),
            "give either path (SQLite) or dsn (PostgreSQL), not both",
        )
        dsn = None
    elif dsn is not None and not _looks_like_dsn(dsn):
        section.checker.add(
            section.line,
            section.key_path("dsn"),
            "not a PostgreSQL DSN (postgresql://user@host/db or 'host=... dbname=...')",
        )
        dsn = None
    elif path is None and dsn is None:
        section.checker.add(
            section.line, section.key_path("path"), "path (SQLite) or dsn (PostgreSQL) required"
        )
    return CdrSettings(
        path=path,
        dsn=dsn,
        batch_size=section.get("batch_size", lambda n: n.integer(1, 100_000), defaults.batch_size),
        flush_interval=section.get(
            "flush_interval", _Node.positive_number, defaults.flush_interval
        ),
        max_queue=section.get("max_queue", lambda n: n.integer(1), defaults.max_queue),
        rejected=section.get("rejected", _Node.boolean, defaults.rejected),
    )


def _looks_like_dsn(text: str) -> bool:
    """A libpq URI or key=value connection string (checked fully when connecting)."""
    return text.startswith(("postgresql://", "postgres://")) or "=" in text


def _read_metrics(top: _Section) -> MetricsSettings:
    section = _optional_section(top, "metrics", ("listen",))
    if section is None or not section.data:
        return MetricsSettings()
    return MetricsSettings(listen=section.get("listen", _socket_address, None))


def _read_api(top: _Section) -> ApiConfig:
    section = _optional_section(top, "api", ("listen", "token_file", "read_timeout", "tls"))
    if section is None or not section.data:
        return ApiConfig()
    listen = section.get("listen", _socket_address, None)
    token_file = section.get("token_file", _Node.string, "")
    if listen is not None and not token_file:
        section.checker.add(
            section.line, section.key_path("token_file"), "required with listen (the bearer token)"
        )
    elif token_file:
        # Read at start (a missing or weak token stops the SBC with a message naming the
        # file), not here: example files name tokens that only exist where they are used.
        token_file = os.path.join(_base_dir(top.checker), token_file)
    tls = None
    if "tls" in section.data:
        tls = _read_tls(section.node("tls"), _base_dir(top.checker))
        if tls is not None and tls.verify_peer and not tls.ca:
            section.checker.add(
                section.line,
                section.key_path("tls.ca"),
                "required with verify_peer (the CA that signs the clients' certificates)",
            )
    return ApiConfig(
        listen=listen,
        token_file=token_file,
        read_timeout=section.get("read_timeout", _Node.positive_number, 5.0),
        tls=tls,
    )


def _read_capture(top: _Section) -> CaptureSettings:
    section = _optional_section(top, "capture", ("hep", "hep_id", "hep_password"))
    if section is None or not section.data:
        return CaptureSettings()
    hep = section.get("hep", _socket_address, None)
    if hep is not None:
        try:
            ipaddress.ip_address(hep.host)
        except ValueError:
            section.node("hep").error(f"{hep.host} is not an IP address (no DNS per message)")
    return CaptureSettings(
        hep=hep,
        hep_id=section.get("hep_id", lambda n: n.integer(0, 2**32 - 1), 2001),
        hep_password=section.get("hep_password", _Node.string, None),
    )
