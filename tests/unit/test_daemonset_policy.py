"""Least-privilege policy of the DaemonSet manifests, checked on what kustomize renders.

Pure: no cluster. Renders ``daemonset/``, the example overlay and the lab overlay with the
kubectl that tests/controlplane/build.sh builds (fails, not skips, when it is missing) and
checks the objects: the pod's privileges, RBAC, probes, and the agent config in the ConfigMap.
The lab overlay (what tests/e2e/test_kubelet.py runs on real kubelets, and what the README
shows a containerlab user) must differ from the base only where the lab needs it, plus the
optional RBAC of daemonset/optional/network-unavailable (scheduling gated on BGP, on there).
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bgpd.config import ConfigError, parse_config
from bgpd.policy.peers import selects
from tests.controlplane.controlplane import bin_dir

ROOT = Path(__file__).resolve().parents[2]
DAEMONSET = ROOT / "daemonset"
OVERLAY = DAEMONSET / "overlays" / "example"
LAB_OVERLAY = DAEMONSET / "overlays" / "lab"
NETWORK_UNAVAILABLE = DAEMONSET / "optional" / "network-unavailable"
LAB_TOPOLOGY = ROOT / "lab" / "single-tor.clab.yml"
RENDER_TIMEOUT_S = 60

ALLOWED_CAPS = {"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
SECRET_MOUNT = "/etc/bgpd/secrets"


def kubectl() -> str:
    path = bin_dir() / "kubectl"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"kubectl not found at {path}: build it with tests/controlplane/build.sh "
            f"(`make controlplane`; BGPD_CACHE selects the cache folder)",
            pytrace=False,
        )
    return str(path)


def kustomize_args(folder: Path) -> list[str]:
    """`kubectl kustomize` argv: plain, as an operator would run it."""
    return [kubectl(), "kustomize", str(folder)]


@functools.cache
def render(folder: Path) -> tuple[dict, ...]:
    proc = subprocess.run(
        kustomize_args(folder), capture_output=True, text=True, timeout=RENDER_TIMEOUT_S
    )
    assert proc.returncode == 0, f"kubectl kustomize {folder} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


FOLDERS = pytest.mark.parametrize("folder", [DAEMONSET, OVERLAY, LAB_OVERLAY],
                                  ids=["base", "overlay", "lab"])


def of_kind(objs, kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def the(objs, kind: str, name: str) -> dict:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(objs) -> dict:
    return the(objs, "DaemonSet", "bgpd")["spec"]["template"]["spec"]


def containers(objs) -> list[dict]:
    spec = pod_spec(objs)
    return spec["containers"] + spec.get("initContainers", [])


def agent(objs) -> dict:
    (c,) = [c for c in pod_spec(objs)["containers"] if c["name"] == "bgpd"]
    return c


def agent_config(objs):
    cm = the(objs, "ConfigMap", "bgpd-config")
    return parse_config(yaml.safe_load(cm["data"]["bgpd.yaml"]))


# ------------------------------------------------------------------ rendering


@FOLDERS
def test_renders_expected_objects(folder):
    objs = render(folder)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for want in [("Namespace", "bgpd-system"), ("ServiceAccount", "bgpd"),
                 ("ClusterRole", "bgpd"), ("ClusterRoleBinding", "bgpd"),
                 ("ConfigMap", "bgpd-config"), ("DaemonSet", "bgpd"),
                 ("CustomResourceDefinition", "bgpnodestatuses.bgpd.dev")]:
        assert want in kinds
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                             "CustomResourceDefinition"):
            assert o["metadata"].get("namespace") == "bgpd-system", o["metadata"]


def test_overlay_overrides_image_config_and_resources():
    base, overlay = render(DAEMONSET), render(OVERLAY)
    assert agent(overlay)["image"] != agent(base)["image"]
    assert agent(overlay)["image"].startswith("registry.example.net/")
    peers = agent_config(overlay).bgp.peers
    racks = {p.node_selector.get("topology.kubernetes.io/zone") for p in peers}
    assert racks == {"rack1", "rack2"}
    by_rack = {r: {p.address for p in peers if p.node_selector.get("topology.kubernetes.io/zone") == r}
               for r in racks}
    assert not by_rack["rack1"] & by_rack["rack2"], "each rack has its own ToRs"
    mem = agent(overlay)["resources"]["limits"]["memory"]
    assert mem != agent(base)["resources"]["limits"]["memory"]


# What the lab overlay may change in the DaemonSet: the image, never pulled, and the API
# server's address for the in-cluster client (the lab's relay: no kube-proxy there).
LAB_IMAGE = "localhost/bgpd:dev"
LAB_API_ENV = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def test_lab_overlay_changes_only_the_image_and_the_api_address():
    # Copies: render() is cached, and this test edits what it compares.
    base, lab = copy.deepcopy(render(DAEMONSET)), copy.deepcopy(render(LAB_OVERLAY))
    c = agent(lab)
    assert c["image"] == LAB_IMAGE and c["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert {k: env.get(k) for k in LAB_API_ENV} == LAB_API_ENV
    # Take those out: the rest is the base's DaemonSet, securityContext, probes and all.
    ds = the(lab, "DaemonSet", "bgpd")
    del c["image"], c["imagePullPolicy"]
    c["env"] = [e for e in c["env"] if e["name"] not in LAB_API_ENV]
    want = the(base, "DaemonSet", "bgpd")
    base_agent = agent(base)
    del base_agent["image"], base_agent["imagePullPolicy"]
    assert ds == want

    # Every other object but the config is the base's too, plus the optional RBAC the lab
    # turns on (scheduling.network_unavailable in its bgpd.yaml), exactly as that folder has it.
    def others(objs):
        return sorted((o for o in objs if o["kind"] not in ("DaemonSet", "ConfigMap")),
                      key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert others(lab) == others(base + render(NETWORK_UNAVAILABLE))
    assert agent_config(lab).scheduling.network_unavailable is True


def test_lab_overlay_config_fits_the_lab_topology():
    """Each Kubernetes node of lab/single-tor.clab.yml gets exactly its own link's peer,
    selected by the label its kubelet sets (kubernetes.io/hostname), with the ASNs and the
    pod CIDR of the lab's address plan."""
    config = agent_config(render(LAB_OVERLAY))
    topology = yaml.safe_load(LAB_TOPOLOGY.read_text())["topology"]["nodes"]
    k8s_nodes = {name: spec["labels"] for name, spec in topology.items()
                 if spec.get("labels", {}).get("bgpd.dev/role") == "k8s-node"}
    assert k8s_nodes
    for name, labels in k8s_nodes.items():
        peers = [p for p in config.bgp.peers
                 if selects(p.node_selector, {"kubernetes.io/hostname": name})]
        assert [(p.address, p.asn) for p in peers] == [
            (labels["lab.bgpd.dev/peer"], int(labels["lab.bgpd.dev/peer-asn"]))], name
        assert config.bgp.asn == int(labels["lab.bgpd.dev/asn"])
        cidr = ipaddress.ip_network(labels["lab.bgpd.dev/pod-cidr"])
        assert any(cidr.subnet_of(c) for c in config.cluster.pod_cidrs), name
    # A node that is not the lab's matches no peer (announces nothing).
    assert not [p for p in config.bgp.peers
                if selects(p.node_selector, {"kubernetes.io/hostname": "other"})]


