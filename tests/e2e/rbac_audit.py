"""What the agents' ServiceAccount is granted (daemonset/base/rbac.yaml) against what it used
(the lab API server's audit log, bgpd/lab/audit-policy.yaml), both as a set of
(API group, resource, subresource, verb): resourceNames and namespaces collapsed."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

SA_NAMESPACE, SA_NAME = "bgpd-system", "bgpd"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"


@dataclass(frozen=True, order=True)
class Use:
    group: str  # "" for the core group
    resource: str
    subresource: str  # "" when none
    verb: str

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {res}" + (f".{self.group}" if self.group else "")


def granted(rbac: Path, sa_namespace: str = SA_NAMESPACE, sa_name: str = SA_NAME) -> set[Use]:
    """Every (group, resource, subresource, verb) a Role or ClusterRole bound to the
    ServiceAccount allows. Wildcards and nonResourceURLs are refused (none are granted)."""
    docs = [d for d in yaml.safe_load_all(rbac.read_text()) if d]
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out: set[Use] = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace} \
                not in b.get("subjects", []):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        role = roles[(ref["kind"], ns, ref["name"])]
        for rule in role.get("rules", []):
            assert not rule.get("nonResourceURLs"), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), rule
                        res, _, sub = resource.partition("/")
                        out.add(Use(group, res, sub, verb))
    return out


@dataclass(frozen=True)
class Forbidden:
    use: Use | None
    at: float  # when the API server received it (Unix time)
    what: str

    def __str__(self) -> str:
        return self.what


@dataclass
class AuditUse:
    used: Counter  # Use -> requests
    forbidden: list[Forbidden]  # requests answered 403
    non_resource: list[str]  # requests for a URL that is no API resource
    requests: int


def used(audit_log: Path, user: str = SA_USER) -> AuditUse:
    """The requests of ``user`` in a JSON audit log (one event per line). An audit ID can
    show more than once (a watch: when its response starts and when it ends): counted once."""
    seen: set[str] = set()
    counts: Counter = Counter()
    forbidden, non_resource = [], []
    for line in audit_log.read_text().splitlines():
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev.get("user", {}).get("username") != user or ev.get("auditID") in seen:
            continue
        seen.add(ev["auditID"])
        code = (ev.get("responseStatus") or {}).get("code")
        at = ev.get("requestReceivedTimestamp", "")
        what = f"{at} {ev.get('verb')} {ev.get('requestURI')} -> {code}"
        ref = ev.get("objectRef")
        use = None
        if ref and ref.get("resource"):
            use = Use(ref.get("apiGroup", ""), ref["resource"], ref.get("subresource", ""),
                      ev["verb"])
            counts[use] += 1
        else:
            non_resource.append(what)
        if code == 403:
            forbidden.append(Forbidden(use, datetime.fromisoformat(at).timestamp(), what))
    return AuditUse(counts, forbidden, non_resource, len(seen))
