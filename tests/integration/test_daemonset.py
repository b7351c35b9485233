"""The DaemonSet manifests against a real kube-apiserver (v1.36, built by
tests/controlplane/build.sh), and the pod's capability design against the real kernel.

- server-side dry run of everything the base and the example and lab overlays render: schema
  validation, defaulting and admission (PriorityClass, PodSecurity) as a cluster does it
  (tests/e2e/test_kubelet.py then runs the lab overlay on real kubelets);
- the ServiceAccount's effective permissions after a real apply (SubjectAccessReview);
- a non-root process, under no_new_privs, given NET_ADMIN only through a file capability on
  a copy of the Python interpreter (what the image does), can program routes, and cannot
  without it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.controlplane.controlplane import ControlPlane
from tests.integration.kube_fixtures import start_control_plane
from tests.netns import NetNS
from tests.unit.test_daemonset_policy import (
    DAEMONSET,
    LAB_OVERLAY,
    OVERLAY,
    kubectl,
    kustomize_args,
)

pytestmark = pytest.mark.integration

KUBECTL_TIMEOUT_S = 120
SA = "system:serviceaccount:bgpd-system:bgpd"


@pytest.fixture(scope="module")
def cp():
    # No controller-manager: nothing here needs controllers, and it starts faster.
    plane = start_control_plane(controllers=None)
    try:
        yield plane
    finally:
        plane.close()


def run_kubectl(cp: ControlPlane, *args: str, stdin: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [kubectl(), f"--kubeconfig={cp.kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S,
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def rendered(folder: Path) -> str:
    proc = subprocess.run(kustomize_args(folder), capture_output=True, text=True,
                          timeout=KUBECTL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def namespace(cp):
    """Dry-run of namespaced objects needs their namespace to exist: create it for real."""
    ns = [d for d in yaml.safe_load_all(rendered(DAEMONSET)) if d and d["kind"] == "Namespace"]
    run_kubectl(cp, "apply", "-f", "-", stdin=yaml.safe_dump_all(ns))
    return ns[0]["metadata"]["name"]


def _dry_run(cp: ControlPlane, manifest: str) -> None:
    proc = run_kubectl(cp, "apply", "--dry-run=server", "-o", "name", "-f", "-", stdin=manifest)
    names = proc.stdout.split()
    want = [d for d in yaml.safe_load_all(manifest) if d]
    assert len(names) == len(want), proc.stdout
    # Deprecations, unknown fields or PodSecurity violations come back as warnings.
    assert "Warning" not in proc.stderr, proc.stderr


def test_base_passes_server_side_dry_run(cp, namespace):
    proc = run_kubectl(cp, "apply", "--dry-run=server", "-k", str(DAEMONSET))
    assert "(server dry run)" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
    _dry_run(cp, rendered(DAEMONSET))


@pytest.mark.parametrize("overlay", [OVERLAY, LAB_OVERLAY], ids=["example", "lab"])
def test_overlay_passes_server_side_dry_run(cp, namespace, overlay):
    _dry_run(cp, rendered(overlay))


def test_pod_template_is_admitted_by_pod_security_and_priority(cp, namespace):
    """The DaemonSet's dry run does not admit its pod template: create the Pod itself."""
    ds = next(d for d in yaml.safe_load_all(rendered(DAEMONSET))
              if d and d["kind"] == "DaemonSet")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bgpd-template-check", "namespace": namespace},
        "spec": {**ds["spec"]["template"]["spec"], "nodeName": "node1"},
    }
    # The ServiceAccount must exist for Pod admission.
    run_kubectl(cp, "apply", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "bgpd", "namespace": namespace}}))
    proc = run_kubectl(cp, "apply", "--dry-run=server", "-o", "json", "-f", "-",
                       stdin=yaml.safe_dump(pod))
    assert "Warning" not in proc.stderr, proc.stderr
    admitted = yaml.safe_load(proc.stdout)
    # The Priority admission plugin resolved system-node-critical to its value.
    assert admitted["spec"]["priority"] == 2000001000


