"""Runs the trunks' own SIP traffic: OPTIONS health probes (and trunk registrations), each a
sans-I/O agent from `trunks/`, through the same transaction layer as calls. It keeps the
health view routing reads, and logs every state change of a trunk."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace
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

Gateway = tuple[str, int]  # (IP address, port)


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
        # trunk -> gateway (address, port) -> its prober: each address of a trunk is probed,
        # so calls skip a dead one and the trunk is down only when all of them are.
        self._probers: dict[str, dict[Gateway, Prober]] = {}
        self._registrations: list[Registration] = []
        self._timers: list[tuple[float, int, int]] = []  # (deadline, seq, agent index)
        self._deadlines: dict[int, float | None] = {}
        self._seq = itertools.count()
        self._config = config
        self._router = router

    def _build(self) -> None:
        """The agents, built once names are resolved: a prober per gateway address, and
        each registration toward the trunk's first address."""
        router = self._router
        for trunk in self._config.trunks:
            if trunk.probe is not None:
                self._probers[trunk.name] = {}
                for gateway in _gateways(trunk, router):
                    self._add_prober(trunk, gateway)
            for settings in _registration_settings(trunk, router):
                registration = Registration(settings)
                self._registrations.append(registration)
                self._agents.append(registration)

    def _add_prober(self, trunk: Trunk, gateway: Gateway) -> Prober:
        prober = Prober(_probe_settings(trunk, self._router, gateway))
        self._probers[trunk.name][gateway] = prober
        self._agents.append(prober)
        return prober

    def health(self, trunk: str) -> bool:
        """Up when any of its probed addresses is (or it is not probed)."""
        probers = self._probers.get(trunk)
        return not probers or any(p.up for p in probers.values())

    def gateway_up(self, trunk: str, gateway: Gateway) -> bool:
        prober = self._probers.get(trunk, {}).get(gateway)
        return True if prober is None else prober.up

    def states(self) -> dict[str, str]:
        """Each probed trunk's health (and each of its addresses') and each registration's
        state, for logs and (later) the management API."""
        found: dict[str, str] = {}
        for name, probers in self._probers.items():
            found[name] = "up" if self.health(name) else "down"
            if len(probers) > 1:
                for (host, port), prober in probers.items():
                    found[f"{name} {host}:{port}"] = "up" if prober.up else "down"
        for registration in self._registrations:
            settings = registration.settings
            found[f"{settings.trunk} {settings.aor}"] = registration.state.status.value
        return found

    def registrations(self, trunk: str) -> dict[str, str]:
        """AoR -> state of each registration of `trunk`."""
        return {
            r.settings.aor: r.state.status.value
            for r in self._registrations
            if r.settings.trunk == trunk
        }

    def gateways_changed(self, now: float) -> None:
        """DNS moved some trunk: probe the new addresses, stop probing the old ones, and
        register at the new first address when the registrar's is gone."""
        for trunk in self._config.trunks:
            gateways = _gateways(trunk, self._router)
            probers = self._probers.get(trunk.name)
            if probers is not None:
                for gateway in [g for g in probers if g not in gateways]:
                    probers.pop(gateway).stop()
                    log.info("trunk.probe_removed", trunk=trunk.name, gateway=_label(gateway))
                for gateway in [g for g in gateways if g not in probers]:
                    prober = self._add_prober(trunk, gateway)
                    index = len(self._agents) - 1
                    self._run(index, prober, prober.start(now), now)
            for index, agent in enumerate(self._agents):
                if isinstance(agent, Registration) and agent.settings.trunk == trunk.name:
                    current = (agent.settings.proxy.host, agent.settings.proxy.port)
                    if current not in gateways and gateways:
                        self._move(index, agent, gateways[0], now)

    def _move(self, index: int, registration: Registration, gateway: Gateway, now: float) -> None:
        proxy = registration.settings.proxy
        dest = Peer(proxy.transport, gateway[0], gateway[1], proxy.listener)
        log.info(
            "trunk.registrar_moved",
            trunk=registration.settings.trunk,
            aor=registration.settings.aor,
            gateway=_label(gateway),
        )
        self._run(index, registration, registration.retarget(dest, now), now)

    # ----- driving ------------------------------------------------------------------------
    def start(self, now: float, previous: TrunkService | None = None) -> None:
        """Build the agents and start them. With `previous` (a config reload), an agent
        whose settings did not change is taken over as it is (a registration keeps its
        binding, a prober its verdict), and the previous service's other agents retire
        here: probers stop, registrations are removed (Expires: 0); answers to requests
        any of them has in flight now come to this service."""
        self._build()
        kept: set[int] = set()
        if previous is not None:
            kept = self._take_over(previous, now)
        for index, agent in enumerate(self._agents):
            if id(agent) in kept:
                self._rearm(index, agent)
            else:
                self._run(index, agent, agent.start(now), now)
        if previous is not None:
            self._retire(previous, kept, now)

    def _take_over(self, previous: TrunkService, now: float) -> set[int]:
        kept: set[int] = set()
        for index, agent in enumerate(self._agents):
            twin = previous._twin(agent)
            if twin is None:
                continue
            self._agents[index] = twin
            if isinstance(twin, Prober):
                self._probers[twin.settings.trunk][_gateway_of(twin)] = twin
            elif isinstance(twin, Registration) and isinstance(agent, Registration):
                self._registrations[self._registrations.index(agent)] = twin
            kept.add(id(twin))
        self._by_key.update(previous._by_key)
        return kept

    def _twin(self, agent: Agent) -> Agent | None:
        """An agent of this service doing exactly what `agent` (built from a new config)
        would do: same probe settings, or same registration up to where DNS sent it."""
        if isinstance(agent, Prober):
            old = self._probers.get(agent.settings.trunk, {}).get(_gateway_of(agent))
            return old if old is not None and old.settings == agent.settings else None
        if isinstance(agent, Registration):
            for old_reg in self._registrations:
                moved = replace(old_reg.settings, proxy=agent.settings.proxy)
                if moved == agent.settings and not old_reg.stopped:
                    return old_reg
        return None

    def _retire(self, previous: TrunkService, kept: set[int], now: float) -> None:
        for agent in previous._agents:
            if id(agent) in kept:
                continue
            if isinstance(agent, Prober):
                agent.stop()
                continue
            if isinstance(agent, Registration) and not agent.stopped:
                # Kept in this service so the answer to its un-REGISTER is heard here.
                self._agents.append(agent)
                log.info(
                    "trunk.registration_removed",
                    trunk=agent.settings.trunk,
                    aor=agent.settings.aor,
                )
                self._run(len(self._agents) - 1, agent, agent.stop(now), now)

    def _rearm(self, index: int, agent: Agent) -> None:
        deadline = agent.next_deadline()
        self._deadlines[index] = deadline
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._seq), index))

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
        index = self._agents.index(agent)
        self._run(index, agent, agent.on_failure(key, reason, now), now)
        if isinstance(agent, Registration):
            # No answer from this address: the next attempt (after its back-off) goes to
            # the trunk's next one, RFC 3263 §4.3 style.
            self._rotate(index, agent, now)
        return True

    def _rotate(self, index: int, registration: Registration, now: float) -> None:
        trunk = self._config.trunk(registration.settings.trunk)
        gateways = _gateways(trunk, self._router)
        proxy = registration.settings.proxy
        current = (proxy.host, proxy.port)
        if len(gateways) < 2 or registration.stopped:
            return
        position = gateways.index(current) if current in gateways else -1
        self._move(index, registration, gateways[(position + 1) % len(gateways)], now)

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
        for probers in self._probers.values():
            for prober in probers.values():
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


def _gateways(trunk: Trunk, router: Router) -> tuple[Gateway, ...]:
    return router.gateways(trunk.name) or ((trunk.proxy.host, trunk.proxy.port),)


def _gateway_of(prober: Prober) -> Gateway:
    dest = prober.settings.dest
    return (dest.host, dest.port)


def _label(gateway: Gateway) -> str:
    host, port = gateway
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _probe_settings(trunk: Trunk, router: Router, gateway: Gateway) -> ProbeSettings:
    probe = trunk.probe
    assert probe is not None
    local = router.trunk_local(trunk.name)
    proxy = trunk.proxy
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    uri = f"sip:{host}:{proxy.port}"
    ours = f"[{local.host}]" if ":" in local.host else local.host
    return ProbeSettings(
        trunk=trunk.name,
        dest=Peer(trunk.transport, gateway[0], gateway[1], local.listener),
        request_uri=uri,
        from_uri=f"sip:sbc@{ours}",
        to_uri=uri,
        via_host=local.host,
        via_port=local.port,
        via_transport=local.transport,
        user_agent=local.user_agent,
        gateway=_label(gateway),
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
    host, port = _gateways(trunk, router)[0]
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
