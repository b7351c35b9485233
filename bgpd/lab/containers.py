"""The agent as a container of its image, run the way the DaemonSet says (``--agents container``).

Two parts:

* **The manifest's translation** (shared with tests/integration/test_image.py):
  ``pod_spec`` reads the agent's container from daemonset/base/daemonset.yaml (securityContext,
  user and groups, capabilities, env, args, volumes, probes, memory limit) and refuses what it
  does not know how to translate, so nothing in the manifest is silently left out;
  ``oci_spec`` turns that into the OCI runtime spec containerd's CRI would give runc (the
  capability sets WITHOUT inheritable or ambient, no_new_privs, the read-only root, every
  volume bind-mounted, the node's network namespace); ``podman_run_args`` is the same for
  ``podman run`` (which also raises the ambient set of a non-root user: not what a kubelet
  does, hence runc for the lab).

* **The lab's agent containers** (``AgentContainers``): per Kubernetes node, a container of
  the image created with podman (only for its root filesystem: ``podman create`` +
  ``podman mount``, a writable overlay, so a read-only result proves the runtime's
  readOnlyRootFilesystem), the pod's volumes as folders of the lab under
  ``clab-<lab>/<node>/pod/`` (the ConfigMap folder with the node's rendered ``bgpd.yaml``,
  the optional Secret empty, the emptyDirs owned by the pod's user, the ServiceAccount token
  and CA at ``/var/run/secrets/kubernetes.io/serviceaccount``), and ``runc run`` in the
  foreground as the container's supervisor (what containerd's shim is to a pod: it waits
  for the container, reaps it and removes it when its process exits). The agent runs as
  PID 1 of its own PID namespace, in the node's network namespace, with its in-cluster
  config: KUBERNETES_SERVICE_HOST=127.0.0.1, KUBERNETES_SERVICE_PORT=6443 (the lab's relay).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bgpd.lab.system import LabError, ProcRecord, start_time, wait_for, write_json

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "daemonset" / "base" / "daemonset.yaml"
CONTAINER_NAME = "bgpd"  # the agent's container in the DaemonSet's pod template
IMAGE = "localhost/bgpd:dev"  # what `make image` (daemonset/image/build.sh) builds
IMAGE_ENV = "BGPD_LAB_IMAGE"
# shared/CONTAINERS.md: crun refuses this machine's hybrid cgroups; podman's default
# nofile/nproc exceed the hard limits.
PODMAN = ["podman", "--runtime", "runc"]
PODMAN_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# The kubelet's service environment for the `kubernetes` Service; in the lab the relay
# listens there inside every node namespace.
API_HOST, API_PORT = "127.0.0.1", 6443
LAB_LABEL = "dev.bgpd.lab"  # podman label naming the lab a container belongs to
RUNC_ROOTS = Path("/run/bgpd-lab")  # runc state of lab <name>: /run/bgpd-lab/<name>.runc
START_TIMEOUT = 30.0
STOP_GRACE = 5.0
COMMAND_TIMEOUT = 60.0


class ManifestError(LabError):
    """daemonset.yaml holds something this translation does not know: translate it first."""


# ------------------------------------------------------------------ the manifest


@dataclass
class Mount:
    """A volume as the kubelet prepares it: a host folder the runtime bind-mounts."""

    path: str  # in the container
    source: Path  # on the host
    read_only: bool
    kind: str  # configMap, secret, emptyDir
    memory: bool = False  # emptyDir medium Memory: the kubelet mounts a tmpfs there
    size: str | None = None  # its sizeLimit, as a tmpfs size
    name: str = ""  # the volume's name in the pod
    optional: bool = False  # a Secret or ConfigMap volume that may be absent


@dataclass
class Probe:
    kind: str  # startup, liveness, readiness
    path: str
    port: int


@dataclass
class PodSpec:
    """What the runtime is told for the agent's container, from daemonset.yaml."""

    uid: int
    gid: int
    groups: list[int]
    read_only_root: bool
    no_new_privs: bool
    caps: list[str]  # after drop ALL: exactly these, as CAP_* names
    fs_group: int | None
    env: dict[str, str]
    args: list[str]
    mounts: list[Mount] = field(default_factory=list)
    command: list[str] | None = None  # replaces the image's ENTRYPOINT when set
    probes: list[Probe] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    memory_limit: int | None = None  # bytes
    namespace: str = ""
    service_account: str = ""

    @property
    def config_path(self) -> str:
        """The agent's --config (inside the container)."""
        return self.args[self.args.index("--config") + 1]

    def mount(self, kind: str) -> Mount:
        found = [m for m in self.mounts if m.kind == kind]
        if len(found) != 1:
            raise ManifestError(f"expected one {kind} volume, found {len(found)}")
        return found[0]


