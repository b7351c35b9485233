"""Scheduling gated on BGP: the Node's NetworkUnavailable condition (pure).

A node whose pod CIDR no peer has heard of gets pods nobody can reach (calico#5233,
kube-router#848). Kubernetes has the switch: while a Node's ``NetworkUnavailable``
condition is True, the node lifecycle controller taints it
``node.kubernetes.io/network-unavailable:NoSchedule`` and the scheduler keeps new pods off.
This decides, from what the agent knows, what the condition should say:

* False as soon as the node's pod CIDR is announced to at least one established peer;
* True once it has not been for ``debounce_seconds`` (a session reset that comes back
  within that time changes nothing), but never while the agent's view is in doubt (not
  synced, API unreachable) or the mass-withdraw guard holds something: in those states the
  agent may be wrong about its own routes, and keeping pods off a healthy node is the
  very outage the guard exists to avoid. The decision then waits, and the clock with it.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITION = "NetworkUnavailable"
REASON_ANNOUNCED = "BGPRoutesAnnounced"
REASON_NOT_ANNOUNCED = "BGPRoutesNotAnnounced"


@dataclass(frozen=True)
class GateView:
    pod_cidrs: tuple[str, ...]  # the node's own, as announced by the policy
    announced_to: tuple[str, ...]  # established peers holding every one of them
    trusted: bool  # synced and the API reachable
    holding: bool  # withdrawals or peers held by the guard


@dataclass(frozen=True)
class GateVerdict:
    status: str | None  # "True" / "False" to write, None: leave the condition as it is
    reason: str = ""
    message: str = ""
    bad_since: float | None = None  # since when the pod CIDR has been announced to nobody


def decide_condition(view: GateView, *, now: float, bad_since: float | None,
                     debounce_seconds: float) -> GateVerdict:
    if not view.pod_cidrs:
        return GateVerdict(None)  # no pod CIDR (yet): nothing this agent routes for pods
    cidrs = ", ".join(view.pod_cidrs)
    if view.announced_to:
        return GateVerdict("False", REASON_ANNOUNCED,
                           f"pod CIDR {cidrs} announced to {', '.join(view.announced_to)}")
    if not view.trusted or view.holding:
        return GateVerdict(None)  # no clock runs either
    since = bad_since if bad_since is not None else now
    if now - since < debounce_seconds:
        return GateVerdict(None, bad_since=since)
    return GateVerdict("True", REASON_NOT_ANNOUNCED,
                       f"pod CIDR {cidrs} announced to no BGP peer for "
                       f"{now - since:.0f}s", since)
