"""A thin raw-JSON layer over the API server's HTTP.

Credentials and TLS come from bgpd/kube/transport.py (urllib3 directly for a
ServiceAccount, a token or a client certificate; the official ``kubernetes`` client only
for credentials that need it); everything else stays raw: responses are bytes for
``json.loads`` and watch streams are iterated line by line, so no ``V1Service``-style
model is ever built (too slow and too big at 20,000 Services: see BASELINES.md). Every
failure surfaces as ``KubeError`` (``GoneError`` for HTTP 410).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

from bgpd.kube import transport as transports
from bgpd.kube.errors import GoneError, KubeError, from_exception
from bgpd.kube.jsonstream import CHUNK_BYTES, loads, stream_list

log = logging.getLogger(__name__)

REQUEST_READ_TIMEOUT_S = 60.0
"""Read timeout of a non-watch request (one list page, an Event POST): generous, since a
page of 500 Services can take a while on a loaded API server."""

MAX_ERROR_BODY = 4096
"""Bytes of an error response kept for the message (a Status object is small)."""


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the body's start."""
    try:
        status = json.loads(body)
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            return status["message"]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


class KubeClient:
    """Raw GET/POST/PATCH/watch against the API server."""

    def __init__(self, transport: transports.Transport) -> None:
        self.transport = transport

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> KubeClient:
        """Client from a kubeconfig file (``None``: $KUBECONFIG or ~/.kube/config)."""
        return cls(transports.from_kubeconfig(path, context))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        """Client from the Pod's ServiceAccount (token re-read as the kubelet rotates it)."""
        return cls(transports.in_cluster())

    def close(self) -> None:
        self.transport.close()

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        read_timeout: float = REQUEST_READ_TIMEOUT_S,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request; return the undecoded urllib3 response (2xx only).

        The body is not read yet: the caller reads it (``.data``) or streams it.
        """
        what = f"{method} {path}"
        resp = self.transport.send(method, path, query, body, content_type, read_timeout)
        if 200 <= resp.status <= 299:
            return resp
        try:
            detail = _status_message(resp.read(MAX_ERROR_BODY))
        except (urllib3.exceptions.HTTPError, OSError):
            detail = resp.reason or ""
        finally:
            discard(resp)
        if resp.status == 410:
            raise GoneError(f"{what}: {detail}")
        raise KubeError(f"{what}: HTTP {resp.status}: {detail}", status=resp.status)

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON answer."""
        resp = self.request(method, path, **kwargs)
        try:
            return loads(resp.data)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise from_exception(exc, f"{method} {path}") from exc
        finally:
            resp.release_conn()

    def list_page(self, path: str, query: dict[str, Any], on_item: Callable[[Any], None]
                  ) -> tuple[dict[str, Any], int]:
        """One list page, streamed: ``on_item`` gets each object as it is decoded (see
        jsonstream.py: memory holds one object, not the page); returns (the list's other
        fields, metadata included; the body's size in bytes)."""
        resp = self.request("GET", path, query=query)
        try:
            return stream_list(resp.stream(CHUNK_BYTES), on_item)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise from_exception(exc, f"GET {path}") from exc
        finally:
            resp.release_conn()

    def call(self, method: str, path: str, **kwargs: Any) -> None:
        """``request`` when the answer's body is not needed (POST an Event, PATCH ...)."""
        resp = self.request(method, path, **kwargs)
        try:
            resp.drain_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise from_exception(exc, f"{method} {path}") from exc
        finally:
            resp.release_conn()

    @staticmethod
    def lines(resp: urllib3.BaseHTTPResponse, what: str) -> Iterator[bytes]:
        """The lines of a streamed (watch) response; failures become KubeError."""
        try:
            for line in resp:
                if line.strip():
                    yield line
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise from_exception(exc, what) from exc


def discard(resp: urllib3.BaseHTTPResponse) -> None:
    """Give up a response whose body may be unread or broken: close its connection (so no
    stale bytes are read by the next request on it) and return the slot to the pool."""
    try:
        resp.close()
    finally:
        resp.release_conn()