# ------------------------------------------------------------------ pod privileges


@FOLDERS
def test_no_privileged_no_host_namespaces_but_host_network(folder):
    spec = pod_spec(render(folder))
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["serviceAccountName"] == "bgpd"
    assert not any(v.get("hostPath") for v in spec.get("volumes", [])), "no hostPath volumes"
    for c in containers(render(folder)):
        sc = c.get("securityContext", {})
        assert sc.get("privileged") is not True, c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert not c.get("ports") or all("hostIP" not in p for p in c["ports"])


@FOLDERS
def test_capabilities_drop_all_and_add_only_network_ones(folder):
    objs = render(folder)
    for c in containers(objs):
        caps = c.get("securityContext", {}).get("capabilities", {})
        assert "ALL" in caps.get("drop", []), c["name"]
        added = set(caps.get("add", []))
        assert added <= ALLOWED_CAPS, f"{c['name']} adds {added - ALLOWED_CAPS}"
    added = set(agent(objs)["securityContext"]["capabilities"]["add"])
    assert added == {"NET_ADMIN"}, "routes need NET_ADMIN; nothing else is used"
    # NET_BIND_SERVICE only matters when the speaker listens below 1024.
    port = agent_config(objs).bgp.listen_port
    assert ("NET_BIND_SERVICE" in added) == (0 < port < 1024)


