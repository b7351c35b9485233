"""The agent's end of ExaBGP's process API: a unix socket the bridge helper connects to.

Every command is acknowledged (``done`` / ``error``) in the order sent, so a FIFO of
pending commands pairs each reply with its command. Replies are always read, even when
nobody waits for them, so ExaBGP's pipe never fills and stalls the speaker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("bgpd.speaker")

ACCEPT_POLL = 0.5  # seconds between checks of the stop flag while waiting for the bridge
READ_CHUNK = 65536
# Commands in flight at once: enough to keep ExaBGP busy between our reads of its replies,
# few enough that a failure or disconnect leaves little to reconcile.
WINDOW = 64
LISTEN_BACKLOG = 4


@dataclass
class Pending:
    line: str
    on_reply: Callable[[bool], None]
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool | None = None


class Connection:
    """One bridge connection, i.e. one ExaBGP process lifetime."""

    def __init__(self, sock: socket.socket, generation: int):
        self.sock = sock
        self.generation = generation
        self.closed = threading.Event()
        self._pending: deque[Pending] = deque()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()

    def send(self, line: str, on_reply: Callable[[bool], None]) -> Pending | None:
        """Queue one command; blocks while WINDOW commands await replies. None if closed."""
        item = Pending(line, on_reply)
        with self._cond:
            while len(self._pending) >= WINDOW and not self.closed.is_set():
                self._cond.wait()
            if self.closed.is_set():
                return None
            self._pending.append(item)
        try:
            with self._send_lock:
                self.sock.sendall((line + "\n").encode())
        except OSError:
            self.close()
            return None
        return item

    def wait_idle(self, timeout: float) -> bool:
        """True once every command sent has its reply; False on timeout or disconnect."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending or self.closed.is_set(), timeout
            ) and (not self.closed.is_set())

    def reply(self, ok: bool) -> None:
        with self._cond:
            item = self._pending.popleft() if self._pending else None
            self._cond.notify_all()
        if item is None:
            log.warning("ExaBGP replied %s to no command of ours", "done" if ok else "error")
            return
        item.ok = ok
        item.on_reply(ok)
        item.done.set()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._cond:
            lost = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for item in lost:
            item.done.set()  # no reply will come; nothing was recorded as applied


class ApiServer:
    """Accepts bridge connections; newest wins (an old ExaBGP's bridge is closed)."""

    def __init__(
        self,
        path: str,
        on_connect: Callable[[Connection], None],
        on_line: Callable[[Connection, str], None],
        on_disconnect: Callable[[Connection], None],
    ):
        self.path = path
        self._on_connect, self._on_line, self._on_disconnect = on_connect, on_line, on_disconnect
        self._stop = threading.Event()
        self._generation = 0
        self.current: Connection | None = None
        if os.path.exists(path):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)  # the API can announce anything: only root may connect
        self._listener.listen(LISTEN_BACKLOG)
        self._listener.settimeout(ACCEPT_POLL)
        self._thread = threading.Thread(
            target=self._accept_loop, name="speaker-api-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(None)
            self._generation += 1
            conn = Connection(sock, self._generation)
            old, self.current = self.current, conn
            if old is not None:
                old.close()
            self._on_connect(conn)
            threading.Thread(
                target=self._read_loop,
                args=(conn,),
                name=f"speaker-api-read-{conn.generation}",
                daemon=True,
            ).start()

    def _read_loop(self, conn: Connection) -> None:
        buffer = b""
        try:
            while True:
                try:
                    data = conn.sock.recv(READ_CHUNK)
                except OSError:
                    break
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").strip()
                    try:
                        if line == "done":
                            conn.reply(True)
                        elif line == "error":
                            conn.reply(False)
                        elif line:
                            self._on_line(conn, line)
                    except Exception:
                        # One line we cannot handle must not close the connection: the
                        # bridge would kill ExaBGP and every session with it.
                        log.exception("speaker API: cannot handle %r", line[:500])
        except Exception:  # a bug here must not leave ExaBGP blocked on a full pipe
            log.exception("speaker API reader failed")
        finally:
            conn.close()
            if self.current is conn:
                self.current = None
            self._on_disconnect(conn)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        if self.current is not None:
            self.current.close()
        self._thread.join(ACCEPT_POLL * 4)
        try:
            os.unlink(self.path)
        except OSError:
            pass
