"""Call admission control and toll-fraud rules (sans-I/O): `Policy(settings, store).admit(info,
now, wall)` before a new call proceeds, `move` on failover, `ended` when it is over."""

from sbc.policy.admission import Admission
from sbc.policy.fraud import FraudRules, NumberPlan
from sbc.policy.policy import Policy
from sbc.policy.settings import (
    AdmissionSettings,
    DialRule,
    FraudSettings,
    Limit,
    PolicySettings,
    TimeWindow,
)
from sbc.policy.store import MemoryStore, StateStore
from sbc.policy.verdict import Admitted, Rejected, RequestInfo, Ticket

__all__ = [
    "Admission",
    "AdmissionSettings",
    "Admitted",
    "DialRule",
    "FraudRules",
    "FraudSettings",
    "Limit",
    "MemoryStore",
    "NumberPlan",
    "Policy",
    "PolicySettings",
    "Rejected",
    "RequestInfo",
    "StateStore",
    "Ticket",
    "TimeWindow",
]