def test_service_account_permissions(cp, namespace):
    run_kubectl(cp, "apply", "-k", str(DAEMONSET))

    def can(*args: str) -> bool:
        proc = run_kubectl(cp, "auth", "can-i", f"--as={SA}", *args, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"can-i {args}: {proc.stdout}{proc.stderr}"
        return answer == "yes"

    allowed = [
        ("list", "nodes"), ("watch", "nodes"), ("get", "nodes"),
        ("list", "pods", "--all-namespaces"), ("watch", "services", "--all-namespaces"),
        ("list", "endpointslices.discovery.k8s.io", "--all-namespaces"),
        ("create", "events", "-n", "default"),
        ("create", "bgpnodestatuses.bgpd.dev"), ("patch", "bgpnodestatuses.bgpd.dev", "--subresource=status"),
    ]
    denied = [
        # Granted once, never used (the e2e audit proves it): gone from rbac.yaml.
        ("get", "secrets/bgpd-bgp-passwords", "-n", "bgpd-system"),
        ("patch", "events", "-n", "default"), ("create", "events.events.k8s.io", "-n", "x"),
        ("get", "pods", "-n", "default"), ("get", "services", "-n", "default"),
        ("get", "bgpnodestatuses.bgpd.dev"),
        ("list", "secrets", "-n", "bgpd-system"),
        ("watch", "secrets", "-n", "bgpd-system"),
        ("get", "secrets/other", "-n", "bgpd-system"),
        ("get", "secrets/bgpd-bgp-passwords", "-n", "kube-system"),
        ("update", "secrets/bgpd-bgp-passwords", "-n", "bgpd-system"),
        ("list", "secrets", "--all-namespaces"),
        ("get", "configmaps", "-n", "kube-system"),
        ("create", "pods", "-n", "default"), ("delete", "pods", "-n", "default"),
        ("patch", "nodes"), ("update", "nodes/status"), ("update", "services/status", "-n", "x"),
        ("delete", "services", "-n", "default"), ("create", "serviceaccounts/token", "-n", "x"),
        ("create", "clusterrolebindings"), ("escalate", "clusterroles"), ("impersonate", "users"),
    ]
    wrong = [("should be allowed", a) for a in allowed if not can(*a)]
    wrong += [("should be denied", d) for d in denied if can(*d)]
    assert not wrong, wrong


# ------------------------------------------------------------------ capabilities

CAP_NET_ADMIN = 12
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
PROBE = r"""
import socket, struct, sys
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
eff = int(open("/proc/self/status").read().split("CapEff:")[1].split()[0], 16)
print("uid", __import__("os").getuid(), "capeff", hex(eff))
s = socket.socket()
key = b"secret"
sa = struct.pack("HH4s120x", socket.AF_INET, 0, socket.inet_aton("127.0.0.2"))
s.setsockopt(socket.IPPROTO_TCP, 14, sa + struct.pack("xxHxxxx", len(key)) + key.ljust(80, b"\0"))
print("md5sig ok")
with IPRoute() as ipr:
    try:
        ipr.route("add", dst="10.99.0.0/24", oif=1, proto=205)
    except NetlinkError as exc:
        print("route add failed", exc.code)
        sys.exit(1)
print("route add ok")
"""


def _setpriv(interpreter: str, *, bounding: str = "-all,+net_admin") -> list[str]:
    """Roughly what the runtime does for the pod: uid/gid 65532, no_new_privs, the
    capability sets cut down to `capabilities.add`, then exec the interpreter."""
    return ["setpriv", "--reuid=65532", "--regid=65532", "--clear-groups",
            "--inh-caps=-all", f"--bounding-set={bounding}", "--no-new-privs",
            interpreter, "-c", PROBE]


@pytest.fixture(scope="module")
def interpreters():
    if os.geteuid() != 0:
        pytest.fail("the capability test needs root (file capabilities, netns)", pytrace=False)
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed", pytrace=False)
    tmp = Path(tempfile.mkdtemp(prefix="bgpd-caps-"))
    try:
        tmp.chmod(0o755)
        real = os.path.realpath(sys.executable)
        plain, capped = tmp / "python-plain", tmp / "python-netadmin"
        shutil.copy2(real, plain)
        shutil.copy2(real, capped)
        # `setcap cap_net_admin+ep`, without needing libcap's tools: vfs_cap_data rev 2.
        os.setxattr(capped, "security.capability", struct.pack(
            "<5I", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << CAP_NET_ADMIN, 0, 0, 0))
        yield str(plain), str(capped)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_in(ns: NetNS, argv: list[str]) -> subprocess.CompletedProcess:
    # pyroute2 from this virtualenv; the user 65532 only needs to read it.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": site,
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(["ip", "netns", "exec", ns.name, *argv], capture_output=True,
                          text=True, timeout=60, env=env, cwd="/")


def test_non_root_gets_net_admin_only_from_the_file_capability(interpreters):
    plain, capped = interpreters
    with NetNS("caps") as ns:
        ok = _run_in(ns, _setpriv(capped))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "capeff 0x1000" in ok.stdout and "route add ok" in ok.stdout
        # capabilities.add alone: nothing effective for a non-root user, routes refused;
        # TCP MD5 still works (it needs no capability, so neither does ExaBGP).
        denied = _run_in(ns, _setpriv(plain))
        assert denied.returncode == 1, denied.stdout + denied.stderr
        assert "capeff 0x0" in denied.stdout and "md5sig ok" in denied.stdout
        assert "route add failed 1" in denied.stdout
        # Pod without NET_ADMIN in `add`: the capped interpreter refuses to start at all.
        refused = _run_in(ns, _setpriv(capped, bounding="-all"))
        assert refused.returncode != 0 and "route add ok" not in refused.stdout
