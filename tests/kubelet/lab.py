"""A Kubernetes cluster on one machine whose nodes are network namespaces, each with a real
kubelet and containerd: what runs the DaemonSet of daemonset/ the way a cluster does.

    with KubeletLab(images=[archive]) as lab:       # ~20 s: control plane, nodes Ready
        lab.kubectl("apply", "-k", "daemonset/overlays/lab")

The layout, the single-tor lab's (lab/single-tor.clab.yml) with real kubelets::

    host netns        etcd, kube-apiserver (127.0.0.1:<port>), kube-controller-manager
                      (with the daemonset and node lifecycle controllers), kube-scheduler
                      (DaemonSet pods are bound by it), the relay (bgpd.lab.relay):
                      127.0.0.1:6443 inside every node namespace -> the API server
    <prefix>-tor      FRR (zebra + bgpd) with lab/single-tor/tor1/frr.conf: eth1 172.20.1.1,
                      eth2 172.20.2.1, eth3 192.0.2.1 (the client side, a veth whose peer
                      stays inside: nothing behind it)
    <prefix>-nodeN    eth1 172.20.N.2/24 to the ToR; containerd and the kubelet, both started
                      with `nsenter --net`, so a hostNetwork pod (the shim's network namespace
                      = containerd's) lands in the node's namespace, and the kubelet probes the
                      pod IP (= the node IP) from there

Why each choice (tests/kubelet/README.md has the findings behind them):

- ``nsenter --net`` rather than ``ip netns exec``: the latter also unshares the mount
  namespace, and the kubelet's volume mounts (tmpfs emptyDirs, ConfigMaps, Secrets) must be
  seen by containerd and runc, started separately.
- One cgroup subtree per kubelet (``cgroupRoot``), made beforehand in every hierarchy.
- containerd's ``restrict_oom_score_adj``: root here lacks CAP_SYS_RESOURCE, so runc cannot
  give the pause container (-998) or a critical pod (-997) a negative oom_score_adj.
- Each node's credentials are ``system:node:<name>``: the Node authorizer and NodeRestriction
  confine the kubelet as in a cluster.
- ``kubectl logs``/``exec`` cannot work (the API server, in the host namespace, has no route
  to a node), so logs are read from each kubelet's ``podLogsDir`` on disk.

Names: every namespace, cgroup and folder is ``bgpdtest-kubelet-<run>-...``, ``<run>`` random
per lab; ``close()`` (always, also after a failed start) stops every process it started,
unmounts, deletes the namespaces, cgroups and folders, and the paths the kubelet and containerd
hard-code whatever their configuration (only when this lab created them), then checks that
nothing is left. A lab left behind by a killed test run is swept at the next start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.controlplane import controlplane as cpm
from tests.integration import routers

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "controlplane" / "build.sh"
TOR_CONF = REPO / "lab" / "single-tor" / "tor1" / "frr.conf"

PREFIX = "bgpdtest-kubelet-"
VAR_LIB = Path("/var/lib")  # each lab: /var/lib/<prefix><run>/<node>/{containerd,kubelet,...}
VAR_RUN = Path("/run")  # each lab: /run/<prefix><run>/<node>/{containerd.sock,containerd}
CGROUP_FS = Path("/sys/fs/cgroup")
OWNER_FILE = "owner.pid"  # in the /run folder: the test process, to sweep a killed run's lab
CREATED_FILE = "created.json"  # there too: which hard-coded paths (below) this lab created

# Paths the kubelet and containerd use whatever their configured roots:
# - /var/lib/kubelet/device-plugins/kubelet.sock (device manager; every kubelet, last wins)
# - /var/log/containers/<pod>_<ns>_<container>-<id>.log symlinks into podLogsDir
# - /run/containerd/s/<hash> (shim sockets; hashed with containerd's address: no clash) and
#   /run/containerd/fifo
# (the Flexvolume folder /usr/libexec/kubernetes/... is moved by volumePluginDir below)
HARDCODED = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/run/containerd"),
             Path("/usr/libexec/kubernetes"))

RUNC = Path("/usr/sbin/runc")  # Debian's runc
CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins (the loopback plugin)
NSENTER = "nsenter"
API_IN_NODE = "127.0.0.1:6443"  # the relay's listener inside each node namespace
# The node lifecycle controller too (not in the default set: there no kubelet renews the
# Nodes' leases): here real kubelets do, and it turns the agents' NetworkUnavailable
# condition into the node.kubernetes.io/network-unavailable:NoSchedule taint.
NODE_CONTROLLERS = (*cpm.DEFAULT_CONTROLLERS, "daemonset-controller",
                    "node-lifecycle-controller")

AGENT_IMAGE = "localhost/bgpd:dev"  # what daemonset/overlays/lab runs
IMAGE_BUILD = REPO / "daemonset" / "image" / "build.sh"
IMAGE_BUILD_TIMEOUT_S = 1800.0  # a first build on a fresh machine: apt-get, mmdebstrap, PyPI
PODMAN = ("podman", "--runtime", "runc")  # as daemonset/image/build.sh runs it

NODE_READY_TIMEOUT_S = 120.0  # kubelet start to Node Ready: ~2-15 s
IMPORT_TIMEOUT_S = 300.0  # ctr images import of the agent image: ~7 s per node
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0

T = TypeVar("T")


# ------------------------------------------------------------------ the node's configuration

CONTAINERD_TOML = """\
# containerd for lab node {node} (config version 3 = containerd 2.x)
version = 3
root = "{root}"
state = "{state}"
# Not needed here, and each would share a host-wide path between the nodes' containerds.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{root}/opt"
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      # built by tests/controlplane/build.sh from the Kubernetes module's pause.c, imported
      sandbox = "{pause}"
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    # No CAP_SYS_RESOURCE here: runc cannot set a negative oom_score_adj (the pause
    # container's -998, a critical pod's -997) and every sandbox would fail to start
    # ("can't get final child's PID from pipe: EOF"). Clamp to containerd's own score.
    restrict_oom_score_adj = true
    cdi_spec_dirs = []
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          SystemdCgroup = false
          # runc's state per node (the default /run/containerd/runc/<ns> is host-wide)
          Root = "{state}/runc"
    [plugins."io.containerd.cri.v1.runtime".cni]
      # Only the loopback plugin: it makes the runtime's network Ready (so is the Node);
      # the DaemonSet's pods use the node's network (hostNetwork).
      bin_dirs = ["{cni_bin}"]
      conf_dir = "{root}/cni"
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""


