"""The ValidatingAdmissionPolicy rendered from a config (bgpd/admission.py): the objects'
shape, the pools, limits and prefix inlined into the CEL, and the shipped
daemonset/admission/policy.yaml being exactly what the command prints for the base config.
What the CEL does is checked against a real kube-apiserver in
tests/integration/test_admission.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bgpd import admission
from bgpd.admission import POD_POLICY, SERVICE_POLICY, claims_immutable, render_policy
from bgpd.cli import main
from bgpd.config import Config, load_config, parse_config
from bgpd.kube import convert
from bgpd.policy import annotations as ann
from tests.unit.test_layers import FORBIDDEN, imported_modules

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = "daemonset/base/bgpd.yaml"  # relative to ROOT, as in the shipped header
SHIPPED = ROOT / "daemonset" / "admission" / "policy.yaml"
REGENERATE = f"bgpd admission-policy {BASE_CONFIG} > daemonset/admission/policy.yaml"

MINIMAL = "bgp: {asn: 64512}\n"

TENANTS = MINIMAL + """
pools:
  - name: team-a
    cidrs: [198.51.100.0/26, "2001:db8:a::/64"]
    allow: [external-ip, pod-external-ip]
    namespaces: [team-a]
  - name: tenant-b
    cidrs: [198.51.100.64/26]
    allow: [external-ip]
    namespace_selector: {tenant: b, env: prod}
  - name: pair
    cidrs: [198.51.100.192/27]
    allow: [external-ip, pod-external-ip]
    namespaces: [team-c, team-d]
  - name: mixed
    cidrs: [198.51.100.224/27]
    allow: [pod-external-ip]
    namespaces: [team-e]
    namespace_selector: {tenant: e}
  - name: shared
    cidrs: [198.51.100.128/26, "2001:db8:5::/48"]
    allow: [external-ip, pod-external-ip]
  - name: lb
    cidrs: [203.0.113.0/24]
    allow: [load-balancer-ip]
"""


def config(text: str) -> Config:
    return parse_config(yaml.safe_load(text))


def objects_of(text: str) -> list[dict]:
    return render_policy(config(text))


def spec(objs: list[dict], name: str) -> dict:
    (found,) = [o for o in objs
                if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == name]
    return found["spec"]


def variables(objs: list[dict], name: str) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in spec(objs, name)["variables"]}


def expressions(objs: list[dict], name: str) -> list[str]:
    """Every CEL expression of one policy."""
    s = spec(objs, name)
    return ([v["expression"] for v in s["variables"]]
            + [x for v in s["validations"] for x in (v["expression"], v["messageExpression"])])


def cel(objs: list[dict], name: str) -> str:
    return "\n".join(expressions(objs, name))


# ------------------------------------------------------------------ shape


def test_two_policies_each_with_its_binding():
    objs = objects_of(TENANTS)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ValidatingAdmissionPolicy", SERVICE_POLICY),
        ("ValidatingAdmissionPolicyBinding", SERVICE_POLICY),
        ("ValidatingAdmissionPolicy", POD_POLICY),
        ("ValidatingAdmissionPolicyBinding", POD_POLICY),
    ]
    for obj in objs:
        assert obj["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "bgpd"
    for name, resource in ((SERVICE_POLICY, "services"), (POD_POLICY, "pods")):
        s = spec(objs, name)
        assert s["failurePolicy"] == "Fail"
        assert s["matchConstraints"] == {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "resources": [resource],
            "operations": ["CREATE", "UPDATE"]}]}
        assert "paramKind" not in s
        for v in s["validations"]:
            assert set(v) == {"expression", "message", "messageExpression", "reason"}
            assert v["reason"] == "Invalid"
            # The static message is what the API server falls back to: one line.
            assert v["message"] and "\n" not in v["message"]
    bindings = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    for b in bindings:
        assert b["spec"] == {"policyName": b["metadata"]["name"], "validationActions": ["Deny"]}


@pytest.mark.parametrize("name", [SERVICE_POLICY, POD_POLICY])
def test_variables_only_use_earlier_variables(name):
    """The API server resolves `variables.x` only for variables declared before."""
    declared: set[str] = set()
    s = spec(objects_of(TENANTS), name)
    for v in s["variables"]:
        used = set(re.findall(r"variables\.(\w+)", v["expression"]))
        assert used <= declared, f"{v['name']} uses {used - declared} before declaring it"
        assert v["name"] not in declared
        declared.add(v["name"])
    for v in s["validations"]:
        for text in (v["expression"], v["messageExpression"]):
            assert set(re.findall(r"variables\.(\w+)", text)) <= declared


def _unbalanced(text: str) -> str:
    """"" when brackets pair up and strings close outside string literals, else what not."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'":
            end = i + 1
            while end < len(text) and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                return f"unterminated string at {i}"
            i = end
        elif ch in "([{":
            stack.append(ch)
        elif ch in closing:
            if not stack or stack.pop() != closing[ch]:
                return f"unbalanced {ch!r} at {i}"
        i += 1
    return f"unclosed {stack}" if stack else ""


