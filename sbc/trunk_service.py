"""Runs the trunks' own SIP traffic: OPTIONS health probes (and trunk registrations), each a
sans-I/O agent from `trunks/`, through the same transaction layer as calls. It keeps the
health view routing reads, and logs every state change of a trunk."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sbc.config import Config, Trunk
from sbc.log import get_logger
from sbc.routing import Router
from sbc.sip.message import Request, Response
from sbc.sip.peer import Peer
from sbc.sip.transaction import Action, TransactionLayer, TxnKey
from trunks.probing import HealthChanged, Prober, ProbeSettings
from trunks.registration import (
    Registration,
    RegistrationChanged,
    RegistrationSettings,
    RegistrationStatus,
)

log = get_logger("trunk")


class Agent(Protocol):
    """What a prober or a registration offers its driver."""

    def start(self, now: float) -> list[Any]: ...
    def request_sent(self, tag: str, key: TxnKey) -> None: ...
    def on_response(self, key: TxnKey, response: Response, now: float) -> list[Any]: ...
    def on_failure(self, key: TxnKey, reason: str, now: float) -> list[Any]: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> list[Any]: ...


class TrunkService:
    """The probers of every trunk with `probe:` set. `health(name)` is what routing asks;
    a trunk without probing is always up."""

    def __init__(
        self,
        config: Config,
        router: Router,
        transactions: TransactionLayer,
        execute: Callable[[Iterable[Action], float], None],
    ) -> None:
        self.transactions = transactions
        self._execute = execute
        self._agents: list[Agent] = []
        self._by_key: dict[TxnKey, Agent] = {}
        self._probers: dict[str, Prober] = {}
        self._registrations: list[Registration] = []
        self._timers: list[tuple[float, int, int]] = []  # (deadline, seq, agent index)
        self._deadlines: dict[int, float | None] = {}
        self._seq = itertools.count()
        self._config = config
        self._router = router

    def _build(self) -> None:
        """The agents, built once names are resolved (they send to the first gateway)."""
        router = self._router
        for trunk in self._config.trunks:
            if trunk.probe is not None:
                prober = Prober(_probe_settings(trunk, router))
                self._probers[trunk.name] = prober
                self._agents.append(prober)
            for settings in _registration_settings(trunk, router):
                registration = Registration(settings)
                self._registrations.append(registration)
                self._agents.append(registration)

    def health(self, trunk: str) -> bool:
        prober = self._probers.get(trunk)
        return True if prober is None else prober.up

    def states(self) -> dict[str, str]:
        """Each probed trunk's health and each registration's state, for logs and (later)
        the management API."""
        found = {name: "up" if p.up else "down" for name, p in self._probers.items()}
        for registration in self._registrations:
            settings = registration.settings
            found[f"{settings.trunk} {settings.aor}"] = registration.state.status.value
        return found

    # ----- driving ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._build()
        for index, agent in enumerate(self._agents):
            self._run(index, agent, agent.start(now), now)

    def response(self, key: TxnKey, response: Response, now: float) -> bool:
        agent = self._by_key.get(key)
        if agent is None:
            return False
        if response.status >= 200:
            del self._by_key[key]
        self._run(self._agents.index(agent), agent, agent.on_response(key, response, now), now)
        return True

    def failure(self, key: TxnKey, reason: str, now: float) -> bool:
        agent = self._by_key.pop(key, None)
        if agent is None:
            return False
        self._run(self._agents.index(agent), agent, agent.on_failure(key, reason, now), now)
        return True

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, _, index = timers[0]
            if self._deadlines.get(index) == deadline:
                return deadline
            heapq.heappop(timers)  # stale: moved or done
        return None

    def on_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, index = heapq.heappop(timers)
            if self._deadlines.get(index) != deadline:
                continue
            self._deadlines[index] = None
            agent = self._agents[index]
            self._run(index, agent, agent.on_timer(now), now)

    def stop(self, now: float) -> None:
        """Stop probing; take every registration down (REGISTER with Expires: 0)."""
        for prober in self._probers.values():
            prober.stop()
        for index, agent in enumerate(self._agents):
            if isinstance(agent, Registration):
                self._run(index, agent, agent.stop(now), now)

    @property
    def unregistering(self) -> bool:
        """A shutdown un-REGISTER is still waiting for its answer."""
        return any(r.state.status is RegistrationStatus.UNREGISTERING for r in self._registrations)

    def _run(self, index: int, agent: Agent, actions: list[Any], now: float) -> None:
        for action in actions:
            if isinstance(action, HealthChanged):
                emit = log.info if action.up else log.warning
                emit(
                    "trunk.health",
                    trunk=action.trunk,
                    gateway=action.gateway,
                    state="up" if action.up else "down",
                    reason=action.reason,
                )
            elif isinstance(action, RegistrationChanged):
                state = action.state
                failing = state.status in (RegistrationStatus.FAILED, RegistrationStatus.BACKOFF)
                emit = log.warning if failing else log.info
                emit(
                    "trunk.registration",
                    trunk=action.trunk,
                    aor=action.aor,
                    state=state.status.value,
                    expires_in=None if state.expires_at is None else round(state.expires_at - now),
                    last_status=state.last_status,
                    reason=state.last_reason or None,
                    next_attempt_in=None
                    if state.next_attempt is None
                    else round(state.next_attempt - now, 1),
                )
            elif isinstance(getattr(action, "request", None), Request):
                key, sent = self.transactions.send_request(action.request, action.dest, now)
                self._by_key[key] = agent
                agent.request_sent(action.tag, key)
                self._execute(sent, now)
        deadline = agent.next_deadline()
        if deadline != self._deadlines.get(index):
            self._deadlines[index] = deadline
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, next(self._seq), index))


def _probe_settings(trunk: Trunk, router: Router) -> ProbeSettings:
    probe = trunk.probe
    assert probe is not None
    local = router.trunk_local(trunk.name)
    proxy = trunk.proxy
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    uri = f"sip:{host}:{proxy.port}"
    ours = f"[{local.host}]" if ":" in local.host else local.host
    host, port = (router.gateways(trunk.name) or ((proxy.host, proxy.port),))[0]
    return ProbeSettings(
        trunk=trunk.name,
        dest=Peer(trunk.transport, host, port, local.listener),
        request_uri=uri,
        from_uri=f"sip:sbc@{ours}",
        to_uri=uri,
        via_host=local.host,
        via_port=local.port,
        via_transport=local.transport,
        user_agent=local.user_agent,
        interval=probe.interval,
        up_after=probe.up_after,
        down_after=probe.down_after,
    )


def _registration_settings(trunk: Trunk, router: Router) -> list[RegistrationSettings]:
    creds = trunk.credentials
    if creds is None or not trunk.registrations:
        return []
    local = router.trunk_local(trunk.name)
    proxy = trunk.proxy
    host, port = (router.gateways(trunk.name) or ((proxy.host, proxy.port),))[0]
    dest = Peer(trunk.transport, host, port, local.listener)
    ours = f"[{local.host}]" if ":" in local.host else local.host
    suffix = "" if local.transport == "udp" else f";transport={local.transport}"
    found = []
    for reg in trunk.registrations:
        domain = reg.domain or proxy.host
        found.append(
            RegistrationSettings(
                trunk=trunk.name,
                registrar=reg.registrar or f"sip:{domain}",
                aor=f"sip:{reg.user}@{domain}",
                # Inbound calls come back to this Contact with the registered user in the
                # Request-URI, which inbound routing reads as the DID.
                contact=f"sip:{reg.user}@{ours}:{local.port}{suffix}",
                proxy=dest,
                local_host=local.host,
                local_port=local.port,
                username=reg.user,
                auth_username=creds.auth_username or creds.username,
                password=creds.password,
                realm=creds.realm,
                expires=reg.expires,
                user_agent=local.user_agent,
            )
        )
    return found
