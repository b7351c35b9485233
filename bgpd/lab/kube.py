"""A tiny Kubernetes API client (standard library only) for the lab's own processes:
the runner, the fake kubelet and the end-to-end tests. Admin client certificate from the
lab's control-plane folder."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

TIMEOUT = 15.0


def https_request(host: str, port: int, ctx: ssl.SSLContext, method: str, path: str,
                  body: object = None, *, content_type: str = "application/json",
                  timeout: float | None = TIMEOUT) -> tuple[int, bytes]:
    """One JSON request on a fresh connection: (status, raw body). Shared by this client
    and the tests' ControlPlane."""
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    def __init__(self, host: str, port: int, pki: Path):
        self.host, self.port = host, port
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._ctx = ctx

    @classmethod
    def for_lab(cls, lab_dir: Path) -> Kube:
        state = json.loads((lab_dir / "controlplane" / "pids.json").read_text())
        return cls("127.0.0.1", int(state["port"]), lab_dir / "controlplane" / "pki")

    def _conn(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ctx,
                                           timeout=timeout)

    def request(self, method: str, path: str, body=None, *,
                content_type: str = "application/json", timeout: float = TIMEOUT,
                ok_missing: bool = False):
        status, raw = https_request(self.host, self.port, self._ctx, method, path, body,
                                    content_type=content_type, timeout=timeout)
        if status == 404 and ok_missing:
            return None
        if not 200 <= status < 300:
            raise KubeError(status, raw.decode(errors="replace")[:500])
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:  # /readyz, /healthz answer plain text
            return {"text": raw.decode(errors="replace")}

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def create(self, path: str, obj: dict, *, exist_ok: bool = True):
        try:
            return self.request("POST", path, obj)
        except KubeError as exc:
            if exc.status == 409 and exist_ok:
                return None
            raise

    def patch(self, path: str, patch: dict, kind: str = "merge"):
        ctype = {"merge": "application/merge-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def delete(self, path: str, body: dict | None = None):
        return self.request("DELETE", path, body, ok_missing=True)

    def watch(self, path: str, resource_version: str, timeout_s: int = 60
              ) -> Iterator[dict]:
        sep = "&" if "?" in path else "?"
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": resource_version,
                                        "timeoutSeconds": str(timeout_s),
                                        "allowWatchBookmarks": "true"})
        conn = self._conn(timeout_s + 15)
        try:
            conn.request("GET", f"{path}{sep}{query}", headers={"Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise KubeError(resp.status, resp.read().decode(errors="replace")[:500])
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
