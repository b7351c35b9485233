"""Shared by the monitoring tests: where the files are, promtool, the PromQL in the rules and
the dashboard, and the metric names the agent really exports.

The exported names come from a scrape of the real collector (``bgpd.metrics.registry_for``)
over an agent built with the in-memory fakes, so a metric renamed or removed in
bgpd/metrics.py breaks these tests, not an operator's dashboard.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MONITORING = ROOT / "daemonset" / "monitoring"
RULES = MONITORING / "rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES_TEST = HERE / "rules_test.yaml"
PROMTOOL_SH = HERE / "promtool.sh"
PROMTOOL_TIMEOUT_S = 120

# Labels the scrape adds to every bgpd_ series (podmonitor.yaml); the agent exports none.
TARGET_LABELS = frozenset({"job", "instance", "node", "namespace", "pod"})


def promtool() -> str:
    """$PROMTOOL, else the one promtool.sh caches; FAIL (not skip) when there is none."""
    path = os.environ.get("PROMTOOL") or str(
        Path(os.environ.get("BGPD_CACHE", "/var/cache/bgpd")) / "promtool" / "bin" / "promtool")
    if not os.access(path, os.X_OK):
        pytest.fail(f"promtool not found at {path}: get it with {PROMTOOL_SH.relative_to(ROOT)} "
                    f"(BGPD_CACHE selects the cache folder) or set PROMTOOL", pytrace=False)
    return path


# ------------------------------------------------------------------ the files


@cache
def rule_file() -> dict:
    return yaml.safe_load(RULES.read_text())


def alerts() -> list[dict]:
    return [r for g in rule_file()["groups"] for r in g["rules"] if "alert" in r]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in rule_file()["groups"] for r in g["rules"]]


def recorded_names() -> set[str]:
    """Series the rules themselves record: usable in expressions like exported ones."""
    return {r["record"] for g in rule_file()["groups"] for r in g["rules"] if "record" in r}


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_targets() -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels() for t in p.get("targets", [])]


def dashboard_queries() -> list[str]:
    """Every query the dashboard sends: panel targets and template variables."""
    queries = [t["expr"] for _, t in dashboard_targets()]
    for var in dashboard()["templating"]["list"]:
        if var.get("type") == "query":
            q = var["query"]
            queries.append(q["query"] if isinstance(q, dict) else q)
    return queries


# ------------------------------------------------------------------ PromQL, as far as needed

# String literals, whose content is a label value, never a metric name.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:.$])(bgpd_[A-Za-z0-9_:]*)")
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:.$])(bgpd_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """The bgpd_ series names an expression reads (names in strings do not count)."""
    bare = strip_strings(expr)
    assert "__name__" not in bare, f"select series by name, not by __name__: {expr}"
    return set(_NAME.findall(bare))


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(name, {label: operator+value}) for every bgpd_ selector with braces."""
    out = []
    for name, body in _SELECTOR.findall(expr):
        out.append((name, {label: op + value for label, op, value in _MATCHER.findall(body)}))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    labels = set()
    for _, body in _GROUPING.findall(strip_strings(expr)):
        labels.update(x.strip() for x in body.split(",") if x.strip())
    return labels


# ------------------------------------------------------------------ what the agent exports

# Sample names each family type is always exposed under (text format), from the family's
# name. `_created` only when the collector sets it: then it is among the samples.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


class _ClusterWithWatches:
    """FakeCluster plus one watch's counters, so the per-kind families carry a sample."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stats(self):
        return {"Service": SimpleNamespace(lists=1, relists=1, watch_restarts=1, events=1,
                                           skipped=1, last_skip="", last_error="",
                                           last_error_at=0.0)}


@cache
def scrape() -> str:
    """/metrics of an agent on the in-memory fakes after one reconcile."""
    from prometheus_client import generate_latest

    from bgpd.agent import Agent
    from bgpd.metrics import registry_for
    from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, Speakers
    from tests.unit.policy_builders import NODE, config, service, snapshot

    snap = snapshot(services=[
        service("web", external_ips=("198.51.100.7",)),
        service("lb", type="LoadBalancer", lb_ips=("203.0.113.5",)),
        service("evil", ns="team", external_ips=("192.0.2.10",)),  # outside every pool
    ])
    agent = Agent(config(), NODE, _ClusterWithWatches(FakeCluster(snap)), Speakers(),
                  FakeKernel(), FakeEvents(), clock=lambda: 1000.0)
    agent.reconcile()
    return generate_latest(registry_for(agent)).decode()


def exported(text: str) -> dict[str, set[str]]:
    """Series name -> label names, from an exposition. A family without samples still
    counts, under every name its type is exposed as (labels then unknown: empty)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        base = fam.name.removesuffix("_total") if fam.type == "counter" else fam.name
        for suffix in _SUFFIXES.get(fam.type, ("",)):
            out.setdefault(base + suffix, set())
        for sample in fam.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@cache
def exported_names() -> dict[str, frozenset[str]]:
    return {k: frozenset(v) for k, v in exported(scrape()).items()}


def unknown_metrics(exprs, known) -> dict[str, list[str]]:
    """Names used in ``exprs`` that are not in ``known``, each with the expressions using it."""
    out: dict[str, list[str]] = {}
    for expr in exprs:
        for name in sorted(metric_names(expr) - set(known)):
            out.setdefault(name, []).append(expr)
    return out


def unknown_labels(exprs, known: dict[str, frozenset[str]]) -> list[str]:
    """Labels that no series carries: in a bgpd_ selector (checked against that series) or
    in a grouping clause (against every series the agent exports, plus the target's)."""
    every = set(TARGET_LABELS).union(*known.values()) | {"le"}
    problems = []
    for expr in exprs:
        for name, matchers in selectors(expr):
            allowed = TARGET_LABELS | known.get(name, frozenset())
            problems += [f"{name}{{{label}}} in {expr!r}" for label in matchers
                         if label not in allowed]
        problems += [f"label {label!r} in {expr!r}" for label in grouping_labels(expr)
                     if label not in every]
    return problems
