"""The running SBC as the management API sees it (sbc.api.ControlPlane): plain JSON-able
views of calls, trunks, admission and blocks, and the few actions an operator may take.
Kept apart from sbc.app so the service stays about SIP and the API about HTTP."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from media.pool import WorkerPool
from media.relay import MediaRelay
from sbc.api import ReloadRejected

if TYPE_CHECKING:
    from sbc.app import SignallingService
    from sbc.calls import _Entry


class ServiceControl:
    """Implements sbc.api.ControlPlane over a SignallingService."""

    def __init__(self, service: SignallingService) -> None:
        self.service = service

    # ----- views ----------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        service = self.service
        workers: dict[str, Any] = {}
        if isinstance(service.relay, WorkerPool):
            workers = {str(w.index): w.alive for w in service.relay.workers}
        ready = bool(service.listener_names) and all(workers.values())
        return {"ready": ready, "listeners": service.listener_names, "workers": workers}

    def calls(self) -> list[dict[str, Any]]:
        return [self._summary(entry) for entry in self.service.calls.calls.values()]

    async def call(self, key: str) -> dict[str, Any] | None:
        entry = self.service.calls.calls.get(key)
        if entry is None:
            return None
        found = self._summary(entry)
        call = entry.call
        found["legs"] = [
            {"leg": "A", "call_id": call.invite.call_id, "remote": str(call.source)},
            {
                "leg": "B",
                "target": call.target.name,
                "remote": f"{call.target.dest.host}:{call.target.dest.port}",
            },
        ]
        found["media"] = await self._media(key) if entry.media else []
        return found

    async def _media(self, key: str) -> list[dict[str, Any]]:
        relay = self.service.relay
        if isinstance(relay, WorkerPool):
            stats = await relay.stats(key)
        elif isinstance(relay, MediaRelay):
            stats = relay.stats(key)
        else:
            return []
        media: list[dict[str, Any]] = []
        for leg in stats.legs:
            media.append(
                {
                    "stream": leg.stream,
                    "leg": leg.leg.value,
                    "local": f"{leg.local[0]}:{leg.local[1]}",
                    "rtp_packets": leg.rtp.packets,
                    "rtcp_packets": leg.rtcp.packets,
                    "dropped": leg.rtp.dropped + leg.rtcp.dropped,
                    "latched": leg.rtp.latched,
                }
            )
        for stream in stats.streams:
            for source, report in (("a", stream.from_a), ("b", stream.from_b)):
                media.append({"stream": stream.stream, "from": source, **report.to_dict()})
        return media

    def _summary(self, entry: _Entry) -> dict[str, Any]:
        call, setup = entry.call, entry.setup
        now = self.service.now()
        wall = time.time() - now  # loop clock -> UNIX time
        return {
            "key": setup.call_key,
            "direction": setup.direction,
            "caller": setup.caller,
            "callee": setup.callee_rewritten,
            "target": call.target.name,
            "phase": call.phase.value,
            "started": round(entry.started + wall, 3),
            "answered": None if call.answered is None else round(call.answered + wall, 3),
            "duration": round(now - entry.started, 3),
        }

    def trunks(self) -> list[dict[str, Any]]:
        service = self.service
        states = service.trunks.states()
        found = []
        for trunk in service.config.trunks:
            registrations = service.trunks.registrations(trunk.name)
            found.append(
                {
                    "name": trunk.name,
                    "enabled": trunk.name not in service.disabled_trunks,
                    "state": states.get(trunk.name, "up"),
                    "registration": registrations or None,
                    "calls": service.calls.per_target(trunk.name),
                }
            )
        return found

    def set_trunk_enabled(self, name: str, enabled: bool) -> dict[str, Any] | None:
        service = self.service
        if name not in {trunk.name for trunk in service.config.trunks}:
            return None
        if enabled:
            service.disabled_trunks.discard(name)
        else:
            service.disabled_trunks.add(name)
        return next(t for t in self.trunks() if t["name"] == name)

    def admission(self) -> dict[str, Any]:
        return self.service.policy.snapshot(self.service.now())

    def blocks(self) -> list[dict[str, Any]]:
        now = self.service.now()
        return [
            {
                "key": block.key,
                "kind": block.kind.value,
                "reason": block.reason.value,
                "hits": block.hits,
                "left_s": round(block.until - now, 1),
            }
            for block in self.service.guard.blocks(now)
        ]

    async def stats(self) -> dict[str, Any]:
        service = self.service
        found: dict[str, Any] = dict(service.stats())
        if isinstance(service.relay, WorkerPool):
            found["workers"] = [
                {k: v for k, v in dataclasses.asdict(w).items() if k != "health"}
                for w in service.relay.workers
            ]
        return found

    # ----- actions --------------------------------------------------------------------------
    def hangup(self, key: str) -> bool:
        return self.service.calls.hangup(key, "hung up by the operator")

    def unblock(self, key: str) -> bool:
        return self.service.guard.unblock(key)

    async def reload(self) -> dict[str, Any]:
        source = self.service.config.source
        problems = await self.service.reload(source)
        if problems:
            raise ReloadRejected(problems)
        return {"reloaded": True, "changes": [f"{source} applied to new calls"]}
