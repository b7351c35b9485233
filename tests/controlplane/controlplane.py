"""A throwaway Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
(and, when asked, kube-scheduler).

Used by the integration tests, the benchmark and (imported or copied) by ``bgpd lab``.
Dependency-light on purpose: standard library, the ``openssl`` CLI for certificates, and
the binaries ``build.sh`` puts in ``${BGPD_CACHE:-/var/cache/bgpd}/controlplane/<version>/bin``.

    with ControlPlane() as cp:            # starts in a few seconds, all on 127.0.0.1
        cp.kubeconfig                     # admin (system:masters) kubeconfig path
        cp.request("GET", "/api/v1/nodes")
        token = cp.mint_token("bgpd-system", "bgpd")
        cp.write_kubeconfig(path, token=token)
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

from bgpd.lab.kube import https_request

HERE = Path(__file__).resolve().parent

BIN_NAMES = ("etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kubectl")

READY_TIMEOUT_S = 90.0
"""Longest wait for etcd /health or the apiserver's /readyz (normally 1 s and ~5 s)."""

CONTROLLERS_READY_TIMEOUT_S = 60.0
"""Longest wait for the controller-manager to create the ``default`` ServiceAccount."""

STOP_TIMEOUT_S = 10.0
"""How long a component gets to exit after SIGTERM before it is SIGKILLed."""

POLL_S = 0.1
"""Sleep between readiness probes."""

REQUEST_TIMEOUT_S = 30.0
"""Timeout of one admin HTTP request made by this module."""

CERT_DAYS = 30
"""Validity of the throwaway certificates (a lab may live for days)."""

SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
NODE_CIDR_MASK = 24
KUBERNETES_SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

DEFAULT_CONTROLLERS = (
    "endpointslice-controller",  # EndpointSlices for Services selecting Ready pods
    "serviceaccount-controller",  # the `default` ServiceAccount of each namespace
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",  # namespace deletion
    "garbage-collector-controller",  # ownerReference cleanup (slices of deleted Services)
    "node-ipam-controller",  # spec.podCIDRs from CLUSTER_CIDR for new Nodes
    "clusterrole-aggregation-controller",
    "replicaset-controller",
    "deployment-controller",
)
"""Controllers run by default. Not node-lifecycle: with no kubelet renewing leases it would
mark every Node unreachable after ~50 s and flip all Pods to NotReady."""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, found, started or queried."""


def k8s_version() -> str:
    """The pinned Kubernetes release, read from this folder's go.mod."""
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)", (HERE / "go.mod").read_text(), re.M)
    if not match:
        raise ControlPlaneError(f"no k8s.io/kubernetes requirement in {HERE / 'go.mod'}")
    return match.group(1)


def bin_dir() -> Path:
    """Where build.sh puts the binaries (honours $BGPD_CACHE)."""
    cache = Path(os.environ.get("BGPD_CACHE", "/var/cache/bgpd"))
    return cache / "controlplane" / k8s_version() / "bin"