@FOLDERS
def test_runs_as_non_root_user_and_group(folder):
    objs = render(folder)
    spec = pod_spec(objs)
    sc = {**spec.get("securityContext", {}), **agent(objs)["securityContext"]}
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    # ExaBGP keeps its user only if uid AND gid are non-zero (else it tries to setuid).
    assert sc["runAsGroup"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


@FOLDERS
def test_scheduling_and_lifecycle(folder):
    objs = render(folder)
    ds = the(objs, "DaemonSet", "bgpd")
    spec = pod_spec(objs)
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["priorityClassName"] == "system-node-critical"
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1
    grace = spec["terminationGracePeriodSeconds"]
    gr = [p.graceful_restart for p in agent_config(objs).bgp.peers if p.graceful_restart]
    assert gr and 0 < grace < min(gr), "the ToR must hold routes longer than a pod stops"


@FOLDERS
def test_resources(folder):
    res = agent(render(folder))["resources"]
    assert "memory" in res["requests"] and "cpu" in res["requests"]
    assert "memory" in res["limits"]
    assert "cpu" not in res["limits"], "no CPU limit: throttling delays BGP keepalives"


@FOLDERS
def test_node_name_from_downward_api(folder):
    env = {e["name"]: e for e in agent(render(folder))["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


# ------------------------------------------------------------------ probes


def _port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    (p,) = [p for p in container["ports"] if p["name"] == port]
    return p["containerPort"]


@FOLDERS
def test_probes_hit_the_metrics_address_not_loopback(folder):
    objs = render(folder)
    c = agent(objs)
    metrics = agent_config(objs).http.metrics_address
    host, _, port = metrics.rpartition(":")
    assert host in ("0.0.0.0", "::", "[::]"), "the kubelet probes the node IP"
    for name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = c[name]["httpGet"]
        assert probe["path"] == path
        assert "host" not in probe, "a host of 127.0.0.1 would probe the kubelet's own node"
        assert _port_number(c, probe["port"]) == int(port)
    debug_port = int(agent_config(objs).http.debug_address.rpartition(":")[2])
    assert debug_port != int(port)


# ------------------------------------------------------------------ mounts and config


def _mounts(objs) -> dict[str, dict]:
    vols = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    return {m["mountPath"]: {**m, "volume": vols[m["name"]]} for m in agent(objs)["volumeMounts"]}


@FOLDERS
def test_config_mount_and_args(folder):
    objs = render(folder)
    mounts = _mounts(objs)
    args = agent(objs)["args"]
    assert args[0] == "run"
    config_path = args[args.index("--config") + 1]
    folder_ = str(Path(config_path).parent)
    assert mounts[folder_]["volume"]["configMap"]["name"] == "bgpd-config"
    assert "subPath" not in mounts[folder_], "a subPath mount never sees ConfigMap edits"
    assert Path(config_path).name == "bgpd.yaml"


@FOLDERS
def test_configmap_config_is_valid(folder):
    cm = the(render(folder), "ConfigMap", "bgpd-config")
    try:
        parse_config(yaml.safe_load(cm["data"]["bgpd.yaml"]))
    except ConfigError as exc:
        pytest.fail(f"{folder}: bgpd-config/bgpd.yaml is invalid:\n{exc}")


@FOLDERS
def test_passwords_come_from_the_optional_secret_mount(folder):
    objs = render(folder)
    secret = _mounts(objs)[SECRET_MOUNT]
    assert secret["readOnly"] is True
    vol = secret["volume"]["secret"]
    assert vol["secretName"] == "bgpd-bgp-passwords"
    assert vol["optional"] is True, "the pod must start without the Secret"
    assert vol["defaultMode"] & 0o007 == 0, "no world access to the MD5 keys"
    for peer in agent_config(objs).bgp.peers:
        if peer.password_file:
            assert str(Path(peer.password_file).parent) == SECRET_MOUNT, peer.label


@FOLDERS
def test_writable_scratch_is_emptydir(folder):
    objs = render(folder)
    mounts = _mounts(objs)
    for path in ("/run/bgpd", "/tmp"):
        assert "emptyDir" in mounts[path]["volume"], path
        assert not mounts[path].get("readOnly")
    env = {e["name"]: e.get("value") for e in agent(objs)["env"]}
    assert env["TMPDIR"] in mounts, "the speaker's work dir must be writable"


# ------------------------------------------------------------------ RBAC


def _rules(objs, kind: str) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], r) for o in of_kind(objs, kind) for r in o.get("rules", [])]


