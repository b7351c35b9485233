"""The agent image, built offline by daemonset/image/build.sh, run the way the DaemonSet says.

The build (once per session) makes the Debian base with mmdebstrap, downloads the wheels on
the host and runs `podman build --network none`; both inputs are cached under $BGPD_CACHE.

Then the image runs under the DaemonSet's own securityContext, user, volumes and environment,
read from daemonset/base/daemonset.yaml (not repeated here), so a change to the manifest
changes what is tested. The capability grant is reproduced as a Kubernetes runtime makes it:
containerd's CRI hands `capabilities.add` to runc in the bounding, permitted and effective
sets, with no inheritable and no ambient set. Podman does not (for a non-root user it also
raises the ambient set, which an exec'd interpreter without a file capability keeps), so the
capability facts run through runc directly, with an OCI spec made here from the manifest, in a
network namespace made here (only its loopback); the lab's container agents
(bgpd/lab/containers.py) run the same way. `podman run` with the same translation is checked
too, for operators who use podman directly (see podman_run_args for how it differs).

Proven inside the container: the agent's interpreter has exactly CAP_NET_ADMIN effective,
from its file capability, and can add a route; the speaker's interpreter (ExaBGP) has none
and cannot; nothing can write to the root filesystem; `bgpd --version` and `bgpd
check-config` work on the mounted config; uid and gid are 65532.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bgpd.lab import containers
from bgpd.lab.containers import PODMAN, PodSpec
from tests.netns import NetNS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "daemonset" / "image" / "build.sh"
MANIFEST = REPO / "daemonset" / "base" / "daemonset.yaml"
CONFIG = REPO / "daemonset" / "base" / "bgpd.yaml"
IMAGE = "localhost/bgpd:dev"
# Debian package of each command the build and the runs need (installed when missing).
TOOLS = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}
BUILD_TIMEOUT_S = 1800  # a first build on a fresh machine: apt-get, mmdebstrap, PyPI
RUN_TIMEOUT_S = 120
# Regression guard: measured at about 228 MB (the base 109 MB, the venv 112 MB, the
# capable interpreter 7 MB).
SIZE_BUDGET_BYTES = 300_000_000
# PODMAN (with runc, as shared/CONTAINERS.md says) comes from bgpd.lab.containers.
NODE_NAME = "bgpd-image-test"  # what the kubelet puts in spec.nodeName fieldRefs
CAP_NET_ADMIN = 12
UID_GID = 65532

# Runs inside the container as the interpreter under test; prints one JSON object.
PROBE = r"""
import errno, json, os, sys
facts = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups())}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key.startswith("Cap") or key == "NoNewPrivs":
        facts[key] = int(value.strip(), 16) if key.startswith("Cap") else int(value)
writes = {}
for path in sys.argv[1:]:
    try:
        with open(path, "x") as f:
            f.write("x")
        os.unlink(path)
        writes[path] = "ok"
    except OSError as exc:
        writes[path] = errno.errorcode.get(exc.errno, str(exc.errno))
facts["writes"] = writes
import bgpd, exabgp
facts["imports"] = "ok"
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
with IPRoute() as ipr:
    try:
        ipr.route("add", dst="192.0.2.0/24", oif=1, proto=205)
        ipr.route("del", dst="192.0.2.0/24", oif=1, proto=205)
        facts["route_add"] = "ok"
    except NetlinkError as exc:
        facts["route_add"] = errno.errorcode.get(exc.code, str(exc.code))