def find_binaries(folder: Path | None = None) -> Path:
    """The bin folder (default: ``bin_dir()``), or a ControlPlaneError telling how to build it."""
    folder = folder or bin_dir()
    missing = [n for n in BIN_NAMES if not os.access(folder / n, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"control-plane binaries missing in {folder}: {', '.join(missing)}; "
            f"build them with {HERE / 'build.sh'} (set BGPD_CACHE to use another cache folder)"
        )
    return folder


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIDS_FILE = "pids.json"


def stop_recorded(workdir: str | Path) -> list[str]:
    """Stop the components a ControlPlane recorded in ``workdir`` (from another process).

    Only processes whose executable still lives in the recorded bin folder are signalled,
    so a recycled PID is never hit. Returns the names of the components stopped."""
    path = Path(workdir) / PIDS_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
        pid = state.get("pids", {}).get(name)
        if not pid:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # already gone
        if not exe.startswith(state.get("bin", "//")):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    path.unlink(missing_ok=True)
    return stopped


# ------------------------------------------------------------------ certificates

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
"""


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise ControlPlaneError(
            "the openssl CLI is needed to make test certificates (apt install openssl)"
        )
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _ec_key(path: Path) -> None:
    # P-256 keys: generated in milliseconds, unlike RSA; Go's TLS and JWT code accept them.
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )


class Certificates:
    """CA, apiserver serving cert, admin client cert and ServiceAccount keys in ``folder``."""

    def __init__(self, folder: Path, sans: Iterable[str] = ()) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cnf = folder / "openssl.cnf"
        all_sans = [
            "IP:127.0.0.1",
            "DNS:localhost",
            f"IP:{KUBERNETES_SERVICE_IP}",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            *sans,
        ]
        self.cnf.write_text(_OPENSSL_CNF.format(sans=",".join(all_sans)))
        self.ca_crt, self.ca_key = folder / "ca.crt", folder / "ca.key"
        _ec_key(self.ca_key)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(self.ca_key),
            "-subj",
            "/CN=bgpd-test-ca",
            "-days",
            str(CERT_DAYS),
            "-config",
            str(self.cnf),
            "-extensions",
            "ca",
            "-out",
            str(self.ca_crt),
        )
        self.server_crt, self.server_key = self._leaf("apiserver", "/CN=kube-apiserver", "server")
        self.admin_crt, self.admin_key = self._leaf("admin", "/O=system:masters/CN=admin", "client")
        self.sa_key, self.sa_pub = folder / "sa.key", folder / "sa.pub"
        _ec_key(self.sa_key)
        _openssl("pkey", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub))

    def _leaf(self, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
        crt, key, csr = (self.folder / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        _ec_key(key)
        _openssl(
            "req",
            "-new",
            "-key",
            str(key),
            "-subj",
            subject,
            "-config",
            str(self.cnf),
            "-out",
            str(csr),
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.ca_crt),
            "-CAkey",
            str(self.ca_key),
            "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")),
            "-days",
            str(CERT_DAYS),
            "-extfile",
            str(self.cnf),
            "-extensions",
            extensions,
            "-out",
            str(crt),
        )
        csr.unlink()
        return crt, key


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_dict(
    server: str,
    ca_crt: Path,
    *,
    token: str | None = None,
    client_crt: Path | None = None,
    client_key: Path | None = None,
    user: str = "admin",
) -> dict:
    """A self-contained kubeconfig (certificates embedded) as a dict."""
    creds: dict[str, str] = {}
    if token is not None:
        creds["token"] = token
    if client_crt is not None and client_key is not None:
        creds["client-certificate-data"] = _b64(client_crt)
        creds["client-key-data"] = _b64(client_key)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bgpd-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_crt)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "bgpd-test", "context": {"cluster": "bgpd-test", "user": user}}],
        "current-context": "bgpd-test",
    }


# ------------------------------------------------------------------ processes


_PR_SET_PDEATHSIG = 1  # prctl(2) option number from <linux/prctl.h>


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies, so a test runner killed
    hard (no finally, no atexit) still leaves no etcd/apiserver behind. Linux only; the
    signal comes when the *thread* that started the child exits, so start from a thread
    that lives as long as the control plane (the main thread in tests)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Process:
    """One supervised component, its output appended to ``<workdir>/<name>.log``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, list(argv), log_path
        self.proc: subprocess.Popen | None = None

    def start(self, die_with_parent: bool) -> None:
        with open(self.log_path, "ab") as log:
            # Own session: stop() signals the whole group, nothing can be left behind.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1, data in a temp dir."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        controllers: Sequence[str] | None = DEFAULT_CONTROLLERS,
        watch_cache: bool = True,
        etcd_compaction_interval: str | None = None,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        service_cidr: str = SERVICE_CIDR,
        cluster_cidr: str = CLUSTER_CIDR,
        extra_sans: Iterable[str] = (),
        die_with_parent: bool | None = None,
        bin_folder: str | Path | None = None,
        scheduler: bool = False,
    ) -> None:
        """``controllers=None`` runs no controller-manager at all. ``scheduler`` also runs
        kube-scheduler (for pods without ``spec.nodeName``, e.g. a DaemonSet's, when real
        kubelets run them: tests/kubelet/).

        ``die_with_parent`` (default: only when ``workdir`` is None, i.e. a throwaway temp
        dir) kills the components when this process dies. A caller-chosen ``workdir`` means
        the control plane may outlive this process (``bgpd lab up``): stop it later with
        ``stop_recorded(workdir)``."""
        self.bin = find_binaries(Path(bin_folder) if bin_folder else None)
        self.scheduler = scheduler
        if scheduler and not os.access(self.bin / "kube-scheduler", os.X_OK):
            raise ControlPlaneError(
                f"kube-scheduler missing in {self.bin}: rebuild with {HERE / 'build.sh'}"
            )
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="bgpd-cp-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.controllers = None if controllers is None else list(controllers)
        self.watch_cache = watch_cache
        self.etcd_compaction_interval = etcd_compaction_interval
        self.apiserver_args = list(apiserver_args)
        self.controller_manager_args = list(controller_manager_args)
        self.service_cidr, self.cluster_cidr = service_cidr, cluster_cidr
        self.extra_sans = list(extra_sans)
        self.die_with_parent = workdir is None if die_with_parent is None else die_with_parent
        self.etcd_port = self.etcd_peer_port = self.port = 0
        self.certs: Certificates | None = None
        self._procs: dict[str, _Process] = {}
        self.kubeconfig = self.workdir / "admin.kubeconfig"

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def start(self, wait_controllers: bool = True) -> ControlPlane:
        """Start everything and wait until the API serves (and controllers run)."""
        try:
            self.certs = Certificates(self.workdir / "pki", self.extra_sans)
            self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
            self.write_kubeconfig(self.kubeconfig)
            self._start_etcd()
            self.start_apiserver()
            if self.scheduler:
                self._start_scheduler()
            if self.controllers is not None:
                self._start_controller_manager()
                if wait_controllers and "serviceaccount-controller" in self.controllers:
                    self.wait_for(
                        lambda: self.get_or_none(
                            "/api/v1/namespaces/default/serviceaccounts/default"
                        ),
                        CONTROLLERS_READY_TIMEOUT_S,
                        "controller-manager: default ServiceAccount",
                        component="kube-controller-manager",
                    )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every component (controllers first) and delete the temp dir."""
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if self.workdir.is_dir():
            self._record_pids()
        if self._own_workdir and os.environ.get("BGPD_KEEP_CONTROLPLANE") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd keeps the data); ``start_apiserver`` brings it back."""
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None:
            proc.stop()
            self._record_pids()

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port and etcd data; wait for /readyz."""
        assert self.certs is not None
        c = self.certs
        args = [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers={self.etcd_endpoint}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={c.server_crt}",
            f"--tls-private-key-file={c.server_key}",
            f"--client-ca-file={c.ca_crt}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={c.sa_pub}",
            f"--service-account-signing-key-file={c.sa_key}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
        ]
        if self.etcd_compaction_interval:
            args.append(f"--etcd-compaction-interval={self.etcd_compaction_interval}")
        args += self.apiserver_args
        self._spawn("kube-apiserver", args)
        self.wait_for(
            lambda: self._readyz(),
            READY_TIMEOUT_S,
            "kube-apiserver /readyz",
            component="kube-apiserver",
        )

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_endpoint}",
                f"--advertise-client-urls={self.etcd_endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",  # throwaway data: fsync only slows tests down
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            try:
                return json.loads(self._etcd_http("GET", "/health")).get("health") == "true"
            except (OSError, ValueError, http.client.HTTPException):
                return False

        self.wait_for(healthy, READY_TIMEOUT_S, "etcd /health", component="etcd")

    def _start_controller_manager(self) -> None:
        assert self.certs is not None
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(self.controllers or ())}",
                "--secure-port=0",  # no metrics/health endpoint: nothing else listens
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.certs.sa_key}",
                f"--root-ca-file={self.certs.ca_crt}",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={self.cluster_cidr}",
                f"--node-cidr-mask-size={NODE_CIDR_MASK}",
                f"--service-cluster-ip-range={self.service_cidr}",
                *self.controller_manager_args,
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",  # no metrics/health endpoint: nothing else listens
                "--leader-elect=false",
            ],
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        proc = _Process(name, argv, self.workdir / f"{name}.log")
        proc.start(self.die_with_parent)
        self._procs[name] = proc
        self._record_pids()

    def _record_pids(self) -> None:
        """Keep ``<workdir>/pids.json`` current, so a later process (``bgpd lab down``) can
        stop a control plane whose Python object is long gone: see ``stop_recorded``."""
        state = {
            "port": self.port,
            "etcd_port": self.etcd_port,
            "bin": str(self.bin),
            "pids": self.pids(),
        }
        (self.workdir / PIDS_FILE).write_text(json.dumps(state))

    def wait_for(self, check, timeout: float, what: str, component: str | None = None):
        """Poll ``check()`` until it returns something truthy; raise with the log on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            proc = self._procs.get(component) if component else None
            if proc is not None and not proc.alive():
                raise ControlPlaneError(
                    f"{component} exited while waiting for {what}:\n{proc.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = proc.log_tail() if proc is not None else ""
                raise ControlPlaneError(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{tail}"
                )
            time.sleep(POLL_S)

    def pids(self) -> dict[str, int]:
        return {n: p.proc.pid for n, p in self._procs.items() if p.proc is not None}

    # ------------------------------------------------------------- HTTP access

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_crt))
        ctx.load_cert_chain(str(self.certs.admin_crt), str(self.certs.admin_key))
        return ctx

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        port: int | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> tuple[int, object]:
        """One admin request: (HTTP status, decoded JSON body or text)."""
        status, raw = https_request("127.0.0.1", port or self.port, self._ssl_context(),
                                    method, path, body, content_type=content_type,
                                    timeout=timeout)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: object = None, **kwargs) -> dict:
        """``request`` that raises ControlPlaneError unless the status is 2xx."""
        status, answer = self.request(method, path, body, **kwargs)
        if not 200 <= status < 300:
            raise ControlPlaneError(f"{method} {path}: HTTP {status}: {answer}")
        return answer if isinstance(answer, dict) else {"text": answer}

    def get_or_none(self, path: str) -> dict | None:
        try:
            status, answer = self.request("GET", path)
        except (OSError, http.client.HTTPException):
            return None
        return answer if status == 200 and isinstance(answer, dict) else None

    def _readyz(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz", timeout=5)
            return status == 200
        except (OSError, http.client.HTTPException):
            return False

    def _etcd_http(self, method: str, path: str, body: object = None) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode())
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise ControlPlaneError(f"etcd {path}: HTTP {resp.status}: {data[:200]!r}")
            return data
        finally:
            conn.close()

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (watches from older resource
        versions then get 410 Gone when they reach etcd); return that revision."""
        # etcd's JSON gateway: a range read returns the current revision in its header.
        header = json.loads(
            self._etcd_http("POST", "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        )
        revision = int(header["header"]["revision"])
        self._etcd_http("POST", "/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run the kubectl built with the control plane, as admin; return its stdout."""
        proc = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=REQUEST_TIMEOUT_S,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # ------------------------------------------------------- kubeconfigs, tokens

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, server: str | None = None
    ) -> Path:
        """Write a kubeconfig: admin client certificate, or ``token`` when given.
        ``server`` overrides the URL (e.g. a fault-injecting proxy in front of the apiserver)."""
        assert self.certs is not None
        c = self.certs
        if token is not None:
            conf = kubeconfig_dict(server or self.server, c.ca_crt, token=token, user="token")
        else:
            conf = kubeconfig_dict(
                server or self.server, c.ca_crt, client_crt=c.admin_crt, client_key=c.admin_key
            )
        path = Path(path)
        path.write_text(json.dumps(conf, indent=1))  # JSON is YAML: every client reads it
        path.chmod(0o600)
        return path

    def write_node_kubeconfig(
        self, path: str | Path, node: str, *, server: str | None = None
    ) -> Path:
        """A kubelet's kubeconfig for ``node``: a client certificate for ``system:node:<node>``
        in group ``system:nodes``, which the Node authorizer and NodeRestriction confine to
        that node's own objects. ``server``: the URL as the kubelet reaches the API server."""
        assert self.certs is not None
        c = self.certs
        crt, key = c._leaf(f"node-{node}", f"/O=system:nodes/CN=system:node:{node}", "client")
        conf = kubeconfig_dict(server or self.server, c.ca_crt, client_crt=crt, client_key=key,
                               user=f"system:node:{node}")
        path = Path(path)
        path.write_text(json.dumps(conf, indent=1))
        path.chmod(0o600)
        return path

    def mint_token(self, namespace: str, service_account: str, expiration_s: int = 3600) -> str:
        """A bound token for ``namespace/service_account`` from the TokenRequest API."""
        path = (
            f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/serviceaccounts/"
            f"{urllib.parse.quote(service_account)}/token"
        )
        answer = self.api(
            "POST",
            path,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_s},
            },
        )
        return answer["status"]["token"]

    def write_token_kubeconfig(
        self, path: str | Path, namespace: str, service_account: str, *, server: str | None = None
    ) -> Path:
        """Mint a token for the ServiceAccount and write a kubeconfig that uses it."""
        return self.write_kubeconfig(
            path, token=self.mint_token(namespace, service_account), server=server
        )