def _covers_core(rule: dict) -> bool:
    return bool({"", "*"} & set(rule.get("apiGroups", [])))


@FOLDERS
def test_no_cluster_wide_secret_access(folder):
    for name, rule in _rules(render(folder), "ClusterRole"):
        if _covers_core(rule):
            assert not {"secrets", "*"} & set(rule.get("resources", [])), (name, rule)
    for binding in of_kind(render(folder), "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "a ClusterRole bound in a namespace"


# What the agent may write: core/v1 Events (create: a duplicate is a 409, never a patch),
# and its node's BGPNodeStatus: create the object, patch its status subresource
# (bgpd/kube/statuswriter.py), nothing more. The e2e suite proves each is used
# (tests/e2e/test_single_tor.py::test_rbac_grants_exactly_what_the_agents_used).
ALLOWED_WRITES = {("", "events"): {"create"},
                  ("bgpd.dev", "bgpnodestatuses"): {"create"},
                  ("bgpd.dev", "bgpnodestatuses/status"): {"patch"}}
# And, only in the optional ClusterRole an operator adds on purpose
# (daemonset/optional/network-unavailable, which the lab overlay includes): patch the Node's
# status, for its NetworkUnavailable condition (bgpd/kube/nodecondition.py).
OPTIONAL_WRITES = {"bgpd-network-unavailable": {("", "nodes/status"): {"patch"}}}


@FOLDERS
def test_write_verbs_only_on_events_and_the_node_status(folder):
    objs = render(folder)
    for name, rule in _rules(objs, "ClusterRole") + _rules(objs, "Role"):
        writes = WRITE_VERBS & set(rule["verbs"])
        if writes:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    allowed = ALLOWED_WRITES.get((group, resource), set()) | \
                        OPTIONAL_WRITES.get(name, {}).get((group, resource), set())
                    assert writes <= allowed, (name, group, resource, writes - allowed)
            assert "*" not in rule["verbs"], (name, rule)
        assert not rule.get("nonResourceURLs"), (name, rule)
        assert "*" not in rule.get("resources", []), (name, rule)


@FOLDERS
def test_no_secret_access_at_all(folder):
    """The MD5 keys reach the agent as files of the mounted Secret volume (the kubelet reads
    the Secret): no Role or ClusterRole of the agent names secrets, not even one by name."""
    objs = render(folder)
    for name, rule in _rules(objs, "ClusterRole") + _rules(objs, "Role"):
        assert "secrets" not in rule.get("resources", []), (name, rule)


@FOLDERS
def test_bindings_name_the_agents_service_account(folder):
    objs = render(folder)
    for o in of_kind(objs, "ClusterRoleBinding") + of_kind(objs, "RoleBinding"):
        assert o["subjects"] == [
            {"kind": "ServiceAccount", "name": "bgpd", "namespace": "bgpd-system"}
        ]


# ------------------------------------------------------------------ Containerfile


def test_containerfile_matches_the_manifest():
    text = (DAEMONSET / "Containerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    base = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert len(froms) >= 2 and all(f.startswith("${BASE}") for f in froms)
    assert base and "python:3.11-slim" in base.group(1)  # what a user with a registry gets
    assert re.search(r'^ENTRYPOINT \["bgpd"\]$', text, re.M)
    assert re.search(r'^CMD \["run", "--config", "/etc/bgpd/bgpd.yaml"\]$', text, re.M)
    assert "pip install" in text
    # The image's user is the pod's user, and the interpreter carries NET_ADMIN.
    user = re.findall(r"^USER\s+(\d+):(\d+)$", text, re.M)
    sc = agent(render(DAEMONSET))["securityContext"]
    assert user[-1] == (str(sc["runAsUser"]), str(sc["runAsGroup"]))
    assert "cap_net_admin+ep" in text and "security.capability" in text
    # ExaBGP gets an interpreter without it (bgpd.speaker.launch drops capabilities too).
    assert "BGPD_SPEAKER_PYTHON=/opt/bgpd/bin/python-speaker" in text
    assert (DAEMONSET / "Containerfile.dockerignore").is_file()