@pytest.mark.parametrize("name", [SERVICE_POLICY, POD_POLICY])
@pytest.mark.parametrize("text", [TENANTS, MINIMAL,
                                  MINIMAL + "limits: {max_communities: 1000}\n"],
                         ids=["tenants", "no-pools", "big-limits"])
def test_cel_is_well_formed(name, text):
    for expression in expressions(objects_of(text), name):
        assert not _unbalanced(expression), expression


# ------------------------------------------------------------------ pools


def test_every_pool_is_inlined_for_both_uses():
    objs = objects_of(TENANTS)
    pools = config(TENANTS).pools
    for name, use in ((SERVICE_POLICY, "external-ip"), (POD_POLICY, "pod-external-ip")):
        text = variables(objs, name)["badExternalIPs"]
        for pool in pools:
            for cidr in pool.cidrs:
                assert f'cidr("{cidr}").containsIP(ip(x))' in text
            if use not in pool.allow:
                assert f"pool '{pool.name}', which does not allow {use}" in text
        assert "isIP(x)" in text and "isGlobalUnicast()" in text
    # The message for an address in no pool lists the pools that would do.
    assert ("pools allowing external-ip: team-a 198.51.100.0/26, 2001:db8:a::/64; "
            "tenant-b 198.51.100.64/26; pair 198.51.100.192/27; shared "
            "198.51.100.128/26, 2001:db8:5::/48" in variables(objs, SERVICE_POLICY)
            ["badExternalIPs"])


def test_a_pool_of_one_namespace_admits_it_and_allows_edits():
    text = variables(objects_of(TENANTS), SERVICE_POLICY)["badExternalIPs"]
    assert 'variables.ns in ["team-a"]' in text
    assert "which admits only namespace team-a" in text
    assert "shared pool 'team-a'" not in text  # one tenant: nobody to take an address from
    assert not claims_immutable(config(TENANTS).pools[0])


def test_a_selector_pool_matches_every_label():
    text = variables(objects_of(TENANTS), SERVICE_POLICY)["badExternalIPs"]
    assert ('("env" in variables.nsLabels && variables.nsLabels["env"] == "prod" && '
            '"tenant" in variables.nsLabels && variables.nsLabels["tenant"] == "b")' in text)
    assert "which admits only namespaces labelled env=prod,tenant=b" in text
    # A selector can match any number of namespaces: its claims are frozen after creation.
    assert "shared pool 'tenant-b': the oldest claim wins" in text
    assert variables(objects_of(TENANTS), SERVICE_POLICY)["nsLabels"] == \
        "namespaceObject.metadata.?labels.orValue({})"


def test_names_and_selector_together_admit_either():
    text = variables(objects_of(TENANTS), POD_POLICY)["badExternalIPs"]
    assert ('variables.ns in ["team-e"] || ("tenant" in variables.nsLabels && '
            'variables.nsLabels["tenant"] == "e")' in text)
    assert "admits only namespace team-e or namespaces labelled tenant=e" in text


