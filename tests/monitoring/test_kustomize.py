"""`kubectl apply -k daemonset/monitoring/` installs what the files say, and fits the
DaemonSet: the PodMonitor selects the agent's pods and port and produces the labels the
alerts and the dashboard use. Rendered with the kubectl tests/controlplane/build.sh builds
(fails, not skips, when it is missing), as test_daemonset_policy.py does.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.controlplane.controlplane import bin_dir
from tests.monitoring import monitoring as m

RENDER_TIMEOUT_S = 60


def kubectl() -> str:
    path = bin_dir() / "kubectl"
    if not os.access(path, os.X_OK):
        pytest.fail(f"kubectl not found at {path}: build it with tests/controlplane/build.sh "
                    f"(`make controlplane`; BGPD_CACHE selects the cache folder)", pytrace=False)
    return str(path)


@functools.cache
def render(folder: Path) -> dict[str, dict]:
    proc = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True,
                          text=True, timeout=RENDER_TIMEOUT_S)
    assert proc.returncode == 0, f"kubectl kustomize {folder} failed:\n{proc.stderr}"
    return {d["kind"]: d for d in yaml.safe_load_all(proc.stdout) if d}


def monitoring() -> dict[str, dict]:
    return render(m.MONITORING)


def test_renders_the_three_objects():
    objs = monitoring()
    assert set(objs) == {"PodMonitor", "PrometheusRule", "ConfigMap"}
    for obj in objs.values():
        assert obj["metadata"]["namespace"] == "bgpd-system"


def test_rule_object_is_the_rule_file():
    assert monitoring()["PrometheusRule"]["spec"] == m.rule_file()


def test_dashboard_config_map():
    cm = monitoring()["ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"][m.DASHBOARD.name]) == m.dashboard()


def test_pod_monitor_fits_the_daemonset():
    pm = monitoring()["PodMonitor"]["spec"]
    ds = render(m.ROOT / "daemonset")["DaemonSet"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert pm["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for c in ds["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    (endpoint,) = pm["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint.get("path", "/metrics") == "/metrics"
    # job="bgpd": the value of the pod label named by jobLabel, which the alerts select on
    assert labels[pm["jobLabel"]] == "bgpd"
    assert 'up{job="bgpd"}' in " ".join(m.rule_exprs())
    # node: the label the dashboard's $node and the alerts' texts use
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabel["node"] == ["__meta_kubernetes_pod_node_name"]


def test_not_in_the_base():
    """Monitoring is opt-in: the base must apply on clusters without the operator's CRDs."""
    kinds = set(render(m.ROOT / "daemonset"))
    assert not kinds & {"PodMonitor", "PrometheusRule"}