def kubelet_config(node: Node, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This kernel mounts cgroup v1 (hybrid): kubelets >= 1.35 refuse it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # One kubelet per lab node on one host: each its own cgroup subtree.
        "cgroupRoot": f"/{node.cgroup}",
        "cgroupsPerQOS": True,
        "containerRuntimeEndpoint": f"unix://{node.sock}",
        "imageServiceEndpoint": f"unix://{node.sock}",
        "podLogsDir": str(node.pod_logs),
        "volumePluginDir": str(node.root / "volume-plugins"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "AlwaysAllow"},
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        # ConfigMap/Secret volumes are refreshed at a pod's sync: every 10 s, not 1 min.
        "syncFrequency": "10s",
        # The host's disk and memory are shared with other work: never evict on their
        # account, never garbage-collect the imported images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
    }


# ------------------------------------------------------------------ helpers


def run(*argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S,
        env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def wait_for(check: Callable[[], T], timeout: float, what: str,
             diagnose: Callable[[], str] | None = None, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; LabError with ``diagnose()``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except (LabError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = diagnose() if diagnose else ""
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}"
                           f"{f' (last error: {last})' if last else ''}\n{detail}")
        time.sleep(interval)


class LabError(RuntimeError):
    """The kubelet lab could not be set up, or a wait ran out."""


class ProcessExited(LabError):
    """A component of the lab exited: no point in waiting any longer."""


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL when the test process dies (containerd, kubelets, relay: not the shims,
    which containerd detaches; a killed run's lab is swept at the next start)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT_S)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"--- {self.name} ({self.log}):\n" + "\n".join(text)


@dataclass
class ProcStatus:
    """One process of /proc, as the checks need it."""

    pid: int
    argv: list[str]
    uid: tuple[int, ...]
    gid: tuple[int, ...]
    cap_eff: int
    cap_prm: int
    cap_bnd: int
    cap_amb: int
    no_new_privs: int
    seccomp: int
    netns: str

    @classmethod
    def read(cls, pid: int) -> ProcStatus | None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

        def ids(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in fields[key].split())

        return cls(pid=pid, argv=[a for a in argv.split("\0") if a],
                   uid=ids("Uid"), gid=ids("Gid"),
                   cap_eff=int(fields["CapEff"], 16), cap_prm=int(fields["CapPrm"], 16),
                   cap_bnd=int(fields["CapBnd"], 16), cap_amb=int(fields["CapAmb"], 16),
                   no_new_privs=int(fields["NoNewPrivs"]), seccomp=int(fields["Seccomp"]),
                   netns=netns)


@dataclass
class Node:
    name: str
    index: int  # N in 172.20.N.0/24, as in lab/single-tor.clab.yml
    run_id: str
    netns: str = ""
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.netns = f"{PREFIX}{self.run_id}-{self.name}"

    @property
    def ip(self) -> str:
        return f"172.20.{self.index}.2"

    @property
    def tor_ip(self) -> str:
        return f"172.20.{self.index}.1"

    @property
    def root(self) -> Path:
        return VAR_LIB / f"{PREFIX}{self.run_id}" / self.name

    @property
    def state(self) -> Path:
        return VAR_RUN / f"{PREFIX}{self.run_id}" / self.name

    @property
    def sock(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cgroup(self) -> str:
        return self.netns

    def netns_inode(self) -> str:
        return f"net:[{os.stat(f'/run/netns/{self.netns}').st_ino}]"


# ------------------------------------------------------------------ the lab


def requirements() -> str | None:
    """Why the lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups, mounts)"
    for path in (RUNC, CNI_BIN / "loopback", routers.FRR_DIR / "zebra",
                 routers.FRR_DIR / "bgpd"):
        if not path.exists():
            return f"{path} missing (make deps)"
    if shutil.which(NSENTER) is None:
        return "nsenter (util-linux) missing"
    try:
        cpm.find_binaries()
        node_bin()
    except (cpm.ControlPlaneError, LabError) as exc:
        return str(exc)
    return None


def node_dir() -> Path:
    """Where ``build.sh kubelet`` puts the node's binaries and the pause image."""
    return cpm.bin_dir().parent / "node"


def node_bin() -> Path:
    folder = node_dir() / "bin"
    missing = [b for b in ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr")
               if not os.access(folder / b, os.X_OK)]
    if missing or not (node_dir() / "images" / "pause.tar").is_file():
        raise LabError(f"kubelet binaries missing in {folder} ({', '.join(missing) or 'pause'})"
                       f": build them with `make kubelet` ({BUILD_SCRIPT} kubelet)")
    return folder


def agent_image_archive(folder: Path) -> Path:
    """``make image`` (cached: a few seconds when nothing changed), then the image as an OCI
    archive in ``folder`` for ``ctr images import``. Uncompressed: saved in ~3 s instead of
    ~30 s, and imported as fast (unpacking is the cost)."""
    run("bash", str(IMAGE_BUILD), env=dict(os.environ, BGPD_IMAGE=AGENT_IMAGE),
        timeout=IMAGE_BUILD_TIMEOUT_S)
    archive = folder / "bgpd-dev.oci.tar"
    archive.unlink(missing_ok=True)
    run(*PODMAN, "save", "--quiet", "--uncompressed", "--format", "oci-archive",
        "--output", str(archive), AGENT_IMAGE, timeout=600)
    return archive


def pause_image() -> tuple[Path, str]:
    """The pause image's archive and name (build.sh writes both)."""
    images = node_dir() / "images"
    return images / "pause.tar", (images / "pause.name").read_text().strip()


class KubeletLab:
    """Control plane, optional FRR ToR, and one containerd + kubelet per node namespace."""

    def __init__(self, nodes: Iterable[str] = ("node1", "node2"), *, tor: bool = True,
                 agent_image: bool = True, images: Iterable[Path] = ()) -> None:
        """``agent_image``: build localhost/bgpd:dev (``make image``, cached) and import it
        into every node; ``images``: more OCI/Docker archives to import."""
        self.bin = node_bin()
        self.pause_archive, self.pause = pause_image()
        self.run_id = secrets.token_hex(3)
        self.nodes = {name: Node(name, i, self.run_id) for i, name in enumerate(nodes, 1)}
        self.with_tor = tor
        self.agent_image = agent_image
        self.images = list(images)
        self.tor_netns = f"{PREFIX}{self.run_id}-tor"
        self.tor: routers.Frr | None = None
        # Configs, logs, the control plane's keys: root only.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.run_id}-"))
        self.cp: cpm.ControlPlane | None = None
        self.relay: Process | None = None
        self.timings: dict[str, float] = {}
        self._netns: list[str] = []
        self._cgroups: list[str] = []
        self._created_hardcoded: list[Path] = []
        self._frr_workdir: Path | None = None  # its own: the daemons (user frr) write there

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> KubeletLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> KubeletLab:
        t0 = time.monotonic()
        try:
            sweep_stale()
            self._created_hardcoded = [p for p in HARDCODED if not p.exists()]
            for d in (VAR_LIB / f"{PREFIX}{self.run_id}", VAR_RUN / f"{PREFIX}{self.run_id}"):
                d.mkdir(parents=True)
            run_folder = VAR_RUN / f"{PREFIX}{self.run_id}"
            (run_folder / OWNER_FILE).write_text(str(os.getpid()))
            (run_folder / CREATED_FILE).write_text(
                json.dumps([str(p) for p in self._created_hardcoded]))
            archives = [self.pause_archive, *self.images]
            if self.agent_image:
                t1 = time.monotonic()
                archives.append(agent_image_archive(self.workdir))
                self.timings["agent image (make image, save)"] = time.monotonic() - t1
            t1 = time.monotonic()
            self.cp = cpm.ControlPlane(self.workdir / "cp", controllers=NODE_CONTROLLERS,
                                       scheduler=True, die_with_parent=True)
            self.cp.start()
            self.timings["control plane"] = time.monotonic() - t1
            self._network()
            self._start_relay()
            for node in self.nodes.values():
                self._start_containerd(node)
            t1 = time.monotonic()
            self._import_images(archives)
            self.timings["image import"] = time.monotonic() - t1
            if self.agent_image:
                archives[-1].unlink()  # ~230 MB, unpacked in every node now
            for node in self.nodes.values():
                self._start_kubelet(node)
            for node in self.nodes.values():
                self.wait_node_ready(node.name)
            self.timings["lab up, nodes Ready"] = time.monotonic() - t0
        except BaseException as exc:
            try:
                self.close()
            except LabError as cleanup:  # report it, but the start's failure comes first
                exc.add_note(str(cleanup))
            raise
        return self

    def close(self) -> None:
        """Stop and remove everything; raise LabError listing anything left behind."""
        problems: list[str] = []

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                problems.append(f"{what}: {exc}")

        for node in self.nodes.values():  # kubelets first: they would restart containers
            if "kubelet" in node.processes:
                attempt(f"stop {node.name} kubelet", node.processes["kubelet"].stop)
        for node in self.nodes.values():
            if "containerd" in node.processes:
                attempt(f"stop {node.name} containerd", node.processes["containerd"].stop)
        if self.relay is not None:
            attempt("stop relay", self.relay.stop)
        if self.tor is not None:
            attempt("stop FRR", self.tor.stop)
        if self.cp is not None:
            attempt("stop control plane", self.cp.close)
        problems += sweep(self.run_id, self._created_hardcoded)
        if os.environ.get("BGPD_KEEP_KUBELET_LAB") != "1":  # logs and configs, to debug
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._frr_workdir is not None:
                shutil.rmtree(self._frr_workdir, ignore_errors=True)
        if problems:
            raise LabError("kubelet lab cleanup: " + "; ".join(problems))

    # ------------------------------------------------------------- bring-up steps

    def _network(self) -> None:
        """The namespaces and links of the single-tor lab (its ToR config sets tor1's side)."""
        if self.with_tor:
            self._add_netns(self.tor_netns)
            # The client side: tor1's eth3 (192.0.2.1, announced to the nodes), its peer
            # kept inside (no dummy module in this kernel).
            run("ip", "-n", self.tor_netns, "link", "add", "eth3", "type", "veth",
                "peer", "name", "eth3p")
            for dev in ("eth3", "eth3p"):
                run("ip", "-n", self.tor_netns, "link", "set", dev, "up")
        for node in self.nodes.values():
            ns = node.netns
            self._add_netns(ns)
            if self.with_tor:
                run("ip", "-n", self.tor_netns, "link", "add", f"eth{node.index}", "type",
                    "veth", "peer", "name", "eth1", "netns", ns)
                run("ip", "-n", self.tor_netns, "link", "set", f"eth{node.index}", "up")
            else:  # the node IP on a veth whose peer stays inside
                run("ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name",
                    "eth1p")
                run("ip", "-n", ns, "link", "set", "eth1p", "up")
            run("ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth1")
            run("ip", "-n", ns, "link", "set", "eth1", "up")
        if self.with_tor:
            self._frr_workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.run_id}-tor-"))
            self.tor = routers.Frr(self.tor_netns, TOR_CONF.read_text(), self._frr_workdir)
            self.tor.start()

    def _add_netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._netns.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        return Process(name, popen, log)

    def _start_relay(self) -> None:
        assert self.cp is not None
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.relay = self._spawn("relay", [
            sys.executable, "-m", "bgpd.lab.relay", "--target", f"127.0.0.1:{self.cp.port}",
            "--listen", API_IN_NODE, *[n.netns for n in self.nodes.values()]], env)
        relay = self.relay
        wait_for(lambda: relay.alive() and "relay:" in relay.log.read_text(), 30,
                 "the relay's listeners", relay.tail)

    def _env(self) -> dict[str, str]:
        # containerd finds the shim on PATH; the kubelet runs mount/umount.
        return {"PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8"}

    def _start_containerd(self, node: Node) -> None:
        for d in (node.root / "containerd" / "cni", node.root / "kubelet", node.pod_logs,
                  node.state):
            d.mkdir(parents=True, exist_ok=True)
        (node.root / "containerd" / "cni" / "10-loopback.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]}))
        conf = self.workdir / f"{node.name}-containerd.toml"
        conf.write_text(CONTAINERD_TOML.format(
            node=node.name, root=node.root / "containerd", state=node.state / "containerd",
            sock=node.sock, pause=self.pause, runc=RUNC, cni_bin=CNI_BIN))
        proc = self._spawn(f"{node.name}-containerd", [
            NSENTER, f"--net=/run/netns/{node.netns}", "--",
            str(self.bin / "containerd"), "--config", str(conf)], self._env())
        node.processes["containerd"] = proc
        wait_for(lambda: (proc.alive() or self._raise_exited(proc)) and node.sock.exists(),
                 30, f"{node.name}'s containerd socket", proc.tail)

    def _raise_exited(self, proc: Process) -> bool:
        raise ProcessExited(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")

    def ctr(self, node: str, *args: str, check: bool = True,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        n = self.nodes[node]
        return run(str(self.bin / "ctr"), "--address", str(n.sock), "--namespace", "k8s.io",
                   *args, check=check, timeout=timeout, env=self._env())

    def _import_images(self, archives: list[Path]) -> None:
        def import_all(node: str) -> None:
            for archive in archives:
                self.ctr(node, "images", "import", str(archive), timeout=IMPORT_TIMEOUT_S)
            have = set(self.ctr(node, "images", "ls", "-q").stdout.split())
            if self.pause not in have:
                raise LabError(f"{node}: {self.pause} not among the imported images: {have}")

        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(import_all, n) for n in self.nodes]:
                future.result()

    def _start_kubelet(self, node: Node) -> None:
        assert self.cp is not None and self.cp.certs is not None
        make_cgroup(node.cgroup)
        self._cgroups.append(node.cgroup)
        config = self.workdir / f"{node.name}-kubelet.yaml"
        config.write_text(json.dumps(kubelet_config(node, self.cp.certs.ca_crt), indent=1))
        kubeconfig = self.cp.write_node_kubeconfig(
            self.workdir / f"{node.name}-kubelet.kubeconfig", node.name,
            server=f"https://{API_IN_NODE}")
        node.processes["kubelet"] = self._spawn(f"{node.name}-kubelet", [
            NSENTER, f"--net=/run/netns/{node.netns}", "--",
            str(self.bin / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={node.root / 'kubelet'}", f"--cert-dir={node.root / 'kubelet' / 'pki'}",
            f"--hostname-override={node.name}", f"--node-ip={node.ip}", "--v=2"], self._env())

    # ------------------------------------------------------------- queries

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        assert self.cp is not None
        proc = run(str(self.cp.bin / "kubectl"), f"--kubeconfig={self.cp.kubeconfig}", *args,
                   input=input, check=check)
        return proc.stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def wait_node_ready(self, name: str, timeout: float = NODE_READY_TIMEOUT_S) -> None:
        kubelet = self.nodes[name].processes["kubelet"]

        def ready() -> bool:
            if not kubelet.alive():
                self._raise_exited(kubelet)
            assert self.cp is not None
            node = self.cp.get_or_none(f"/api/v1/nodes/{name}")
            conditions = (node or {}).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(ready, timeout, f"Node {name} Ready", lambda: self.diagnose(name))

    def node_processes(self, node: str) -> list[ProcStatus]:
        """Every process in the node's network namespace (containerd, kubelet, shims, pods)."""
        pids = run("ip", "netns", "pids", self.nodes[node].netns).stdout.split()
        found = [ProcStatus.read(int(p)) for p in pids]
        return [p for p in found if p is not None]

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log (every restart), from the kubelet's podLogsDir on disk: the CRI
        format, one ``<time> <stream> <F|P> <text>`` line per line of output."""
        for node in self.nodes.values():
            folders = sorted(node.pod_logs.glob(f"{namespace}_{pod}_*/{container}"))
            if folders:
                return "".join(f.read_text(errors="replace")
                               for f in sorted(folders[0].glob("*.log")))
        return ""

    def diagnose(self, node: str | None = None) -> str:
        """What to look at when something does not come up (for failure messages)."""
        parts = []
        if self.cp is not None:
            for args in (("get", "nodes,pods", "-A", "-o", "wide"),
                         ("get", "events", "-A", "--sort-by=.lastTimestamp")):
                with contextlib.suppress(LabError, subprocess.SubprocessError):
                    parts.append(self.kubectl(*args, check=False)[-4000:])
        for n in self.nodes.values():
            if node in (None, n.name):
                parts += [p.tail() for p in n.processes.values()]
        return "\n".join(parts)


# ------------------------------------------------------------------ cgroups


def _hierarchies() -> list[Path]:
    """Every cgroup hierarchy the kubelet may use: the v1 ones (and the v2 'unified'), or
    the v2 root."""
    if (CGROUP_FS / "cgroup.controllers").exists():  # pure v2
        return [CGROUP_FS]
    return [h for h in sorted(CGROUP_FS.iterdir()) if h.is_dir() and not h.is_symlink()]


def make_cgroup(name: str) -> None:
    """``cgroupRoot`` must exist in every hierarchy before the kubelet starts."""
    for h in _hierarchies():
        if h.name == "unified":
            continue  # hybrid: runc handles the v2 tree itself
        d = h / name
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":  # an empty cpuset admits no task
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((h / f).read_text())


def remove_cgroup(name: str, timeout: float = 10.0) -> list[str]:
    """rmdir the ``name`` subtree in every hierarchy, deepest first; what could not go."""
    left: list[str] = []
    deadline = time.monotonic() + timeout
    for h in _hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        folders = sorted((Path(d) for d, _, _ in os.walk(top)),
                         key=lambda p: len(p.parts), reverse=True)
        for d in folders:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY while a killed task is still being reaped
                    if time.monotonic() > deadline:
                        left.append(f"{d}: {exc.strerror}")
                        break
                    time.sleep(0.2)
    return left


# ------------------------------------------------------------------ sweeping


def _mounts_under(*folders: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
        if any(point == str(f) or point.startswith(f"{f}/") for f in folders):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def _kill_netns(netns: str, timeout: float = 10.0) -> list[str]:
    """SIGKILL what is left in ``netns`` (shims, pause, containers: after containerd and the
    kubelet have stopped, nothing in there is needed) and wait until it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        proc = run("ip", "netns", "pids", netns, check=False)
        pids = [int(p) for p in proc.stdout.split()]
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return [f"pids {alive} still in {netns}"]
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sweep(run_id: str, created_hardcoded: Iterable[Path] = ()) -> list[str]:
    """Remove everything of lab ``run_id`` that is still there; what could not be removed."""
    problems: list[str] = []
    var_lib, var_run = VAR_LIB / f"{PREFIX}{run_id}", VAR_RUN / f"{PREFIX}{run_id}"
    names = sorted(p.name for p in Path("/run/netns").glob(f"{PREFIX}{run_id}-*"))
    for ns in names:
        problems += _kill_netns(ns)
    # Volume mounts of the kubelet, rootfs and shm mounts of containerd.
    for point in _mounts_under(var_lib, var_run):
        if run("umount", point, check=False).returncode != 0:
            run("umount", "-l", point, check=False)
    for ns in names:
        run("ip", "netns", "del", ns, check=False)
        # FRR's runtime folder (routers.Frr.stop removes it too, when it ran)
        shutil.rmtree(routers.FRR_RUN_DIR / ns, ignore_errors=True)
    for h in _hierarchies():
        for d in h.glob(f"{PREFIX}{run_id}-*"):
            problems += remove_cgroup(d.name)
    # The paths every kubelet/containerd uses: ours only if we made them; either way the
    # container log links that point into this lab.
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(f"{var_lib}/"):
                    link.unlink()
    for path in created_hardcoded:
        if not _other_labs(run_id):
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(var_lib, ignore_errors=True)
    shutil.rmtree(var_run, ignore_errors=True)
    # What must be gone now.
    left = [p.name for p in Path("/run/netns").glob(f"{PREFIX}{run_id}-*")]
    left += _mounts_under(var_lib, var_run)
    left += [str(d) for h in _hierarchies() for d in h.glob(f"{PREFIX}{run_id}-*")]
    left += [str(p) for p in (var_lib, var_run) if p.exists()]
    if left:
        problems.append(f"left behind: {left}")
    return problems


def _other_labs(run_id: str) -> list[Path]:
    return [p for p in VAR_RUN.glob(f"{PREFIX}*") if p.name != f"{PREFIX}{run_id}"]


def sweep_stale() -> None:
    """Remove the labs of test processes that died without cleaning up (SIGKILL, a crash:
    their containerd-shims, pause and agent processes outlive them)."""
    for folder in VAR_RUN.glob(f"{PREFIX}*"):
        run_id = folder.name.removeprefix(PREFIX)
        if not re.fullmatch(r"[0-9a-f]{6}", run_id):
            continue
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _alive(owner):
            continue  # a lab in use
        try:
            created = [Path(p) for p in json.loads((folder / CREATED_FILE).read_text())]
        except (OSError, ValueError):
            created = []
        sweep(run_id, created)
        for workdir in Path(tempfile.gettempdir()).glob(f"{PREFIX}{run_id}-*"):
            shutil.rmtree(workdir, ignore_errors=True)