def test_shared_pools_refuse_new_addresses_on_update_only():
    pools = {p.name: p for p in config(TENANTS).pools}
    assert [n for n, p in pools.items() if claims_immutable(p)] == [
        "tenant-b", "pair", "mixed", "shared", "lb"]
    for name, kind in ((SERVICE_POLICY, "Service"), (POD_POLICY, "Pod")):
        text = variables(objects_of(TENANTS), name)["badExternalIPs"]
        for pool in ("pair", "shared"):
            assert (f'request.operation == "UPDATE" ? "cannot add " + x + " to an existing '
                    f'{kind}: create a new {kind} to claim a new address in shared pool '
                    f"'{pool}': the oldest claim wins\"" in text)
        # Only entries the request adds are judged; the same IP written otherwise is kept.
        assert text.startswith("variables.externalIPs.filter(x, !variables.oldExternalIPs"
                               ".exists(o, o == x ||\n  (isIP(o) && isIP(x) && ip(o) == ip(x))))")
    # an open pool: no namespace check at all
    assert 'cidr("198.51.100.128/26").containsIP(ip(x)) || cidr("2001:db8:5::/48")' \
           '.containsIP(ip(x)) ? (request.operation' in text


def test_without_pools_every_address_is_refused():
    for name in (SERVICE_POLICY, POD_POLICY):
        text = variables(objects_of(MINIMAL), name)["badExternalIPs"]
        assert re.findall(r'cidr\("[^"]*"\)', text) == ['cidr("240.0.0.0/4")']
        assert "lies in no bgpd pool (no pool allows" in text


def test_a_service_address_needs_a_cluster_ip_of_its_family():
    """bgpd.policy.services: kube-proxy forwards only families the Service has a ClusterIP
    of (wrong-family); headless and ExternalName Services are ignored by the agent."""
    v = variables(objects_of(TENANTS), SERVICE_POLICY)
    assert "!(ip(x).family() in variables.families)" in v["badExternalIPs"]
    assert 'c.contains(":") ? 6 : 4' in v["families"]
    assert '== "ExternalName"' in v["families"] and '== "None" ? [4, 6]' in v["families"]
    # A pod's own addresses are known only once the kubelet reports them: not judged here.
    assert "families" not in cel(objects_of(TENANTS), POD_POLICY)


def test_pod_addresses_are_parsed_as_the_agent_splits_them():
    v = variables(objects_of(TENANTS), POD_POLICY)
    assert v["externalIPs"] == (
        '"bgpd.dev/external-ips" in variables.parsed ?\n'
        '  variables.anns["bgpd.dev/external-ips"].split(",").map(i, i.trim())'
        '.filter(i, i != "") : []')


# ------------------------------------------------------------------ annotations, limits


def test_annotation_keys_come_from_the_agent():
    objs = objects_of(TENANTS)
    for name, known in ((SERVICE_POLICY, ann.SERVICE_KEYS), (POD_POLICY, ann.POD_KEYS)):
        (check,) = [v for v in spec(objs, name)["validations"]
                    if v["expression"].startswith("variables.changed.all(")]
        listed = re.search(r"k in (\[.*\])\)", check["expression"]).group(1)
        assert yaml.safe_load(listed) == sorted(f"bgpd.dev/{k}" for k in known)
        assert f"(known: {', '.join(sorted(known))})" in check["messageExpression"]
        assert 'k.startsWith("bgpd.dev/")' in variables(objs, name)["changed"]


