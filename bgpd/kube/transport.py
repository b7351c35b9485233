"""How requests reach the API server: its URL, TLS and credentials, over urllib3.

The official ``kubernetes`` client imports its ~700 pydantic models, requests and oauthlib
before it sends a byte: about 20 MB of every agent's memory, a third of an agent's RSS at
5,000 Nodes and 20,000 Services (bench/agent_scale.py). What an agent runs with in a
DaemonSet (the ServiceAccount's token) and what a kubeconfig usually holds (a token or a
client certificate) need none of it, so ``DirectTransport`` reads them here and sends
with urllib3. A kubeconfig that needs more (an exec plugin, an auth provider, basic auth,
a proxy, several files merged from $KUBECONFIG) goes to ``OfficialTransport``, which
imports the official client only then and lets it do what it does best.

Both turn every failure into ``KubeError``; the status of an answer is the caller's.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

import urllib3
import yaml

from bgpd.kube.errors import GoneError, KubeError, from_exception

CONNECT_TIMEOUT_S = 10.0
"""TCP + TLS connect timeout for every request: the API server is on the node's network."""

TOKEN_REREAD_S = 60.0
"""A token file (the ServiceAccount's projected token, a kubeconfig's ``tokenFile``) is
read again after this long: the kubelet rotates projected tokens well before they expire
(at 80% of their life, an hour at the least), as client-go and the official client re-read."""

POOL_MAXSIZE = 8
"""Connections kept per API server: one per watch (Nodes, Pods, Services, EndpointSlices)
plus writers; more are opened when needed and closed after use."""

KEEPALIVE = (30, 15, 9)
"""TCP keepalive idle / interval / count, client-go's: a quiet watch whose API server
vanished without a FIN is dropped by the kernel after about 165 s, even without our
read timeout."""

RETRIES = urllib3.Retry(total=3, connect=3, read=1, redirect=0, status=0, other=0,
                        raise_on_status=False)
"""A refused or failed connect is tried 3 times, a connection the server dropped while
idle once more (urllib3 retries reads only for idempotent methods: never a POST or a
PATCH), as the official client's urllib3 defaults did; no redirect is followed. Beyond
that the callers back off (watches: up to 20 s, jittered)."""

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

DIRECT_CLUSTER_KEYS = frozenset({"server", "certificate-authority",
                                 "certificate-authority-data", "insecure-skip-tls-verify",
                                 "tls-server-name", "extensions"})
DIRECT_USER_KEYS = frozenset({"token", "tokenFile", "client-certificate",
                              "client-certificate-data", "client-key", "client-key-data",
                              "extensions"})
"""The kubeconfig fields DirectTransport understands; anything else goes to the official
client (exec, auth-provider, username/password, proxy-url, impersonation ...)."""


class Transport(Protocol):
    def send(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
             content_type: str, read_timeout: float) -> urllib3.BaseHTTPResponse:
        """Send one request; the response is returned unread, whatever its status."""

    def close(self) -> None: ...


class TokenSource:
    """A bearer token: fixed, or a file read again every ``TOKEN_REREAD_S``."""

    def __init__(self, token: str | None = None, path: Path | None = None,
                 reread_s: float = TOKEN_REREAD_S) -> None:
        self._token, self._path, self._reread_s = token, path, reread_s
        self._read_at = -reread_s
        self._lock = threading.Lock()
        if path is not None:
            self.get()  # a missing or unreadable file is an error now, not at first use

    def get(self) -> str | None:
        if self._path is None:
            return self._token
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self._reread_s:
                try:
                    self._token = self._path.read_text().strip()
                except OSError as exc:
                    if self._token is None:
                        raise KubeError(f"cannot read token file {self._path}: {exc}") from exc
                    # Keep the last token: a rotation replaces the file by a rename, and
                    # an old token stays valid past its rotation.
                self._read_at = now
            return self._token


class DirectTransport:
    """urllib3 with our own TLS context and token: no model, no session machinery."""

    def __init__(self, server: str, context: ssl.SSLContext, token: TokenSource,
                 server_hostname: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(server)
        if parsed.scheme != "https" or not parsed.hostname:
            raise KubeError(f"API server URL must be https://host[:port]: {server!r}")
        self.server = server.rstrip("/")
        self.token = token
        options = [*urllib3.connection.HTTPConnection.default_socket_options,
                   (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                   (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE[0]),
                   (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE[1]),
                   (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE[2])]
        extra = {"server_hostname": server_hostname} if server_hostname else {}
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=POOL_MAXSIZE, ssl_context=context,
                                        socket_options=options, retries=RETRIES, **extra)

    def send(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
             content_type: str, read_timeout: float) -> urllib3.BaseHTTPResponse:
        url = self.server + path  # built by the callers from names Kubernetes validated
        params = [(k, v if isinstance(v, str) else json.dumps(v) if isinstance(v, bool)
                   else str(v)) for k, v in (query or {}).items() if v is not None]
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "bgpd"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        token = self.token.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self.pool.request(
                method, url, body=data, headers=headers, preload_content=False,
                redirect=False, retries=RETRIES,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout))
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise from_exception(exc, f"{method} {path}") from exc

    def close(self) -> None:
        self.pool.clear()


