"""Per-object annotations and labels the policy honours, all under one prefix.

With the default prefix ``bgpd.dev``:

Service: ``bgpd.dev/advertise`` ("false" opts the whole Service out),
``bgpd.dev/advertise-cluster-ip``, ``bgpd.dev/advertise-external-ips``,
``bgpd.dev/advertise-load-balancer-ips`` ("true"/"false" override the config),
``bgpd.dev/require-ready-endpoint`` ("true"/"false"), ``bgpd.dev/communities``,
``bgpd.dev/large-communities`` (comma separated), ``bgpd.dev/local-pref``, ``bgpd.dev/med``.
Pod: ``bgpd.dev/external-ips`` (comma separated addresses the pod itself answers on).
Node label ``bgpd.dev/announce: "false"`` withdraws everything from that node (drain).
"""

from __future__ import annotations

from collections.abc import Mapping

from bgpd.model import Attributes
from bgpd.values import parse_community, parse_uint

ADVERTISE = "advertise"
ADVERTISE_CLUSTER_IP = "advertise-cluster-ip"
ADVERTISE_EXTERNAL_IPS = "advertise-external-ips"
ADVERTISE_LB_IPS = "advertise-load-balancer-ips"
REQUIRE_READY = "require-ready-endpoint"
COMMUNITIES = "communities"
LARGE_COMMUNITIES = "large-communities"
LOCAL_PREF = "local-pref"
MED = "med"
WEIGHTED_ECMP = "weighted-ecmp"  # link bandwidth per local endpoint (eTP=Local)
POD_EXTERNAL_IPS = "external-ips"
NODE_ANNOUNCE = "announce"
NODE_ASN = "asn"
NODE_PEER_IPS = "peer-ips"
NODE_PEER_ASNS = "peer-asns"

# The names each kind is read for: the Kubernetes adapter keeps only these (anything else
# under the prefix is reported as unknown, never stored).
SERVICE_KEYS = frozenset({ADVERTISE, ADVERTISE_CLUSTER_IP, ADVERTISE_EXTERNAL_IPS,
                          ADVERTISE_LB_IPS, REQUIRE_READY, COMMUNITIES, LARGE_COMMUNITIES,
                          LOCAL_PREF, MED, WEIGHTED_ECMP})
POD_KEYS = frozenset({POD_EXTERNAL_IPS})
NODE_KEYS = frozenset({NODE_ASN, NODE_PEER_IPS, NODE_PEER_ASNS})


def flag(annotations: Mapping[str, str], prefix: str, name: str, default: bool
         ) -> tuple[bool, str]:
    """A boolean annotation; returns (value, problem) and keeps the default when bad."""
    raw = annotations.get(f"{prefix}/{name}")
    if raw is None:
        return default, ""
    text = str(raw).strip().lower()
    if text in ("true", "yes", "1"):
        return True, ""
    if text in ("false", "no", "0"):
        return False, ""
    return default, f"{prefix}/{name}: {raw!r} must be true or false"


def split_list(raw: str) -> list[str]:
    return [item.strip() for item in str(raw).split(",") if item.strip()]


MAX_ITEM_PROBLEMS = 3  # bad items named per annotation; the rest are counted
MAX_LIST_ITEMS = 64  # addresses read from one list annotation (as from spec.externalIPs)


def attributes(annotations: Mapping[str, str], prefix: str) -> tuple[Attributes, list[str]]:
    """BGP attributes a Service asks for; bad values are dropped and reported (one problem
    per annotation, naming the first few bad items: each problem becomes an Event)."""
    problems: list[str] = []
    comms: list[str] = []
    large: list[str] = []
    for name, parts, out in ((COMMUNITIES, 2, comms), (LARGE_COMMUNITIES, 3, large)):
        raw = annotations.get(f"{prefix}/{name}")
        bad = []
        for item in split_list(raw) if raw is not None else ():
            value = parse_community(item, parts)
            if value is None:
                bad.append(item)
            else:
                out.append(value)
        if bad:
            named = ", ".join(repr(item[:40]) for item in bad[:MAX_ITEM_PROBLEMS])
            more = f" and {len(bad) - MAX_ITEM_PROBLEMS} more" if len(bad) > MAX_ITEM_PROBLEMS else ""
            kind = "community" if parts == 2 else "large community"
            problems.append(f"{prefix}/{name}: {named}{more} not a valid {kind}")
    scalars: dict[str, int | None] = {}
    for name in (LOCAL_PREF, MED):
        raw = annotations.get(f"{prefix}/{name}")
        scalars[name] = None
        if raw is not None:
            scalars[name] = parse_uint(raw)
            if scalars[name] is None:
                problems.append(f"{prefix}/{name}: {raw!r} must be an integer 0..4294967295")
    return Attributes(tuple(sorted(set(comms))), tuple(sorted(set(large))),
                      scalars[LOCAL_PREF], scalars[MED]), problems
