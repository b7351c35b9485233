"""The HTTP listeners under abuse: silent, slow, oversized and too many connections.

The metrics address is reachable from every pod (hostNetwork), so these tests play the
attacker from one loopback address (127.0.0.3, ...) and the kubelet from another
(127.0.0.2), against real sockets. Every wait polls with a deadline.
"""

from __future__ import annotations

import http.client
import math
import select
import socket
import threading
import time

import pytest

from bgpd import http as bgpd_http
from bgpd.agent import Agent
from bgpd.http import HttpServers
from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, Speakers
from tests.unit.policy_builders import NODE, config, snapshot

HOST = "127.0.0.1"
KUBELET = "127.0.0.2"
ATTACKER = "127.0.0.3"


def make_agent() -> Agent:
    agent = Agent(config(), NODE, FakeCluster(snapshot()), Speakers(), FakeKernel(),
                  FakeEvents(), clock=lambda: 1000.0)
    agent.reconcile()
    return agent


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


@pytest.fixture
def agent():
    return make_agent()


@pytest.fixture
def clients():
    """Client sockets a test opened, closed at teardown."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


@pytest.fixture
def servers(agent, clients):
    before = set(threading.enumerate())
    srv = HttpServers(agent, f"{HOST}:0", f"{HOST}:0")
    srv.start()
    try:
        yield srv
    finally:
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 2.0, "stop() took too long"
        left = [t.name for t in set(threading.enumerate()) - before]
        assert not left, f"threads left running after stop(): {left}"


def debug_port(srv) -> int:
    return port_of(srv.addresses["debug"])


def metrics_port(srv) -> int:
    return port_of(srv.addresses["metrics"])


def connect(clients: list, port: int, source: str) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=5, source_address=(source, 0))
    clients.append(s)
    return s


def get(port: int, path: str, source: str = KUBELET, method: str = "GET",
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=2, source_address=(source, 0))
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_until_closed(s: socket.socket, deadline: float) -> tuple[bytes, float] | None:
    """Everything the server sent until it closed, and when; None if still open at the
    deadline. A reset counts as closed."""
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return None
        except ConnectionError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    return None


def still_open(s: socket.socket) -> bool:
    """Nothing to read, not even an EOF: the server holds the connection."""
    return not select.select([s], [], [], 0)[0]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def healthz_status(port: int, source: str) -> int | None:
    try:
        return get(port, "/healthz", source)[0]
    except (ConnectionError, http.client.HTTPException):
        return None


def timed_healthz(port: int, source: str = KUBELET) -> float:
    started = time.monotonic()
    status, _, body = get(port, "/healthz", source)
    assert (status, body) == (200, b"ok\n")
    return time.monotonic() - started


# -------------------------------------------------------------------- held connections


def test_healthz_answers_while_one_address_holds_hundreds_of_half_open_connections(
        servers, clients):
    port = metrics_port(servers)
    attack = [connect(clients, port, ATTACKER) for _ in range(300)]
    assert timed_healthz(port) < 2.0
    # The cap is what keeps them cheap: beyond MAX_PER_SOURCE they were closed at once,
    # the rest are still held (silent, within REQUEST_TIMEOUT_S).
    wait_until(lambda: sum(map(still_open, attack)) <= bgpd_http.MAX_PER_SOURCE, 2.0,
               "connections beyond the per-source cap to be closed")
    assert sum(map(still_open, attack)) == bgpd_http.MAX_PER_SOURCE
    assert timed_healthz(port) < 2.0


def test_idle_connections_cost_no_thread(servers, clients):
    port = metrics_port(servers)
    threads = threading.active_count()
    per_source = bgpd_http.MAX_PER_SOURCE - 1
    sources = [f"127.0.0.{10 + i}" for i in range(bgpd_http.MAX_CONNECTIONS // per_source)]
    held = [connect(clients, port, src) for src in sources for _ in range(per_source)]
    assert len(held) >= 240
    assert timed_healthz(port) < 2.0
    assert all(map(still_open, held)), "connections within both caps were closed"
    assert threading.active_count() == threads


def test_healthz_is_not_queued_behind_slow_bodies(servers, clients, agent, monkeypatch):
    release, busy = threading.Event(), []
    real = agent.snapshot_views

    def stuck():
        busy.append(1)
        release.wait(10)
        return real()

    monkeypatch.setattr(agent, "snapshot_views", stuck)
    slow = []  # more slow requests than workers: some wait in the queue
    for i in range(bgpd_http.HTTP_WORKERS + 3):
        s = connect(clients, debug_port(servers), f"127.0.0.{40 + i}")
        s.sendall(b"GET /debug/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        slow.append(s)
    try:
        wait_until(lambda: len(busy) == bgpd_http.HTTP_WORKERS, 2.0, "every worker to be stuck")
        assert timed_healthz(metrics_port(servers)) < 2.0
        assert timed_healthz(debug_port(servers)) < 2.0
    finally:
        release.set()
    for s in slow:
        got = read_until_closed(s, time.monotonic() + 5)
        assert got is not None and got[0].startswith(b"HTTP/1.1 200 ")


# -------------------------------------------------------------------------- timeouts


def test_silent_and_slowloris_clients_are_dropped_after_the_request_timeout(servers, clients):
    port = metrics_port(servers)
    started = time.monotonic()
    silent = connect(clients, port, ATTACKER)
    slow = connect(clients, port, ATTACKER)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # then one header byte a second
    drip = b"X-Pad: " + b"a" * 100
    limit = started + bgpd_http.REQUEST_TIMEOUT_S + 2.0
    slow_closed = None
    for byte in drip:
        slow_closed = read_until_closed(slow, min(limit, time.monotonic() + 1.0))
        if slow_closed is not None or time.monotonic() >= limit:
            break
        try:
            slow.send(bytes([byte]))
        except OSError:  # closed between the check and the send
            slow_closed = (b"", time.monotonic())
            break
    assert slow_closed is not None, "a slowloris client was still connected"
    assert slow_closed[0] == b""
    silent_closed = read_until_closed(silent, limit)
    assert silent_closed is not None, "a silent client was still connected"
    for _, at in (slow_closed, silent_closed):
        assert bgpd_http.REQUEST_TIMEOUT_S - 0.5 <= at - started <= limit - started


def test_keep_alive_serves_several_requests_then_closes_when_idle(servers, monkeypatch):
    monkeypatch.setattr(bgpd_http, "IDLE_TIMEOUT_S", 1.0)
    conn = http.client.HTTPConnection(HOST, metrics_port(servers), timeout=2,
                                      source_address=(KUBELET, 0))
    try:
        sock = None
        for path in ("/healthz", "/readyz", "/metrics"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
            sock = sock or conn.sock
            assert conn.sock is sock, "the connection was not kept alive"
        answered = time.monotonic()
        got = read_until_closed(sock, answered + 3.0)
        assert got is not None, "an idle kept-alive connection was not closed"
        assert got[0] == b"" and 0.5 <= got[1] - answered <= 3.0
    finally:
        conn.close()


# ---------------------------------------------------------------------- size limits


@pytest.mark.parametrize("request_bytes,code", [
    (b"GET /" + b"a" * (bgpd_http.MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * bgpd_http.MAX_HEADER_BYTES
     + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: aaaaaaaa\r\n" * 600 + b"\r\n", 431),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
])
def test_bad_or_oversized_requests_are_refused_and_closed(servers, clients, request_bytes,
                                                         code):
    s = connect(clients, metrics_port(servers), ATTACKER)
    s.sendall(request_bytes)
    got = read_until_closed(s, time.monotonic() + 2.0)
    assert got is not None, "the connection stayed open"
    assert got[0].startswith(b"HTTP/1.1 %d " % code)
    assert b"Connection: close" in got[0]


# ---------------------------------------------------------------------- connection caps


def test_per_source_cap_refuses_one_address_but_not_another(servers, clients):
    port = metrics_port(servers)
    held = [connect(clients, port, ATTACKER) for _ in range(bgpd_http.MAX_PER_SOURCE)]
    extra = connect(clients, port, ATTACKER)
    got = read_until_closed(extra, time.monotonic() + 1.0)
    assert got is not None and got[0].startswith(b"HTTP/1.1 503 ")
    assert all(map(still_open, held))
    assert timed_healthz(port, KUBELET) < 2.0
    # A slot given back is a slot again (once the server has seen the close).
    held.pop().close()
    wait_until(lambda: healthz_status(port, ATTACKER) == 200, 2.0, "the freed slot")


def test_listener_cap_spares_connections_from_the_node_itself(servers, clients):
    port = metrics_port(servers)
    cap, per = bgpd_http.MAX_CONNECTIONS, bgpd_http.MAX_PER_SOURCE
    sources = [f"127.0.0.{10 + i}" for i in range(math.ceil(cap / per))]
    held = [connect(clients, port, src) for src in sources for _ in range(per)][:cap]
    wait_until(lambda: sum(map(still_open, held)) == cap, 2.0, "the listener to fill up")
    outsider = connect(clients, port, KUBELET)
    got = read_until_closed(outsider, time.monotonic() + 1.0)
    assert got is not None and got[0].startswith(b"HTTP/1.1 503 ")
    # 127.0.0.1 -> 127.0.0.1: the peer address is the address it reached, like the
    # kubelet's probe of the node IP under hostNetwork.
    assert timed_healthz(port, HOST) < 2.0


# -------------------------------------------------------------------- existing behaviour


def test_paths_methods_and_content_types_are_unchanged(servers):
    debug, metrics = debug_port(servers), metrics_port(servers)
    for port in (debug, metrics):
        status, headers, body = get(port, "/debug/status", method="POST", body=b"{}")
        assert (status, body) == (405, b"read-only: only GET is served\n")
        assert headers["allow"] == "GET"
        status, headers, _ = get(port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=")
        for path in ("/healthz", "/readyz"):
            assert get(port, path)[::2] == (200, b"ok\n")
    assert get(metrics, "/debug/status")[::2] == (
        404, b"not found (debug views are on the debug address)\n")
    status, headers, _ = get(debug, "/debug/status")
    assert status == 200 and headers["content-type"] == "application/json"
    assert get(debug, "/debug/routes?kind=nonsense")[0] == 400
    assert get(debug, "/nope")[::2] == (404, b"not found\n")


def test_stop_is_prompt_with_connections_open_and_closes_them(agent):
    before = set(threading.enumerate())
    srv = HttpServers(agent, f"{HOST}:0", f"{HOST}:0")
    srv.start()
    port = metrics_port(srv)
    socks = [socket.create_connection((HOST, port), timeout=5, source_address=(ATTACKER, 0))
             for _ in range(10)]
    try:
        socks[0].sendall(b"GET /healthz HTTP/1.1\r\nHost")  # caught mid-request
        assert get(debug_port(srv), "/metrics")[0] == 200  # a worker thread exists
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.0
        assert not set(threading.enumerate()) - before
        for c in socks:
            assert read_until_closed(c, time.monotonic() + 1.0) is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=1).close()
    finally:
        for c in socks:
            c.close()


def test_a_client_that_does_not_read_is_dropped_after_the_write_timeout(servers, clients,
                                                                        monkeypatch):
    monkeypatch.setattr(bgpd_http, "WRITE_TIMEOUT_S", 1.0)
    s = socket.socket()
    clients.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up fast
    s.bind((ATTACKER, 0))
    s.connect((HOST, metrics_port(servers)))
    s.setblocking(False)
    pipeline = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    started = time.monotonic()
    deadline = started + 10.0
    while time.monotonic() < deadline:  # keep asking, never read the answers
        try:
            s.send(pipeline)
        except BlockingIOError:
            time.sleep(0.05)
        except ConnectionError:
            break
    assert time.monotonic() < deadline, "a client that never reads was still connected"
