"""The alerts: promtool checks the rule file and runs its unit tests (rules_test.yaml);
the PrometheusRule carries exactly the same groups; every alert follows the conventions an
on-call engineer relies on; and the unit tests are strict enough to catch a broken rule.

promtool comes from tests/monitoring/promtool.sh (Debian's prometheus package, unpacked
into $BGPD_CACHE); these tests fail, not skip, without it.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess

import pytest
import yaml

from tests.monitoring import monitoring as m

SEVERITIES = {"critical", "warning", "info"}
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def seconds(duration: str) -> int:
    match = _DURATION.match(str(duration))
    assert match and any(match.groups()), f"unsupported duration {duration!r}"
    h, mins, s = (int(g or 0) for g in match.groups())
    return h * 3600 + mins * 60 + s


def run_promtool(*args: str, cwd=m.HERE) -> subprocess.CompletedProcess:
    return subprocess.run([m.promtool(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=m.PROMTOOL_TIMEOUT_S)


def test_promtool_check_rules():
    proc = run_promtool("check", "rules", str(m.RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(m.rule_exprs())} rules found" in proc.stdout + proc.stderr


def test_promtool_unit_tests():
    proc = run_promtool("test", "rules", m.RULES_TEST.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ the PrometheusRule


def prometheus_rule_text() -> str:
    """prometheus-rules.yaml as it must be: its own header, then rules.yaml's groups
    (comments included) indented under `spec:`."""
    head, sep, _ = m.PROMETHEUS_RULE.read_text().partition("\nspec:\n")
    assert sep, f"{m.PROMETHEUS_RULE} has no top-level `spec:`"
    rules = m.RULES.read_text()
    start = re.search(r"^groups:", rules, re.M)
    assert start, f"{m.RULES} has no top-level `groups:`"
    body = "".join("  " + line if line.strip() else line
                   for line in rules[start.start():].splitlines(keepends=True))
    return head + sep + body


def test_prometheus_rule_is_the_rule_file():
    want = prometheus_rule_text()
    if os.environ.get("BGPD_UPDATE_GOLDEN") == "1":
        m.PROMETHEUS_RULE.write_text(want)
    assert m.PROMETHEUS_RULE.read_text() == want, (
        f"{m.PROMETHEUS_RULE.name} differs from {m.RULES.name}: regenerate it with "
        f"BGPD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/monitoring")
    doc = yaml.safe_load(m.PROMETHEUS_RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == "bgpd-system"
    assert doc["spec"] == m.rule_file()


# ------------------------------------------------------------------ conventions


def test_alert_conventions():
    names = [a["alert"] for a in m.alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for alert in m.alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Bgpd[A-Z][A-Za-z]+", name), name
        assert seconds(alert.get("for", "")) > 0, f"{name}: no `for:`, pages on one bad scrape"
        assert alert["labels"]["severity"] in SEVERITIES, name
        ann = alert["annotations"]
        for key in ("summary", "description", "runbook"):
            assert str(ann.get(key, "")).strip(), f"{name}: no {key} annotation"
        assert "\n" not in ann["summary"], f"{name}: a summary is one line"


def test_session_down_names_its_duration():
    """The alert says how long the session has been down, and says it right."""
    (alert,) = [a for a in m.alerts() if a["alert"] == "BgpdPeerSessionDown"]
    minutes = seconds(alert["for"]) // 60
    assert f"{minutes} minutes" in alert["annotations"]["summary"]
    assert f"{minutes} minutes" in alert["annotations"]["description"]


@functools.cache
def rule_tests() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the file is long: libyaml
    return yaml.load(m.RULES_TEST.read_text(), Loader=loader)


def test_every_alert_is_unit_tested():
    """Each alert has a case where it fires, and a case where it does not although its
    `for` has had time to run out (a recovery, or data that must not alert)."""
    fires, silent = set(), set()
    for alert in m.alerts():
        wait = seconds(alert["for"])
        for group in rule_tests()["tests"]:
            for case in group.get("alert_rule_test", []):
                if case["alertname"] != alert["alert"]:
                    continue
                if case.get("exp_alerts"):
                    fires.add(alert["alert"])
                elif seconds(case["eval_time"]) > wait:
                    silent.add(alert["alert"])
    names = {a["alert"] for a in m.alerts()}
    assert names - fires == set(), "alerts never seen firing in rules_test.yaml"
    assert names - silent == set(), "alerts never seen silent (after their `for`)"


def test_unit_tests_name_only_existing_alerts():
    names = {a["alert"] for a in m.alerts()}
    used = {c["alertname"] for g in rule_tests()["tests"] for c in g.get("alert_rule_test", [])}
    assert used <= names, used - names


# ------------------------------------------------------------------ the tests catch breakage


def isolated(alert: dict, tmp_path, mutate=None) -> subprocess.CompletedProcess:
    """Run the unit tests of one alert against a rule file holding only that alert
    (optionally mutated)."""
    rule = copy.deepcopy(alert)
    if mutate:
        mutate(rule)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "one", "rules": [rule]}]}))
    spec = copy.deepcopy(rule_tests())
    groups = []
    for group in spec["tests"]:
        cases = [c for c in group.get("alert_rule_test", [])
                 if c["alertname"] == alert["alert"]]
        if cases:
            groups.append({**group, "alert_rule_test": cases})
    tests = tmp_path / "rules_test.yaml"
    tests.write_text(yaml.safe_dump({**spec, "rule_files": [str(rules)], "tests": groups}))
    return run_promtool("test", "rules", str(tests), cwd=tmp_path)


def never_fires(rule):
    rule["expr"] = f"({rule['expr']}) and on () (vector(0) == 1)"


def fires_at_once(rule):
    rule["for"] = "0s"


@pytest.mark.parametrize("alert", m.alerts(), ids=lambda a: a["alert"])
def test_unit_tests_catch_a_broken_alert(alert, tmp_path):
    """The unit tests of each alert fail when the alert never fires, and when it fires
    without waiting for its `for:` (they pin the timing, not only the expression)."""
    proc = isolated(alert, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for mutate in (never_fires, fires_at_once):
        proc = isolated(alert, tmp_path, mutate)
        assert proc.returncode != 0, f"{alert['alert']}: the tests pass with {mutate.__name__}"
        assert "FAILED" in proc.stdout + proc.stderr


@pytest.mark.parametrize("mutate", [
    # a new session counts the peer's whole table again: not a burst
    lambda r: r.update(expr="increase(bgpd_peer_routes_refused[15m]) > 1000"),
    # a fabric's steady churn of routes the import rules refuse: not a burst either
    lambda r: r.update(expr=r["expr"].replace("> 1000", "> 0")),
], ids=["without-uptime", "any-increase"])
def test_routes_refused_tests_pin_what_is_no_burst(mutate, tmp_path):
    """The refused-routes gauge grows with every filtered UPDATE and restarts with the
    session; the unit tests fail if the alert stops telling those apart from a leak."""
    (alert,) = [a for a in m.alerts() if a["alert"] == "BgpdPeerRoutesRefused"]
    proc = isolated(alert, tmp_path, mutate)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr
