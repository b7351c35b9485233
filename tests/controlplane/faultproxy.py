"""A TCP proxy on 127.0.0.1 that a test drives to break connections to the API server.

TLS passes through untouched (the serving certificate names 127.0.0.1, so clients pointed
at the proxy verify it as usual). Faults:

- ``cut()``: close every open connection (like an API-server crash or a load-balancer reset);
- ``stall()`` / ``resume()``: stop forwarding bytes on open connections while keeping them
  open (a silently dead path: only the client's read timeout can notice); new connections
  still work unless ``refuse`` is also set;
- ``refuse`` attribute: new connections are accepted and closed at once (API server away).
"""

from __future__ import annotations

import select
import socket
import threading

ACCEPT_POLL_S = 0.2
"""How often the accept loop checks whether it should stop."""

PUMP_POLL_S = 0.2
"""How often a connection's pump re-checks the stall/stop flags while idle."""

BUFFER = 65536


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.stalled = threading.Event()
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class FaultProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<target_port> with injectable faults."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refuse = False
        self._stall_new = False
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()
        self.cut()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # ------------------------------------------------------------------ faults

    def cut(self) -> int:
        """Close every open connection; return how many there were."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()
        return len(conns)

    def stall(self, new_connections: bool = False) -> None:
        """Stop forwarding on open connections (and on new ones if asked)."""
        with self._lock:
            self._stall_new = new_connections
            for conn in self._conns:
                conn.stalled.set()

    def resume(self) -> None:
        with self._lock:
            self._stall_new = False
            for conn in self._conns:
                conn.stalled.clear()

    # ---------------------------------------------------------------- plumbing

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()  # like the real server being down: connection reset
                continue
            conn = _Conn(client, upstream)
            with self._lock:
                if self._stall_new:
                    conn.stalled.set()
                self._conns.add(conn)
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: _Conn) -> None:
        """Copy bytes both ways until either side closes or the connection is cut."""
        peers = {conn.client: conn.upstream, conn.upstream: conn.client}
        try:
            while not conn.closed.is_set() and not self._stop.is_set():
                if conn.stalled.is_set():
                    conn.closed.wait(PUMP_POLL_S)  # hold the bytes: the peer sees silence
                    continue
                readable, _, _ = select.select(list(peers), [], [], PUMP_POLL_S)
                for src in readable:
                    if conn.stalled.is_set():
                        break
                    data = src.recv(BUFFER)
                    if not data:
                        return
                    peers[src].sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
