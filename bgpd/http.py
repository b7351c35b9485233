"""HTTP: /metrics, /healthz, /readyz and read-only /debug/* JSON. GET only: nothing here
can change the agent's state (kube-router's unauthenticated admin API was a CVE).

Two listeners: the debug address (default 127.0.0.1:9180: all paths) and the metrics
address (default 0.0.0.0:9181: /metrics, /healthz and /readyz only, which is what kubelet
probes and Prometheus need; debug views stay on loopback).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bgpd import views
from bgpd.agent import Agent
from bgpd.metrics import registry_for

log = logging.getLogger("bgpd.http")

PUBLIC_PATHS = ("/metrics", "/healthz", "/readyz")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(agent: Agent, registry, debug: bool):
    class Handler(BaseHTTPRequestHandler):
        server_version = "bgpd"

        def log_message(self, fmt, *args):  # noqa: D401 - quiet: probes would flood the log
            log.debug("event=http %s", fmt % args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, doc) -> None:
            self._send(code, json.dumps(doc, indent=1).encode() + b"\n", "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            path = url.path
            if path == "/metrics":
                return self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            if path in ("/healthz", "/readyz"):
                ok, why = agent.healthy() if path == "/healthz" else agent.ready()
                return self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            if not debug:
                return self._send(404, b"not found (debug views are on the debug address)\n",
                                  "text/plain")
            if path == "/debug/status":
                return self._json(200, views.status(agent))
            if path == "/debug/peers":
                return self._json(200, views.peers(agent))
            if path == "/debug/routes":
                which = query.get("kind", ["advertised"])[0]
                if which not in ("advertised", "received", "kernel"):
                    return self._json(400, {"error": f"kind {which!r}: advertised, received "
                                                     "or kernel"})
                return self._json(200, views.routes(agent, which))
            if path == "/debug/explain":
                target = query.get("target", [""])[0]
                doc = views.explain(agent, target)
                return self._json(400 if "error" in doc else 200, doc)
            if path == "/debug/diff":
                return self._json(200, views.diff(agent))
            return self._send(404, b"not found\n", "text/plain")

        def _refuse(self) -> None:
            self._send(405, b"read-only: only GET is served\n", "text/plain")

        do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

    return Handler


class HttpServers:
    def __init__(self, agent: Agent, debug_address: str, metrics_address: str):
        registry = registry_for(agent)  # one registry: the histogram drains once per scrape
        self._servers = []
        if debug_address == metrics_address:
            self._servers.append(_Server(_split(debug_address), _handler(agent, registry, True)))
        else:
            self._servers.append(_Server(_split(debug_address), _handler(agent, registry, True)))
            self._servers.append(_Server(_split(metrics_address),
                                         _handler(agent, registry, False)))
        self._threads = [threading.Thread(target=s.serve_forever, name="http", daemon=True)
                         for s in self._servers]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