def test_limits_are_inlined():
    objs = objects_of(MINIMAL + "limits: {max_communities: 5, max_large_communities: 7}\n")
    expressions = [v["expression"] for v in spec(objs, SERVICE_POLICY)["validations"]]
    assert "variables.communities.size() <= 5" in expressions
    assert "variables.largeCommunities.size() <= 7" in expressions
    assert "variables.tooLong.size() == 0" in expressions
    assert "variables.anns[k].size() > 2048" in variables(objs, SERVICE_POLICY)["tooLong"]
    assert "variables.externalIPs.size() <= 64 ||" in "\n".join(expressions)
    text = cel(objs, SERVICE_POLICY)
    assert 'matches("^0*[0-9]{1,5}$") && int(p.trim()) <= 65535' in text  # community part
    assert 'matches("^0*[0-9]{1,10}$") && int(p.trim()) <= 4294967295' in text  # large
    assert "int(variables.med) <= 4294967295" in text


def test_the_message_size_check_appears_only_when_the_limits_allow_too_much():
    def size_checks(text: str) -> list[dict]:
        return [v for v in spec(objects_of(text), SERVICE_POLICY)["validations"]
                if "4096" in v["expression"]]

    assert not size_checks(MINIMAL)  # 32 + 32 fit a BGP message with room to spare
    (check,) = size_checks(MINIMAL + "limits: {max_communities: 1000}\n")
    assert "-byte UPDATE, over the 4096-byte BGP message" in check["messageExpression"]
    assert '!variables.changed.exists(k, k in ["bgpd.dev/communities"' in check["expression"]


def test_another_annotation_prefix():
    objs = objects_of(MINIMAL + "annotation_prefix: bgp.example.org\n")
    for name in (SERVICE_POLICY, POD_POLICY):
        text = cel(objs, name)
        assert "bgpd.dev" not in text
        assert 'k.startsWith("bgp.example.org/")' in text
    assert '"bgp.example.org/external-ips" in variables.parsed' in cel(objs, POD_POLICY)


def test_the_agents_bounds_are_the_same_numbers():
    assert admission.MAX_ANNOTATION_VALUE == convert.MAX_ANNOTATION_VALUE
    assert admission.MAX_ADDRESSES == convert.MAX_ADDRESSES


def test_the_module_stays_pure():
    path = Path(admission.__file__)
    hits = {m for m in imported_modules(path)
            if m == "yaml" or any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
    assert not hits, f"bgpd/admission.py imports {sorted(hits)}"


# ------------------------------------------------------------------ shipped file, CLI


def test_the_shipped_policy_is_the_base_configs(monkeypatch, capsys):
    shipped = [d for d in yaml.safe_load_all(SHIPPED.read_text()) if d]
    assert shipped == render_policy(load_config(str(ROOT / BASE_CONFIG))), \
        f"{SHIPPED.relative_to(ROOT)} is out of date; from the repository root: {REGENERATE}"
    monkeypatch.chdir(ROOT)
    assert main(["admission-policy", BASE_CONFIG]) == 0
    assert capsys.readouterr().out == SHIPPED.read_text(), \
        f"{SHIPPED.relative_to(ROOT)} is not what the command prints: {REGENERATE}"


def test_the_shipped_file_says_how_to_regenerate_it():
    text = SHIPPED.read_text()
    assert text.startswith("# bgpd admission policy")
    assert f"#   bgpd admission-policy {BASE_CONFIG}\n" in text
    assert "Do not\n# edit" in text
    kustomization = yaml.safe_load((SHIPPED.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["policy.yaml"]
    assert REGENERATE in (SHIPPED.parent / "kustomization.yaml").read_text()


def test_the_command_refuses_a_broken_config(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "pools: [{name: p, cidrs: [nonsense], allow: [external-ip]}]\n")
    assert main(["admission-policy", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pools[0].cidrs[0]: 'nonsense' is not a CIDR prefix" in captured.err


def test_the_command_prints_loadable_yaml(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(TENANTS)
    assert main(["admission-policy", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(admission.header(str(path)))
    assert [d for d in yaml.safe_load_all(out) if d] == render_policy(config(TENANTS))
    # Multi-line CEL is written as block literals, not folded quoted strings.
    assert "    expression: |-\n      variables.externalIPs.filter(" in out
