"""The helper ExaBGP runs as its API process: relays its stdin/stdout to the agent's socket.

``python -m bgpd.speaker.bridge /path/api.sock``. ExaBGP only talks to child processes
through pipes; the agent is ExaBGP's parent, so this relay joins the two. It exits as soon
as either side closes. When ExaBGP dies (even SIGKILL, OOM) its pipe ends close and the
bridge shuts its socket, so the agent sees the speaker gone and does not wait for an orphan.
If the agent goes away (even killed), the bridge kills ExaBGP with SIGKILL: ExaBGP 5.0.15
keeps running without its API process, and an orphan speaker would hold our sessions
against the agent's next ExaBGP. SIGKILL sends no NOTIFICATION, so peers keep our routes
under graceful restart until the new speaker replays them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

CHUNK = 65536
CONNECT_TIMEOUT = 10.0  # seconds; the agent listens before it starts ExaBGP


def _pump(read_fd: int, write) -> str:
    """Copy until one side ends: "read" when the source closed, "write" when the sink did."""
    while True:
        try:
            data = os.read(read_fd, CHUNK)
        except OSError:
            return "read"
        if not data:
            return "read"
        try:
            write(data)
        except OSError:
            return "write"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m bgpd.speaker.bridge SOCKET\n")
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(argv[0])
    except OSError as exc:
        sys.stderr.write(f"bridge: cannot reach the agent at {argv[0]}: {exc}\n")
        return 1
    sock.settimeout(None)
    # Our stderr is ExaBGP's, a pipe the agent reads to EOF to learn that ExaBGP is gone:
    # from here on we must not hold it open, or a dead ExaBGP would look alive until we exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    exabgp = os.getppid()
    upstream_end: list[str] = []

    def upstream() -> None:
        # ExaBGP -> agent. When ExaBGP's end closes (it exited, even by SIGKILL), the agent
        # must see its socket close: shut it down, which also ends the pump below.
        upstream_end.append(_pump(stdin_fd, sock.sendall))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    # agent -> ExaBGP here; either direction ending ends the bridge.
    downstream_end = _pump(sock.fileno(), lambda data: _write_all(stdout_fd, data))
    exabgp_gone = upstream_end == ["read"] or downstream_end == "write"
    if not exabgp_gone and os.getppid() == exabgp != 1:
        os.kill(exabgp, signal.SIGKILL)  # the agent went away: its ExaBGP must not live on
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
