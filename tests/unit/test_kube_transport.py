"""How the agent reads its credentials (bgpd/kube/transport.py), without a server: which
kubeconfigs go direct and which to the official client, relative paths, token files read
again, in-cluster settings, and that the direct path never imports the official client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bgpd.kube import transport
from bgpd.kube.errors import KubeError


def _ca(tmp_path: Path) -> Path:
    """A self-signed CA certificate for the kubeconfig to name (never used to connect)."""
    out = tmp_path / "ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=test-ca", "-days", "1",
                    "-keyout", str(tmp_path / "ca.key"), "-out", str(out)],
                   check=True, capture_output=True)
    return out


def _kubeconfig(tmp_path: Path, user: dict, cluster: dict | None = None,
                current: str | None = "ctx") -> Path:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": cluster or {
               "server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}},
                        {"name": "other", "context": {"cluster": "c", "user": "u",
                                                      "namespace": "x"}}]}
    if current:
        doc["current-context"] = current
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def test_token_kubeconfig_goes_direct_with_paths_relative_to_the_file(tmp_path):
    _ca(tmp_path)
    t = transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"token": "abc"}), None)
    assert isinstance(t, transport.DirectTransport)
    assert t.server == "https://127.0.0.1:6443"
    assert t.token.get() == "abc"


def test_token_file_is_read_again_after_its_period(tmp_path):
    _ca(tmp_path)
    (tmp_path / "tok").write_text("first\n")
    t = transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"tokenFile": "tok"}), None)
    assert t.token.get() == "first"
    (tmp_path / "tok").write_text("second\n")
    assert t.token.get() == "first"  # within TOKEN_REREAD_S: the file is not read again
    t.token._read_at -= transport.TOKEN_REREAD_S
    assert t.token.get() == "second"
    (tmp_path / "tok").unlink()  # mid-rotation: the last token stays in use
    t.token._read_at -= transport.TOKEN_REREAD_S
    assert t.token.get() == "second"


@pytest.mark.parametrize("user, cluster", [
    ({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}, None),
    ({"auth-provider": {"name": "oidc"}}, None),
    ({"username": "a", "password": "b"}, None),
    ({"token": "t"}, {"server": "https://127.0.0.1:6443", "proxy-url": "http://proxy:3128"}),
])
def test_credentials_only_the_official_client_knows_go_there(tmp_path, user, cluster):
    _ca(tmp_path)
    assert transport.direct_from_kubeconfig(_kubeconfig(tmp_path, user, cluster), None) is None


@pytest.mark.parametrize("doc, says", [
    ("[1, 2", "cannot load kubeconfig"),
    ("- a list", "not a mapping"),
])
def test_unreadable_kubeconfig_names_the_problem(tmp_path, doc, says):
    path = tmp_path / "kubeconfig"
    path.write_text(doc)
    with pytest.raises(KubeError, match=says):
        transport.direct_from_kubeconfig(path, None)


def test_missing_context_and_half_a_client_certificate_are_refused(tmp_path):
    _ca(tmp_path)
    with pytest.raises(KubeError, match="no current-context"):
        transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"token": "t"}, current=None),
                                         None)
    with pytest.raises(KubeError, match="no context named 'nope'"):
        transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"token": "t"}), "nope")
    with pytest.raises(KubeError, match="client-certificate and client-key go together"):
        transport.direct_from_kubeconfig(
            _kubeconfig(tmp_path, {"client-certificate": "ca.crt"}), None)
    with pytest.raises(KubeError, match="not base64"):
        transport.direct_from_kubeconfig(
            _kubeconfig(tmp_path, {"client-certificate-data": "%%%",
                                   "client-key-data": "%%%"}), None)
    with pytest.raises(KubeError, match="cannot load its TLS files"):
        transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"token": "t"}, {
            "server": "https://127.0.0.1:6443", "certificate-authority": "missing.crt"}), None)


def test_in_cluster_reads_the_service_account_folder(tmp_path):
    _ca(tmp_path)
    (tmp_path / "token").write_text("sa-token")
    t = transport.in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1",
                                        "KUBERNETES_SERVICE_PORT": "443"})
    assert t.server == "https://[fd00::1]:443"
    assert t.token.get() == "sa-token"
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST/PORT not set"):
        transport.in_cluster(tmp_path, {})
    (tmp_path / "token").unlink()
    with pytest.raises(KubeError, match="token missing"):
        transport.in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                        "KUBERNETES_SERVICE_PORT": "443"})


def test_plain_http_server_is_refused(tmp_path):
    _ca(tmp_path)
    with pytest.raises(KubeError, match="https://host"):
        transport.direct_from_kubeconfig(_kubeconfig(tmp_path, {"token": "t"}, {
            "server": "http://127.0.0.1:8080", "certificate-authority": "ca.crt"}), None)


def test_the_direct_path_never_imports_the_official_client(tmp_path):
    """The ~20 MB this module exists to save: a token kubeconfig, a request built and sent
    (to a closed port), and the official client still not imported."""
    _ca(tmp_path)
    path = _kubeconfig(tmp_path, {"token": "t"}, {
        "server": "https://127.0.0.1:9", "certificate-authority": "ca.crt"})
    code = f"""
import sys
from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError
client = KubeClient.from_kubeconfig({str(path)!r})
try:
    client.request_json("GET", "/api/v1/nodes", query={{"limit": 1}})
except KubeError as exc:
    assert "GET /api/v1/nodes" in str(exc), exc
print(sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "pydantic",
                                                          "requests", "oauthlib")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