facts["env"] = {k: os.environ.get(k) for k in ("BGPD_SPEAKER_PYTHON", "TMPDIR", "NODE_NAME")}
import tempfile
facts["tempdir"] = tempfile.gettempdir()
print(json.dumps(facts))
"""
# Runs inside the container as the speaker's interpreter: starts ExaBGP's API bridge the way
# the speaker does (python -I -S, compiled modules only) and relays one line through it.
BRIDGE_PROBE = r"""
import json, os, socket, subprocess, sys, tempfile
from bgpd.speaker.bridge import argv
path = os.path.join(tempfile.gettempdir(), "bridge-probe.sock")
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)
server.settimeout(30)
bridge = subprocess.Popen(argv(sys.executable, path), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
conn, _ = server.accept()
conn.settimeout(30)
bridge.stdin.write(b'{"type": "state"}\n')
bridge.stdin.flush()
relayed = conn.recv(100).decode()
bridge.stdin.close()
bridge.stdout.close()
code = bridge.wait(30)
os.unlink(path)
print(json.dumps({"relayed": relayed, "code": code, "argv": argv(sys.executable, path)}))
"""
# The root filesystem (/var/tmp is world-writable there) and the two emptyDirs.
ROOTFS_PATHS = ["/opt/bgpd/probe", "/etc/probe", "/var/tmp/probe", "/probe"]
AGENT = "/opt/bgpd/bin/python"
SPEAKER = "/opt/bgpd/bin/python-speaker"


def _run(argv: list[str], timeout: float = RUN_TIMEOUT_S, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------ the manifest
# The translation itself (pod_spec, oci_spec, podman_run_args) lives in bgpd.lab.containers,
# shared with `bgpd lab up --agents container`; here only the volumes' contents are made.


def pod_spec(folders: Path) -> PodSpec:
    """Translate the DaemonSet's container; make its volumes' folders, the ConfigMap one
    holding the ConfigMap built from daemonset/base/bgpd.yaml (kustomization), key bgpd.yaml.
    Anything the translation does not know fails the test instead of being left out."""
    try:
        spec = containers.pod_spec(MANIFEST, NODE_NAME, folders / "volumes")
    except containers.ManifestError as exc:
        pytest.fail(str(exc), pytrace=False)
    for m in spec.mounts:
        m.source.mkdir(parents=True)
        m.source.chmod(0o755)
        if m.kind == "configMap":
            shutil.copyfile(CONFIG, m.source / "bgpd.yaml")
            (m.source / "bgpd.yaml").chmod(0o644)
        elif m.kind == "secret":
            # Optional and absent: the kubelet mounts an empty volume.
            assert m.optional, "a required Secret: give the test one"
    return spec


# ------------------------------------------------------------------ fixtures


def _ensure_tools() -> None:
    """Install what is missing the way `make deps` does; fail (not skip) if still missing."""
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    detail = ""
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        update = _run(["apt-get", "update", "-qq"], timeout=600, env=env)
        install = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       timeout=1200, env=env)
        detail = update.stderr + install.stderr
    still = [cmd for cmd in TOOLS if shutil.which(cmd) is None]
    if still:
        pytest.fail(f"missing after apt-get install: {still}\n{detail}", pytrace=False)


@dataclass
class Built:
    image: str
    seconds: float
    size: int
    env: list[str]  # the image's Env, as a runtime passes it on


@pytest.fixture(scope="module")
def built() -> Built:
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (mmdebstrap, podman, runc)", pytrace=False)
    _ensure_tools()
    start = time.monotonic()
    proc = _run([str(BUILD_SCRIPT)], timeout=BUILD_TIMEOUT_S, env=dict(os.environ, BGPD_IMAGE=IMAGE))
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert proc.stdout.split()[-1] == IMAGE, proc.stdout
    inspect = _run([*PODMAN, "image", "inspect", IMAGE])
    assert inspect.returncode == 0, inspect.stderr
    (info,) = json.loads(inspect.stdout)
    return Built(IMAGE, seconds, int(info["Size"]), list(info["Config"].get("Env") or []))


@pytest.fixture(scope="module")
def folders() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bgpd-image-"))
    tmp.chmod(0o755)  # the container's user traverses it to the mounted volumes
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def pod(folders) -> Iterator[PodSpec]:
    """The manifest's container, its volumes made on the host as the kubelet makes them: an
    emptyDir is a folder of mode 0777 (a tmpfs for medium Memory) owned by the fsGroup."""
    spec = pod_spec(folders)
    mounted: list[Path] = []
    try:
        for m in spec.mounts:
            if m.kind != "emptyDir":
                continue
            if m.memory:
                opts = "mode=0777" + (f",size={m.size}" if m.size else "")
                proc = _run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(m.source)])
                assert proc.returncode == 0, proc.stderr
                mounted.append(m.source)
            os.chown(m.source, 0, spec.fs_group if spec.fs_group is not None else 0)
            m.source.chmod(0o2777 if spec.fs_group is not None else 0o777)
        yield spec
    finally:
        for source in reversed(mounted):
            _run(["umount", str(source)])


@pytest.fixture(scope="module")
def netns() -> Iterator[NetNS]:
    """The container's network: a namespace of its own (loopback only), as a lab node's."""
    with NetNS("image") as ns:
        yield ns


@dataclass
class Rootfs:
    path: Path  # the container's root filesystem as the runtime gets it (writable overlay)
    upper: Path  # its writable layer: whatever the container writes to / lands here


@pytest.fixture(scope="module")
def rootfs(built) -> Iterator[Rootfs]:
    """A container of the image, created and mounted (not started): its root filesystem is
    writable, so a read-only result proves the runtime's readOnlyRootFilesystem, not a
    read-only image mount."""
    name = f"bgpd-image-test-{os.getpid()}"
    created = _run([*PODMAN, "create", "--name", name, "--network", "none", built.image])
    assert created.returncode == 0, created.stderr
    try:
        mounted = _run([*PODMAN, "mount", name])
        assert mounted.returncode == 0, mounted.stderr
        upper = _run([*PODMAN, "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", name])
        assert upper.returncode == 0, upper.stderr
        yield Rootfs(Path(mounted.stdout.strip()), Path(upper.stdout.strip()))
    finally:
        _run([*PODMAN, "umount", name])
        _run([*PODMAN, "rm", "--force", name])


# ------------------------------------------------------------------ runc, as the kubelet


def oci_spec(pod: PodSpec, built: Built, rootfs: Path, netns: NetNS,
             argv: list[str]) -> dict:
    """The OCI runtime spec containerd's CRI gives runc (bgpd.lab.containers.oci_spec), in
    a network namespace made here (only its loopback)."""
    return containers.oci_spec(pod, built.env, rootfs, f"/run/netns/{netns.name}", argv,
                               NODE_NAME)


@pytest.fixture(scope="module")
def runc(pod, built, rootfs, netns, folders):
    """run(argv) -> CompletedProcess: one runc container per call, always deleted."""
    state = folders / "runc-state"  # runc's own state dir: never touches anyone else's
    counter = iter(range(1_000_000))

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        cid = f"bgpd-image-test-{os.getpid()}-{next(counter)}"
        bundle = folders / cid
        bundle.mkdir()
        (bundle / "config.json").write_text(
            json.dumps(oci_spec(pod, built, rootfs.path, netns, argv)))
        try:
            return _run(["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
                        stdin=subprocess.DEVNULL)
        finally:
            _run(["runc", "--root", str(state), "delete", "--force", cid])
            shutil.rmtree(bundle, ignore_errors=True)

    return run


def _facts(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def agent(runc) -> dict:
    return _facts(runc([AGENT, "-c", PROBE, *ROOTFS_PATHS, "/tmp/probe", "/run/bgpd/probe"]))


@pytest.fixture(scope="module")
def speaker(runc) -> dict:
    return _facts(runc([SPEAKER, "-c", PROBE, *ROOTFS_PATHS]))


# ------------------------------------------------------------------ tests


def test_image_is_built_offline_and_small(built):
    print(f"\n{built.image}: {built.size / 1e6:.0f} MB, build.sh took {built.seconds:.0f} s")
    assert built.size < SIZE_BUDGET_BYTES, f"{built.size / 1e6:.0f} MB"
    env = dict(e.split("=", 1) for e in built.env)
    assert env["BGPD_SPEAKER_PYTHON"] == SPEAKER


def test_manifest_translation(pod):
    """The securityContext the rest relies on, as translated (not as repeated here)."""
    assert pod.caps == ["CAP_NET_ADMIN"]
    assert pod.read_only_root and pod.no_new_privs
    assert {m.kind for m in pod.mounts} == {"configMap", "secret", "emptyDir"}


def test_uid_and_gid_are_65532(agent, speaker):
    for facts in (agent, speaker):
        assert (facts["uid"], facts["gid"]) == (UID_GID, UID_GID), facts
        assert UID_GID in facts["groups"]


def test_agent_has_exactly_net_admin_from_its_file_capability(agent):
    net_admin = 1 << CAP_NET_ADMIN
    assert agent["CapEff"] == net_admin == 0x1000, hex(agent["CapEff"])
    assert agent["CapPrm"] == net_admin and agent["CapBnd"] == net_admin
    # Nothing the runtime could have passed on by itself: the file capability did it.
    assert agent["CapInh"] == 0 and agent["CapAmb"] == 0
    assert agent["NoNewPrivs"] == 1
    assert agent["route_add"] == "ok", agent


def test_speaker_has_no_capability(speaker):
    assert speaker["CapEff"] == 0, hex(speaker["CapEff"])
    assert speaker["CapPrm"] == 0 and speaker["CapAmb"] == 0
    assert speaker["imports"] == "ok"  # `import exabgp, bgpd` from the agent's venv
    assert speaker["route_add"] == "EPERM", speaker
    assert speaker["env"]["BGPD_SPEAKER_PYTHON"] == SPEAKER


def test_root_filesystem_is_read_only(agent, speaker):
    for facts in (agent, speaker):
        for path in ROOTFS_PATHS:
            assert facts["writes"][path] == "EROFS", (path, facts["writes"])
    # The emptyDirs are the writable places.
    assert agent["writes"]["/tmp/probe"] == "ok"
    assert agent["writes"]["/run/bgpd/probe"] == "ok"


def test_temporary_files_land_on_an_empty_dir(agent, speaker, pod):
    """Where tempfile (the speaker's work dir: ExaBGP's config with the MD5 keys) writes.
    The agent's interpreter runs in glibc's secure mode (AT_SECURE: it gained a file
    capability), and glibc then removes TMPDIR from its environment: the agent falls back to
    /tmp, which is why /tmp must be an emptyDir too. The speaker's interpreter keeps it."""
    empty_dirs = {m.path for m in pod.mounts if m.kind == "emptyDir"}
    assert agent["tempdir"] in empty_dirs and speaker["tempdir"] in empty_dirs, empty_dirs
    assert speaker["env"]["TMPDIR"] == pod.env["TMPDIR"] == speaker["tempdir"]
    assert agent["env"]["NODE_NAME"] == NODE_NAME


def test_bgpd_version_and_check_config(runc, pod):
    version = runc(["bgpd", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("bgpd "), version
    # The DaemonSet's own --config path, and the image's default (a link into the mount).
    config = pod.args[pod.args.index("--config") + 1]
    for path in (config, "/etc/bgpd/bgpd.yaml"):
        check = runc(["bgpd", "check-config", path])
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_speakers_api_bridge_runs_isolated_in_the_image(runc):
    # ExaBGP starts the bridge with -I -S (no site-packages, no PYTHON* variables): it must
    # still start with the image's speaker interpreter and relay ExaBGP's lines.
    facts = _facts(runc([SPEAKER, "-c", BRIDGE_PROBE]))
    assert facts["relayed"] == '{"type": "state"}\n' and facts["code"] == 0, facts
    assert facts["argv"][:3] == [SPEAKER, "-I", "-S"], facts


def podman_run_args(pod: PodSpec, netns: NetNS, name: str) -> list[str]:
    """The same translation for `podman run` (bgpd.lab.containers.podman_run_args)."""
    return containers.podman_run_args(pod, netns.name, name)


def test_podman_runs_the_agent_with_the_daemonset_flags(pod, built, netns):
    name = f"bgpd-image-podman-{os.getpid()}"
    args = podman_run_args(pod, netns, name)
    try:
        config = pod.args[pod.args.index("--config") + 1]
        check = _run([*args, built.image, "check-config", config])
        assert check.returncode == 0, f"{' '.join(args)}\n{check.stdout}{check.stderr}"
        probe = _run([*args, "--entrypoint", AGENT, built.image, "-c", PROBE, *ROOTFS_PATHS])
        facts = _facts(probe)
        assert facts["CapEff"] == 1 << CAP_NET_ADMIN and facts["route_add"] == "ok", facts
        assert (facts["uid"], facts["gid"]) == (UID_GID, UID_GID)
        assert set(facts["writes"].values()) == {"EROFS"}, facts["writes"]
    finally:
        _run([*PODMAN, "rm", "--force", "--ignore", name])


def test_nothing_reached_the_containers_writable_layer(rootfs, agent, speaker, runc):
    """Last: every runc run above used this root filesystem; its writable layer is empty."""
    leftovers = sorted(str(p.relative_to(rootfs.upper)) for p in rootfs.upper.rglob("*"))
    assert leftovers == [], leftovers