def tmpfs_size(limit: str | None) -> str | None:
    """A Kubernetes quantity (16Mi) as a tmpfs size option (16m: tmpfs suffixes are binary)."""
    if limit is None:
        return None
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(limit))
    if not m:
        raise ManifestError(f"emptyDir sizeLimit {limit!r}: translate this quantity")
    return m.group(1) + {"Ki": "k", "Mi": "m", "Gi": "g", None: ""}[m.group(2)]


def quantity_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(value))
    if not m:
        raise ManifestError(f"memory quantity {value!r}: translate this quantity")
    return int(m.group(1)) * {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, None: 1}[m.group(2)]


def daemonset(manifest: Path = MANIFEST) -> dict:
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    found = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(found) != 1:
        raise ManifestError(f"{manifest}: expected one DaemonSet, found {len(found)}")
    return found[0]


def pod_spec(manifest: Path, node_name: str, volumes_dir: Path) -> PodSpec:
    """Translate the DaemonSet's agent container for node ``node_name``; each volume's host
    folder is ``volumes_dir/<volume name>`` (not created here). Anything this does not know
    how to translate raises ManifestError instead of being silently left out."""
    ds = daemonset(manifest)
    spec = ds["spec"]["template"]["spec"]
    found = [c for c in spec["containers"] if c["name"] == CONTAINER_NAME]
    if len(found) != 1:
        raise ManifestError(f"no container {CONTAINER_NAME!r} in the DaemonSet")
    (container,) = found
    pod_sc = spec.get("securityContext", {})
    sc = container["securityContext"]
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        raise ManifestError("only `capabilities.drop: [ALL]` is translated")
    if sc.get("runAsNonRoot") is not True or sc.get("privileged") is not False:
        raise ManifestError("only runAsNonRoot: true, privileged: false are translated")
    if spec.get("hostNetwork") is not True:
        raise ManifestError("only hostNetwork pods are translated (the node's namespace)")
    if spec.get("hostPID") or spec.get("hostIPC") or spec.get("shareProcessNamespace"):
        raise ManifestError("host or shared PID/IPC namespaces: translate them")
    groups = sorted({sc["runAsGroup"], *pod_sc.get("supplementalGroups", []),
                     *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else [])})
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[item["name"]] = node_name
        else:
            raise ManifestError(f"env {item['name']}: translate this valueFrom")
    if container.get("envFrom"):
        raise ManifestError("envFrom: translate it")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = []
    for vm in container.get("volumeMounts", []):
        if vm.get("subPath") or vm.get("mountPropagation"):
            raise ManifestError(f"volumeMount {vm['name']}: translate subPath/propagation")
        vol = volumes[vm["name"]]
        ro = bool(vm.get("readOnly", False))
        src = volumes_dir / vm["name"]
        if "configMap" in vol:
            mounts.append(Mount(vm["mountPath"], src, ro, "configMap", name=vm["name"],
                                optional=bool(vol["configMap"].get("optional"))))
        elif "secret" in vol:
            mounts.append(Mount(vm["mountPath"], src, ro, "secret", name=vm["name"],
                                optional=bool(vol["secret"].get("optional"))))
        elif "emptyDir" in vol:
            empty = vol["emptyDir"] or {}
            mounts.append(Mount(vm["mountPath"], src, ro, "emptyDir", name=vm["name"],
                                memory=empty.get("medium") == "Memory",
                                size=tmpfs_size(empty.get("sizeLimit"))))
        else:
            raise ManifestError(f"volume {vm['name']}: translate this volume type")
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])
             if p.get("name")}
    probes = []
    for kind in ("startup", "liveness", "readiness"):
        probe = container.get(f"{kind}Probe")
        if probe is None:
            continue
        get = probe.get("httpGet")
        if get is None:
            raise ManifestError(f"{kind}Probe: only httpGet is translated")
        port = get["port"]
        probes.append(Probe(kind, get.get("path", "/"),
                            ports[port] if isinstance(port, str) else int(port)))
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    return PodSpec(
        uid=sc["runAsUser"], gid=sc["runAsGroup"], groups=groups,
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        caps=[f"CAP_{c.upper()}" for c in caps.get("add", [])],
        fs_group=pod_sc.get("fsGroup"),
        env=env, args=list(container.get("args", [])), mounts=mounts,
        command=list(container["command"]) if container.get("command") else None,
        probes=probes, ports=ports,
        memory_limit=quantity_bytes(limit) if limit else None,
        namespace=ds["metadata"].get("namespace", "default"),
        service_account=spec.get("serviceAccountName", "default"),
    )


