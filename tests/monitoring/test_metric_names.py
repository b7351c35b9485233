"""Every bgpd_ series the alerts and the dashboard query exists in what the agent exports.

The exported names come from scraping the real collector (bgpd.metrics) over an agent on
the in-memory fakes; a renamed metric, a counter without its `_total`, a histogram without
`_bucket`, or a label that no series has fails here.
"""

from __future__ import annotations

import warnings

import pytest

from tests.monitoring import monitoring as m

# Families the agent has exported since the dashboard was written: if one disappears from
# the scrape, the fixture below broke (or the metric was dropped: then fix the dashboard).
CORE = {"bgpd_peer_session_up", "bgpd_announced_prefixes", "bgpd_rejections",
        "bgpd_withdrawals_held", "bgpd_reconciles_total", "bgpd_api_healthy",
        "bgpd_reconcile_duration_seconds_bucket", "bgpd_watch_restarts_total",
        "bgpd_ready", "bgpd_build_info", "bgpd_peer_prefixes_refused",
        "bgpd_watch_skipped_total"}


@pytest.fixture(scope="module")
def known() -> dict[str, frozenset[str]]:
    names = dict(m.exported_names())
    missing = CORE - names.keys()
    assert not missing, f"the scrape lacks {sorted(missing)}:\n{m.scrape()}"
    for name in m.recorded_names():
        names.setdefault(name, frozenset())
    return names


def describe(unknown: dict[str, list[str]], known) -> str:
    lines = [f"  {name}: used in {exprs[0]!r}" for name, exprs in sorted(unknown.items())]
    return "\n".join(lines + ["exported: " + ", ".join(sorted(known))])


def test_rules_use_only_exported_metrics(known):
    exprs = m.rule_exprs()
    assert exprs
    unknown = m.unknown_metrics(exprs, known)
    assert not unknown, "rules.yaml uses metrics the agent does not export:\n" + describe(
        unknown, known)


def test_dashboard_uses_only_exported_metrics(known):
    queries = m.dashboard_queries()
    assert queries
    unknown = m.unknown_metrics(queries, known)
    assert not unknown, "the dashboard uses metrics the agent does not export:\n" + describe(
        unknown, known)


def test_labels_exist(known):
    problems = m.unknown_labels(m.rule_exprs() + m.dashboard_queries(), known)
    assert not problems, "labels no series carries:\n  " + "\n  ".join(problems)


def test_every_query_reads_a_bgpd_metric():
    """A query without one would pass the checks above vacuously (e.g. a typo in the prefix)."""
    exprs = m.rule_exprs() + m.dashboard_queries()
    external = [e for e in exprs if not m.metric_names(e)]
    # The only alerts on other series: the scrape itself (readiness is bgpd_ready, so the
    # rules need nothing but Prometheus and the agents: no kube-state-metrics).
    assert all("up{" in e for e in external), external


def test_dashboard_covers_exported_metrics(known):
    """Not a failure (metrics are added while the dashboard is edited elsewhere): a warning
    naming the families no panel shows yet."""
    used = set().union(*(m.metric_names(q) for q in m.dashboard_queries()))
    families = {n.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum")
                .removesuffix("_count") for n in used}
    unshown = sorted(n for n in known if n.removesuffix("_total").removesuffix("_bucket")
                     .removesuffix("_sum").removesuffix("_count") not in families)
    if unshown:
        warnings.warn(f"exported but on no dashboard panel: {', '.join(unshown)}", stacklevel=1)


# ------------------------------------------------------------------ the checker itself

EXPOSITION = """\
# HELP bgpd_up_things Up.
# TYPE bgpd_up_things gauge
bgpd_up_things{peer="a"} 1.0
# HELP bgpd_rounds_total Rounds.
# TYPE bgpd_rounds_total counter
bgpd_rounds_total 3.0
# HELP bgpd_empty_total A counter with no sample yet.
# TYPE bgpd_empty_total counter
# HELP bgpd_took_seconds Took.
# TYPE bgpd_took_seconds histogram
bgpd_took_seconds_bucket{le="1"} 1.0
bgpd_took_seconds_bucket{le="+Inf"} 1.0
bgpd_took_seconds_count 1.0
bgpd_took_seconds_sum 0.5
"""


@pytest.mark.parametrize("expr,unknown", [
    ('sum by (peer) (bgpd_up_things{node=~"$node"})', set()),
    ("rate(bgpd_rounds_total[5m]) + rate(bgpd_empty_total[5m])", set()),
    ("histogram_quantile(0.9, sum by (le) (rate(bgpd_took_seconds_bucket[5m])))", set()),
    ("bgpd_took_seconds_sum / bgpd_took_seconds_count", set()),
    ("rate(bgpd_rounds[5m])", {"bgpd_rounds"}),  # a counter without _total
    ("bgpd_took_seconds > 1", {"bgpd_took_seconds"}),  # a histogram without a suffix
    ("bgpd_up_thing == 0", {"bgpd_up_thing"}),  # a typo
    ("bgpd_up_things unless bgpd_down_things", {"bgpd_down_things"}),
    ('up{job="bgpd_up_thing"} == 0', set()),  # a label value is no metric
    ("label_values(bgpd_gone, node)", {"bgpd_gone"}),
])
def test_checker_finds_unknown_names(expr, unknown):
    assert set(m.unknown_metrics([expr], m.exported(EXPOSITION))) == unknown


@pytest.mark.parametrize("expr,problems", [
    ('max by (peer) (bgpd_up_things{instance=~"$instance"})', 0),
    ('bgpd_up_things{peers="a"}', 1),  # no such label on that series
    ('bgpd_rounds_total{peer="a"}', 1),  # a label of another series
    ("sum by (peers) (bgpd_up_things)", 1),
    ("max without (peer) (bgpd_up_things) * on (node, instance) bgpd_rounds_total", 0),
])
def test_checker_finds_unknown_labels(expr, problems):
    assert len(m.unknown_labels([expr], m.exported(EXPOSITION))) == problems


def test_checker_refuses_names_hidden_in_matchers():
    with pytest.raises(AssertionError):
        m.metric_names('{__name__="bgpd_up_things"}')