class OfficialTransport:
    """The official client, for the credentials only it knows (exec plugins, OIDC ...)."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def send(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
             content_type: str, read_timeout: float) -> urllib3.BaseHTTPResponse:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            _, url, headers, body, _ = self.api.param_serialize(
                method=method, resource_path=path,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params=headers, body=body, auth_settings=["BearerToken"])
            return self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=(CONNECT_TIMEOUT_S, read_timeout)
                                     ).response
        except ApiException as exc:
            if exc.status == 410:
                raise GoneError(f"{method} {path}: {exc.reason}") from exc
            raise KubeError(f"{method} {path}: HTTP {exc.status} {exc.reason}",
                            status=exc.status or None) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise from_exception(exc, f"{method} {path}") from exc

    def close(self) -> None:
        self.api.close()


# ------------------------------------------------------------------ TLS


def tls_context(*, ca_file: Path | None = None, ca_data: bytes | None = None,
                cert: tuple[Path, Path] | tuple[bytes, bytes] | None = None,
                insecure: bool = False) -> ssl.SSLContext:
    """A client context: the cluster's CA (else the system's), the client certificate and
    key as files or PEM bytes."""
    context = ssl.create_default_context(
        cafile=str(ca_file) if ca_file else None,
        cadata=ca_data.decode() if ca_data else None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        crt, key = cert
        if isinstance(crt, Path) and isinstance(key, Path):
            context.load_cert_chain(str(crt), str(key))
        else:
            # ssl reads a key only from a file: a private folder, gone once it is loaded.
            with tempfile.TemporaryDirectory(prefix="bgpd-tls-") as folder:
                paths = []
                for name, pem in (("tls.crt", crt), ("tls.key", key)):
                    path = Path(folder) / name
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(pem)  # type: ignore[arg-type]
                    paths.append(str(path))
                context.load_cert_chain(*paths)
    return context


# ------------------------------------------------------------------ loaders


def in_cluster(folder: Path = IN_CLUSTER_DIR, environ: dict[str, str] | None = None
               ) -> DirectTransport:
    """The Pod's ServiceAccount: KUBERNETES_SERVICE_HOST/PORT, its token and CA."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT not set")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 service address
    for name in ("token", "ca.crt"):
        if not (folder / name).is_file():
            raise KubeError(f"not running in a cluster: {folder / name} missing")
    try:
        context = tls_context(ca_file=folder / "ca.crt")
    except (OSError, ssl.SSLError) as exc:
        raise KubeError(f"cannot load {folder / 'ca.crt'}: {exc}") from exc
    return DirectTransport(f"https://{host}:{port}", context, TokenSource(path=folder / "token"))


def kubeconfig_paths(path: str | None) -> list[Path]:
    if path:
        return [Path(path).expanduser()]
    raw = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def _named(doc: dict, kind: str, name: str | None) -> dict:
    for entry in doc.get(kind) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(kind[:-1]) or {}
    raise KubeError(f"no {kind[:-1]} named {name!r}")


def direct_from_kubeconfig(path: Path, context: str | None) -> DirectTransport | None:
    """A DirectTransport for what the kubeconfig names, or None when it needs more than a
    token or a client certificate (the official client then)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeError(f"cannot load kubeconfig {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise KubeError(f"kubeconfig {path} is not a mapping")
    name = context or doc.get("current-context")
    if not name:
        raise KubeError(f"kubeconfig {path}: no context given and no current-context")
    ctx = _named(doc, "contexts", name)
    cluster = _named(doc, "clusters", ctx.get("cluster"))
    user = _named(doc, "users", ctx["user"]) if ctx.get("user") else {}
    if set(cluster) - DIRECT_CLUSTER_KEYS or set(user) - DIRECT_USER_KEYS or \
            set(ctx) - {"cluster", "user", "namespace", "extensions"}:
        return None
    base = path.parent
    ca = _file_or_data(cluster, "certificate-authority", base)
    crt = _file_or_data(user, "client-certificate", base)
    key = _file_or_data(user, "client-key", base)
    if (crt is None) != (key is None):
        raise KubeError(f"kubeconfig {path}: client-certificate and client-key go together")
    try:
        tls = tls_context(ca_file=ca if isinstance(ca, Path) else None,
                          ca_data=ca if isinstance(ca, bytes) else None,
                          cert=(crt, key) if crt is not None else None,  # type: ignore[arg-type]
                          insecure=bool(cluster.get("insecure-skip-tls-verify")))
    except (OSError, ssl.SSLError) as exc:
        raise KubeError(f"kubeconfig {path}: cannot load its TLS files: {exc}") from exc
    if user.get("tokenFile"):
        token = TokenSource(path=base / Path(user["tokenFile"]).expanduser())
    else:
        token = TokenSource(token=user.get("token"))
    return DirectTransport(str(cluster.get("server", "")), tls, token,
                           cluster.get("tls-server-name"))


def _file_or_data(section: dict, key: str, base: Path) -> Path | bytes | None:
    """``<key>-data`` (base64 PEM) wins over ``<key>`` (a path, relative to the
    kubeconfig's folder), as in kubectl."""
    if section.get(f"{key}-data"):
        try:
            return base64.b64decode(str(section[f"{key}-data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KubeError(f"kubeconfig: {key}-data is not base64: {exc}") from exc
    if section.get(key):
        return base / Path(str(section[key])).expanduser()
    return None


def from_kubeconfig(path: str | None, context: str | None = None) -> Transport:
    """``path`` (None: $KUBECONFIG, else ~/.kube/config), as kubectl reads it."""
    paths = kubeconfig_paths(path)
    if len(paths) == 1:
        direct = direct_from_kubeconfig(paths[0], context)
        if direct is not None:
            return direct
    return official_from_kubeconfig(path, context)


def official_from_kubeconfig(path: str | None, context: str | None) -> OfficialTransport:
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    try:
        return OfficialTransport(k8s_config.new_client_from_config(config_file=path,
                                                                   context=context))
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        raise KubeError(f"cannot load kubeconfig {path or '(default)'}: {exc}") from exc