def oci_spec(pod: PodSpec, image_env: list[str], rootfs: Path, netns_path: str,
             argv: list[str], hostname: str, *, extra_env: dict[str, str] | None = None,
             extra_mounts: list[Mount] = (), cgroups_path: str | None = None) -> dict:
    """The OCI runtime spec containerd's CRI gives runc for this container (the parts that
    matter here): user and groups, the capability sets WITHOUT inheritable or ambient,
    no_new_privs, the read-only root, the volumes bind-mounted, the node's network
    namespace, its own PID namespace, the memory limit. Left out: the RuntimeDefault
    seccomp profile, CPU shares, rlimits."""
    env = dict(e.split("=", 1) for e in image_env)
    env.update(extra_env or {})  # the kubelet's service variables; the container's own win
    env.update(pod.env)
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    for m in [*pod.mounts, *extra_mounts]:  # containerd bind-mounts what the kubelet made
        ro = ["ro"] if m.read_only else []
        mounts.append({"destination": m.path, "type": "bind", "source": str(m.source),
                       "options": ["rbind", "rprivate", *ro]})
    linux: dict = {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                       {"type": "mount"},
                       {"type": "network", "path": netns_path}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    }
    if pod.memory_limit:
        linux["resources"] = {"memory": {"limit": pod.memory_limit}}
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": pod.uid, "gid": pod.gid, "additionalGids": pod.groups},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {"bounding": pod.caps, "permitted": pod.caps,
                             "effective": pod.caps},
            "noNewPrivileges": pod.no_new_privs,
        },
        "root": {"path": str(rootfs), "readonly": pod.read_only_root},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }


def podman_run_args(pod: PodSpec, netns: str, name: str) -> list[str]:
    """The same translation for `podman run`. Differences from the kubelet: podman also
    raises the ambient set of a non-root user (so the speaker's interpreter would get
    NET_ADMIN too), and applies its own seccomp profile."""
    args = [*PODMAN, "run", "--rm", "--name", name, "--pull=never", *PODMAN_ULIMITS,
            "--network", f"ns:/run/netns/{netns}",
            "--user", f"{pod.uid}:{pod.gid}",
            *[a for g in pod.groups if g != pod.gid for a in ("--group-add", str(g))],
            "--cap-drop", "ALL", *[a for c in pod.caps for a in ("--cap-add", c)]]
    if pod.read_only_root:
        # Without --read-only-tmpfs=false podman adds tmpfs on /run, /tmp and /var/tmp.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if pod.no_new_privs:
        args += ["--security-opt", "no-new-privileges"]
    for m in pod.mounts:
        # Volumes as the kubelet prepared them. (Not --tmpfs for an emptyDir: runc gives a
        # tmpfs the mode of the folder under it, 0755 root for /run/bgpd: not writable.)
        ro = ":ro" if m.read_only else ""
        args += ["--volume", f"{m.source}:{m.path}{ro}"]
    for k, v in pod.env.items():
        args += ["--env", f"{k}={v}"]
    return args


# ------------------------------------------------------------------ commands


def _run(argv: list[str], check: bool = True,
         timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed (make image installs podman and runc)") \
            from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()[-800:]}")
    return done


@dataclass
class Image:
    name: str
    id: str
    env: list[str]  # the image's Env, as a runtime passes it on
    entrypoint: list[str]
    cmd: list[str]


def inspect_image(name: str) -> Image:
    done = _run([*PODMAN, "image", "inspect", name], check=False)
    if done.returncode != 0:
        raise LabError(f"image {name} not found: build it with `make image` "
                       f"(daemonset/image/build.sh) or set {IMAGE_ENV}")
    (info,) = json.loads(done.stdout)
    cfg = info.get("Config") or {}
    return Image(name, info["Id"], list(cfg.get("Env") or []),
                 list(cfg.get("Entrypoint") or []), list(cfg.get("Cmd") or []))


# ------------------------------------------------------------------ the lab's agents


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


