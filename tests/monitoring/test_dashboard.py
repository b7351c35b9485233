"""The Grafana dashboard: importable by Grafana 9+, every panel on the `$datasource`
variable and filtered by `$node`/`$instance`, a sane layout, and PromQL that Prometheus
parses (promtool checks the queries as recording rules, Grafana's variables substituted).
Metric and label names are checked against the agent in test_metric_names.py; the
kustomization that ships it in test_kustomize.py.
"""

from __future__ import annotations

import itertools
import re
import subprocess

import yaml

from tests.monitoring import monitoring as m

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Panel types Grafana 9 ships with (no plugin to install).
CORE_PANELS = {"row", "stat", "timeseries", "table", "state-timeline", "bargauge", "gauge",
               "heatmap", "text"}
# What Grafana puts in place of its variables, for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                     "$node": ".*", "$instance": ".*"}


def variables() -> dict[str, dict]:
    return {v["name"]: v for v in m.dashboard()["templating"]["list"]}


def test_importable():
    dash = m.dashboard()
    assert dash["schemaVersion"] >= 37  # Grafana 9.1+; newer versions migrate it
    assert dash.get("id") is None, "an exported id would clash on import"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"])
    assert dash["title"]
    assert "__inputs" not in dash, "uses the $datasource variable, not import-time inputs"


def test_template_variables():
    vs = variables()
    ds = vs["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("node", "instance"):
        v = vs[name]
        assert v["type"] == "query" and v["datasource"] == DATASOURCE, name
        # "All" must match series without the label too (a scrape that does not set `node`)
        assert v["includeAll"] and v["allValue"] == ".*", name
        assert v["multi"], name
    assert "$node" in vs["instance"]["query"], "instances follow the chosen nodes"


def test_every_panel_uses_the_datasource_variable():
    for panel in m.panels():
        assert panel["type"] in CORE_PANELS, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t.get("datasource") == DATASOURCE, panel["title"]
            assert t["expr"].strip(), panel["title"]


def test_every_selector_follows_node_and_instance():
    for title, t in m.dashboard_targets():
        sels = m.selectors(t["expr"])
        uses = re.findall(r"(?<![A-Za-z0-9_:.$])bgpd_", m.strip_strings(t["expr"]))
        assert len(sels) == len(uses), f"{title}: a bgpd_ series without {{...}}: {t['expr']}"
        for name, matchers in sels:
            assert matchers.get("node") == '=~"$node"', (title, name)
            assert matchers.get("instance") == '=~"$instance"', (title, name)


def test_layout():
    ids = [p["id"] for p in m.panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for p in m.dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert g["h"] > 0 and g["y"] >= 0, p["title"]
        boxes.append((p["title"], g))
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        overlap = (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                   and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"])
        assert not overlap, f"panels overlap: {a!r} and {b!r}"


def test_covers_the_fleet_questions():
    """The questions the dashboard is for, each answered by some panel."""
    exprs = " ".join(t["expr"] for _, t in m.dashboard_targets())
    for needed in ("bgpd_peer_session_up", "bgpd_peer_session_state", "bgpd_announced_prefixes",
                   "bgpd_peer_prefixes_sent", "bgpd_peer_prefixes_received", "bgpd_rejections",
                   "bgpd_withdrawals_held", "bgpd_api_healthy", "bgpd_api_unreachable_seconds_total",
                   "histogram_quantile", "bgpd_reconcile_duration_seconds_bucket",
                   "bgpd_exabgp_restarts_total", "bgpd_kernel_route_failures",
                   "bgpd_watch_restarts_total", "bgpd_watch_relists_total",
                   "bgpd_ready", "bgpd_build_info", "bgpd_peer_prefixes_refused",
                   "bgpd_peer_routes_refused", "bgpd_peer_routes_stale", "bgpd_peers_held",
                   "bgpd_adopted_kernel_routes", "bgpd_watch_skipped_total"):
        assert needed in exprs, needed


def test_queries_parse(tmp_path):
    """Prometheus' own parser, via promtool, on every panel query."""
    rules = []
    for i, (title, t) in enumerate(m.dashboard_targets()):
        expr = t["expr"]
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {t['expr']!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([m.promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=m.PROMTOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
