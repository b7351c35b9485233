"""HTTP: /metrics, /healthz, /readyz and read-only /debug/* JSON. GET only: nothing here
can change the agent's state (kube-router's unauthenticated admin API was a CVE).

Two listeners: the debug address (default 127.0.0.1:9180: all paths) and the metrics
address (default 0.0.0.0:9181: /metrics, /healthz and /readyz only, which is what kubelet
probes and Prometheus need; debug views stay on loopback).

Limits (the metrics address is reachable from every pod under hostNetwork): one asyncio
loop thread serves both listeners, so an idle or slow connection costs a socket, never a
thread; /healthz and /readyz are answered on the loop, /metrics and /debug/* bodies in
HTTP_WORKERS (2) threads. REQUEST_TIMEOUT_S (5 s) for a request's line, headers and body
(from connect, for the first one); IDLE_TIMEOUT_S (15 s) between kept-alive requests;
WRITE_TIMEOUT_S (10 s) for a client to take a response; MAX_REQUEST_LINE (8 KiB, 414),
MAX_HEADER_BYTES (8 KiB, 431), MAX_BODY_BYTES (8 KiB); MAX_CONNECTIONS (256) per listener and
MAX_PER_SOURCE (32) per client address, beyond which a new connection gets a 503 and is
closed. Connections from the node itself (peer address = the address reached: the kubelet
probing the node IP, the CLI on 127.0.0.1) count only against MAX_PER_SOURCE, so pods
together cannot take the slots the probes need.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bgpd import views
from bgpd.agent import Agent
from bgpd.metrics import registry_for

log = logging.getLogger("bgpd.http")

PUBLIC_PATHS = ("/metrics", "/healthz", "/readyz")
DEBUG_PATHS = ("/debug/status", "/debug/peers", "/debug/routes", "/debug/explain",
               "/debug/diff")

# A real client sends its whole request in one packet; 5 s leaves room for a loaded node
# and bounds how long a silent or slowloris connection holds a slot.
REQUEST_TIMEOUT_S = 5.0
# Prometheus and the CLI reuse connections; between requests a connection costs a slot, so
# it is given back after 15 s (a scrape interval of 15 s or more just reconnects).
IDLE_TIMEOUT_S = 15.0
# A client that does not read its response would otherwise keep the buffered body forever.
WRITE_TIMEOUT_S = 10.0
# Our URLs are short; 8 KiB (the common proxy default) is generous and bounds the buffer a
# connection may fill (the stream buffer holds at most twice its limit before pausing).
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 8 * 1024
# GET needs no body; a small one (a POST answered 405) is read and dropped so that closing
# the connection does not reset it before the client has read the answer.
MAX_BODY_BYTES = 8 * 1024
# File descriptors and memory per listener; the kubelet and Prometheus need a handful.
MAX_CONNECTIONS = 256
# One pod (one address) must not take every slot: kubelet probes come from another address.
MAX_PER_SOURCE = 32
# Rendering holds the GIL and the agent's view lock briefly; more threads would not be
# faster, and a flood of /metrics requests only queues here, never delays /healthz.
HTTP_WORKERS = 2
# A refusal flood must not flood the log: one warning per listener per minute, with a count.
REFUSAL_LOG_INTERVAL_S = 60.0
# stop() waits this long for the loop thread (it cancels every connection first).
STOP_TIMEOUT_S = 5.0

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _show(sockname: tuple) -> str:
    host, port = sockname[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Reply(Exception):  # a request we cannot serve: answer this, then close

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.body = code, (text + "\n").encode()


class _Listener:
    def __init__(self, address: str, debug: bool):
        host, port = _split(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # "[::]" means every address, IPv4 too (create_server would make it IPv6-only).
        dual = host == "::" and socket.has_dualstack_ipv6()
        self.sock = socket.create_server((host, port), family=family, dualstack_ipv6=dual)
        self.debug = debug
        self.remote = 0  # connections counted against MAX_CONNECTIONS
        self.per_source: collections.Counter[str] = collections.Counter()
        self.refused, self.warned_at = 0, 0.0  # refusals since the last warning, and when


async def _read_request(reader: asyncio.StreamReader, first: bytes) -> tuple[str, str, bool]:
    """Method, target and whether the connection may be kept alive afterwards."""
    try:
        line = first + await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _Reply(414, "request line too long") from None
    if len(line) > MAX_REQUEST_LINE:
        raise _Reply(414, "request line too long")
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Reply(400, "bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    size = 0
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _Reply(431, "request headers too large") from None
        size += len(raw)
        if size > MAX_HEADER_BYTES:
            raise _Reply(431, "request headers too large")
        if raw in (b"\r\n", b"\n"):
            break
        name, colon, value = raw.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise _Reply(400, "malformed header")
        headers[name.lower()] = value.strip()
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    length = headers.get("content-length", "0")
    if "transfer-encoding" in headers or not length.isdigit() or int(length) > MAX_BODY_BYTES:
        keep = False  # a body we will not read: answer, then close
    elif int(length):
        await reader.readexactly(int(length))
    return method, target, keep


async def _send(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str,
                keep: bool) -> None:
    head = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", "Server: bgpd",
            f"Date: {formatdate(usegmt=True)}", f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}"]
    if code == 405:
        head.append("Allow: GET")
    if not keep:
        head.append("Connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await writer.drain()


class HttpServers:
    """Binds both listeners at construction (a taken port fails here, before the agent
    starts); ``addresses`` maps "debug" and "metrics" to the bound "host:port". Port 0
    picks a free port, one per listener (tests use it)."""

    def __init__(self, agent: Agent, debug_address: str, metrics_address: str):
        self._agent = agent
        self._registry = registry_for(agent)  # one registry: the histogram drains once per scrape
        self._scrape = threading.Lock()  # so two scrapes at once do not race on that drain
        debug = _Listener(debug_address, True)
        shared = metrics_address == debug_address and _split(debug_address)[1] != 0
        metrics = debug if shared else _Listener(metrics_address, False)
        self._listeners = [debug] if metrics is debug else [debug, metrics]
        self.addresses = {"debug": _show(debug.sock.getsockname()),
                          "metrics": _show(metrics.sock.getsockname())}
        self._pool = ThreadPoolExecutor(HTTP_WORKERS, thread_name_prefix="http-worker")
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()  # binds to the loop that first waits on it
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            raise RuntimeError("the HTTP loop did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(STOP_TIMEOUT_S)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for lst in self._listeners:
            lst.sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._started.set()  # never leave start() waiting for a loop that died

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        servers = [await asyncio.start_server(functools.partial(self._admit, lst), sock=lst.sock,
                                              limit=max(MAX_REQUEST_LINE, MAX_HEADER_BYTES))
                   for lst in self._listeners]
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            for server in servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let the aborted transports close their sockets

    def _admit(self, lst: _Listener, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> None:
        """Runs on accept, before any task exists: a refused connection costs nothing more."""
        peer = (writer.get_extra_info("peername") or ("?",))[0]
        local = peer == (writer.get_extra_info("sockname") or ("",))[0]
        if lst.per_source[peer] >= MAX_PER_SOURCE or (not local and lst.remote >= MAX_CONNECTIONS):
            writer.write(_BUSY)  # fits the socket buffer: close() does not wait for the client
            writer.close()
            lst.refused += 1
            if time.monotonic() - lst.warned_at >= REFUSAL_LOG_INTERVAL_S:
                log.warning("event=http_refused listener=%s last_source=%s refused=%d "
                            "open=%d", _show(lst.sock.getsockname()), peer, lst.refused,
                            lst.remote)
                lst.warned_at, lst.refused = time.monotonic(), 0
            return
        lst.per_source[peer] += 1
        if not local:
            lst.remote += 1

        def release(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            lst.per_source[peer] -= 1
            if not lst.per_source[peer]:
                del lst.per_source[peer]  # the table stays as small as the open connections
            if not local:
                lst.remote -= 1
            if not task.cancelled() and task.exception() is not None:
                log.error("event=http_error error=%r", task.exception())

        task = asyncio.ensure_future(self._serve(lst, peer, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(release)

    async def _serve(self, lst: _Listener, peer: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        # No write buffer above the kernel's: drain() returns only once a response is handed
        # over, so the close below never has to wait for (or drop) a slow client's data.
        writer.transport.set_write_buffer_limits(high=0)
        first = b""  # a kept-alive connection's next request starts with this byte
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        method, target, keep = await _read_request(reader, first)
                except _Reply as bad:
                    return await _send(writer, bad.code, bad.body, "text/plain", False)
                code, body, ctype = await self._answer(lst.debug, method, target)
                if method == "HEAD":  # (a 405) no body may follow, or it reads as the next answer
                    body = b""
                log.debug("event=http peer=%s method=%s target=%r code=%d", peer, method,
                          target[:200], code)
                await _send(writer, code, body, ctype, keep)
                if not keep:
                    return
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    first = await reader.read(1)
                if not first:
                    return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return  # silent, slow, gone: nothing to answer
        finally:
            writer.transport.abort()  # the write buffer is empty unless the client stalled

    async def _answer(self, debug: bool, method: str, target: str) -> tuple[int, bytes, str]:
        if method != "GET":
            return 405, b"read-only: only GET is served\n", "text/plain"
        url = urlsplit(target)
        if url.path in ("/healthz", "/readyz"):  # on the loop: never queued behind /metrics
            ok, why = self._agent.healthy() if url.path == "/healthz" else self._agent.ready()
            return 200 if ok else 503, (why + "\n").encode(), "text/plain"
        if url.path not in PUBLIC_PATHS and not debug:
            return 404, b"not found (debug views are on the debug address)\n", "text/plain"
        if url.path not in PUBLIC_PATHS + DEBUG_PATHS:
            return 404, b"not found\n", "text/plain"
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._render, url.path, parse_qs(url.query))
        except Exception:
            log.exception("event=http_render_failed path=%s", url.path)
            return 500, b"internal error\n", "text/plain"

    def _render(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        if path == "/metrics":  # in a worker thread, like the views: both walk the agent's state
            with self._scrape:
                return 200, generate_latest(self._registry), CONTENT_TYPE_LATEST
        agent, code, doc = self._agent, 200, None
        if path == "/debug/status":
            doc = views.status(agent)
        elif path == "/debug/peers":
            doc = views.peers(agent)
        elif path == "/debug/routes":
            which = query.get("kind", ["advertised"])[0]
            if which in ("advertised", "received", "kernel"):
                doc = views.routes(agent, which)
            else:
                code, doc = 400, {"error": f"kind {which!r}: advertised, received or kernel"}
        elif path == "/debug/explain":
            doc = views.explain(agent, query.get("target", [""])[0])
            code = 400 if "error" in doc else 200
        else:
            doc = views.diff(agent)
        return code, json.dumps(doc, indent=1).encode() + b"\n", "application/json"