class AgentContainers:
    """Every Kubernetes node's agent of one lab, as a runc container of the image."""

    def __init__(self, lab: str, lab_dir: Path, image: str | None = None,
                 manifest: Path = MANIFEST):
        self.lab, self.lab_dir = lab, lab_dir
        self.image = image or os.environ.get(IMAGE_ENV) or IMAGE
        self.manifest = manifest
        self.root = RUNC_ROOTS / f"{lab}.runc"

    # ------------------------------------------------------------- names and folders

    def cid(self, node: str) -> str:
        return f"bgpd-lab-{self.lab}-{node}"

    def pod_dir(self, node: str) -> Path:
        return self.lab_dir / node / "pod"

    def spec_for(self, node: str) -> PodSpec:
        return pod_spec(self.manifest, node, self.pod_dir(node) / "volumes")

    def config_file(self, node: str) -> Path:
        """Where the node's rendered bgpd.yaml goes: the ConfigMap volume's folder."""
        pod = self.spec_for(node)
        cm = pod.mount("configMap")
        rel = os.path.relpath(pod.config_path, cm.path)
        if rel.startswith("..") or "/" in rel:
            raise ManifestError(f"--config {pod.config_path} is not a file of the ConfigMap "
                                f"mounted at {cm.path}")
        return cm.source / rel

    def runc(self, *args: str, check: bool = True,
             timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        return _run(["runc", "--root", str(self.root), *args], check=check, timeout=timeout)

    def state(self, node_or_cid: str) -> dict | None:
        cid = node_or_cid if node_or_cid.startswith("bgpd-lab-") else self.cid(node_or_cid)
        done = self.runc("state", cid, check=False)
        return _json_or_none(done.stdout) if done.returncode == 0 else None

    # ------------------------------------------------------------- the pod's volumes

    def prepare(self, node: str, netns: str, kubeconfig: Path, ca_crt: Path) -> dict:
        """Everything the kubelet and containerd make before starting the container: the
        volumes, the ServiceAccount token folder, the root filesystem and the bundle.
        Idempotent; returns the ``container`` part of the agent's lab record."""
        pod = self.spec_for(node)
        if pod.uid == 0:
            raise ManifestError("runAsUser 0")
        img = inspect_image(self.image)
        pdir = self.pod_dir(node)
        pdir.mkdir(parents=True, exist_ok=True)
        pdir.chmod(0o755)
        group = pod.fs_group if pod.fs_group is not None else pod.gid
        for m in pod.mounts:
            m.source.mkdir(parents=True, exist_ok=True)
            if m.kind == "emptyDir":
                # A folder of the lab (not a tmpfs: nothing to unmount), owned by the pod's
                # user and fsGroup; it outlives container restarts as an emptyDir does.
                os.chown(m.source, pod.uid, group)
                m.source.chmod(0o2770)
            elif m.kind == "secret":
                # The lab's peers use no password: an optional Secret that does not exist is
                # an empty volume, as the kubelet mounts it.
                if not m.optional:
                    raise ManifestError(f"Secret volume {m.name} is required: give the lab one")
                m.source.chmod(0o755)
            else:
                m.source.chmod(0o755)
        # The ServiceAccount volume the kubelet projects (token, ca.crt, namespace); the token
        # is the one `bgpd lab up` minted for the node (TokenRequest for bgpd-system/bgpd).
        token = _token_of(kubeconfig)
        sa_dir = pdir / "serviceaccount"
        sa_dir.mkdir(exist_ok=True)
        sa_dir.chmod(0o755)
        for name, data in (("token", token), ("ca.crt", ca_crt.read_text()),
                           ("namespace", pod.namespace)):
            path = sa_dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(data)
            os.chown(tmp, 0, group)
            tmp.chmod(0o640)
            tmp.replace(path)
        rootfs = self._rootfs(node)
        argv = (pod.command or img.entrypoint) + (pod.args if pod.args or pod.command
                                                  else img.cmd)
        spec = oci_spec(pod, img.env, Path(rootfs["rootfs"]), f"/run/netns/{netns}", argv,
                        node, extra_env={"KUBERNETES_SERVICE_HOST": API_HOST,
                                         "KUBERNETES_SERVICE_PORT": str(API_PORT),
                                         "KUBERNETES_SERVICE_PORT_HTTPS": str(API_PORT)},
                        extra_mounts=[Mount(SA_MOUNT, sa_dir, True, "projected",
                                            name="kube-api-access")])
        bundle = pdir / "bundle"
        bundle.mkdir(exist_ok=True)
        write_json(bundle / "config.json", spec)
        return {"runtime": "runc", "id": self.cid(node), "root": str(self.root),
                "bundle": str(bundle), "image": img.name, "image_id": img.id, **rootfs}

    def _rootfs(self, node: str) -> dict:
        """A container of the image, created and mounted by podman but never started by it:
        its merged overlay is runc's root, its upper dir what the container wrote."""
        name = self.cid(node)
        if _run([*PODMAN, "container", "exists", name], check=False).returncode != 0:
            _run([*PODMAN, "create", "--name", name, "--label", f"{LAB_LABEL}={self.lab}",
                  "--network", "none", "--pull=never", self.image])
        merged = _run([*PODMAN, "mount", name]).stdout.strip()
        upper = _run([*PODMAN, "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}",
                      name]).stdout.strip()
        return {"podman": name, "rootfs": merged, "upper": upper}

    # ------------------------------------------------------------- start / stop

    def start(self, name: str, node: str, netns: str, log: Path, kubeconfig: Path,
              ca_crt: Path) -> ProcRecord:
        """(Re)start node's container; the record's pid is the agent's own (the container's
        PID 1 as the host sees it), so killing it kills the agent."""
        info = self.prepare(node, netns, kubeconfig, ca_crt)
        self.remove(info["id"])  # a container that died: runc's state of it goes first
        self.root.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = ["runc", "--root", str(self.root), "run", "--bundle", info["bundle"], info["id"]]
        with open(log, "ab") as out:
            # runc in the foreground supervises the container as containerd's shim would:
            # it reaps the agent and removes the container (cgroups, state) when it exits.
            runc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    close_fds=True)

        def running():
            st = self.state(info["id"])
            if st and st.get("status") == "running" and st.get("pid"):
                return st
            if runc.poll() is not None:
                raise LabError(f"{name}: runc exited ({runc.returncode}) before the "
                               f"container ran; see {log}")
            return None

        try:
            st = wait_for(running, START_TIMEOUT, f"{name}'s container to run", 0.05)
        except LabError:
            self.remove(info["id"])
            raise
        runc.returncode = 0  # never waited for from here on; keep Popen.__del__ quiet
        pid = int(st["pid"])
        info["supervisor"] = {"pid": runc.pid, "start": start_time(runc.pid)}
        return ProcRecord(name=name, argv=argv, netns=netns, log=str(log), pid=pid,
                          start=start_time(pid), env=None, cwd=None, container=info)

    def remove(self, cid: str) -> None:
        """Kill and delete one container's runc state (no error when there is none)."""
        if self.state(cid) is None:
            return
        self.runc("kill", cid, "KILL", check=False)
        self.runc("delete", "--force", cid, check=False)
        wait_for(lambda: self.state(cid) is None, 10, f"runc to delete {cid}", 0.05)

    def stop(self, rec: ProcRecord, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the agent (it stops ExaBGP and leaves its routes to graceful restart),
        SIGKILL after ``grace``; then the container and its supervisor are gone."""
        info = rec.get("container") or {}
        cid = info.get("id")
        if rec.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec["pid"], signal.SIGTERM)
            deadline = time.monotonic() + grace
            while rec.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            if rec.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec["pid"], signal.SIGKILL)
                wait_for(lambda: not rec.alive, 5, f"{rec['name']} to die", 0.05)
        if cid:
            self.remove(cid)
        sup = ProcRecord(info.get("supervisor") or {})
        if sup.alive:
            with contextlib.suppress(LabError):
                wait_for(lambda: not sup.alive, 5, f"{rec['name']}'s runc to exit", 0.05)

    # ------------------------------------------------------------- teardown

    def teardown(self) -> list[str]:
        """Leave nothing of this lab's containers: runc containers (even unrecorded ones),
        runc's state folder, podman's containers and their mounted root filesystems.
        Returns what could not be removed."""
        problems = []
        if self.root.exists():
            done = self.runc("list", "--format", "json", check=False)
            for item in _json_or_none(done.stdout) or []:
                try:
                    self.remove(item["id"])
                except LabError as exc:
                    problems.append(str(exc))
            shutil.rmtree(self.root, ignore_errors=True)
        if shutil.which("podman"):
            done = _run([*PODMAN, "ps", "--all", "--quiet", "--filter",
                         f"label={LAB_LABEL}={self.lab}", "--format", "{{.Names}}"],
                        check=False)
            for name in done.stdout.split():
                _run([*PODMAN, "umount", "--force", name], check=False)
                rm = _run([*PODMAN, "rm", "--force", name], check=False)
                if rm.returncode != 0:
                    problems.append(f"podman rm {name}: {rm.stderr.strip()}")
        return problems


def _token_of(kubeconfig: Path) -> str:
    try:
        conf = yaml.safe_load(kubeconfig.read_text())
        (user,) = conf["users"]
        return user["user"]["token"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"no ServiceAccount token in {kubeconfig}: {exc}") from exc


def agent_children(pid: int) -> list[int]:
    """The direct children of ``pid`` (ExaBGP is the agent's child)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(out))
