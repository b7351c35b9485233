"""The agent's own credentials path (bgpd/kube/transport.py) against a real API server:
in-cluster with a ServiceAccount folder, a rotated token taking effect, a kubeconfig with
inline client certificate and key, and a CA that does not match. Who the server thinks we
are comes from a SelfSubjectReview, which every authenticated identity may create."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from bgpd.kube import transport
from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError
from tests.integration.kube_fixtures import eventually, start_control_plane

pytestmark = pytest.mark.integration

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@pytest.fixture(scope="module")
def cp():
    plane = start_control_plane()
    try:
        eventually(lambda: plane.api("GET", "/api/v1/namespaces/default/serviceaccounts/default"),
                   "the default ServiceAccount")
        yield plane
    finally:
        plane.close()


def whoami(client: KubeClient) -> str:
    answer = client.request_json("POST", REVIEW, body={
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return answer["status"]["userInfo"]["username"]


def test_in_cluster_with_a_rotated_token(cp, tmp_path):
    shutil.copy(cp.certs.ca_crt, tmp_path / "ca.crt")
    (tmp_path / "token").write_text(cp.mint_token("default", "default"))
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cp.port)}
    client = KubeClient(transport.in_cluster(tmp_path, env))
    try:
        assert whoami(client) == "system:serviceaccount:default:default"
        cp.api("POST", "/api/v1/namespaces/default/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "next"}})
        # The kubelet replaces the file with a new token (here: another account's, so the
        # switch is visible); it is used once the re-read period has passed.
        (tmp_path / "token.new").write_text(cp.mint_token("default", "next"))
        (tmp_path / "token.new").replace(tmp_path / "token")
        assert whoami(client) == "system:serviceaccount:default:default"
        client.transport.token._read_at -= transport.TOKEN_REREAD_S
        assert whoami(client) == "system:serviceaccount:default:next"
    finally:
        client.close()


def test_kubeconfig_with_inline_client_certificate(cp, tmp_path):
    def b64(path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {
            "server": cp.server, "certificate-authority-data": b64(cp.certs.ca_crt)}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(cp.certs.admin_crt),
                                         "client-key-data": b64(cp.certs.admin_key)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    copies = set(Path(tempfile.gettempdir()).glob("bgpd-tls-*"))
    client = KubeClient.from_kubeconfig(str(path))
    try:
        assert isinstance(client.transport, transport.DirectTransport)
        assert whoami(client) == "admin"
        # 2xx answers and errors come back as before: a missing object is a 404 KubeError.
        with pytest.raises(KubeError) as missing:
            client.request_json("GET", "/api/v1/namespaces/default/services/nope")
        assert missing.value.status == 404
    finally:
        client.close()
    assert set(Path(tempfile.gettempdir()).glob("bgpd-tls-*")) == copies, \
        "the key's temporary copy stayed"


def test_a_ca_that_does_not_match_is_refused(cp, tmp_path):
    other = tmp_path / "other-ca.crt"
    shutil.copy(cp.certs.admin_crt, other)  # a certificate, but not the server's issuer
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": cp.server,
                                               "certificate-authority": str(other)}}],
        "users": [{"name": "u", "user": {"token": "whatever"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    client = KubeClient.from_kubeconfig(str(path))
    try:
        with pytest.raises(KubeError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            client.request_json("GET", "/api/v1/nodes")
    finally:
        client.close()
