"""The helper ExaBGP runs as its API process: relays its stdin/stdout to the agent's socket.

``python -m bgpd.speaker.bridge /path/api.sock``. ExaBGP only talks to child processes
through pipes; the agent is ExaBGP's parent, so this relay joins the two. It exits as soon
as either side closes. If the agent goes away (even killed), the bridge kills ExaBGP with
SIGKILL: ExaBGP 5.0.15 keeps running without its API process, and an orphan speaker would
hold our sessions against the agent's next ExaBGP. SIGKILL sends no NOTIFICATION, so peers
keep our routes under graceful restart until the new speaker replays them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

CHUNK = 65536
CONNECT_TIMEOUT = 10.0  # seconds; the agent listens before it starts ExaBGP


def _pump(read_fd: int, write) -> None:
    try:
        while True:
            data = os.read(read_fd, CHUNK)
            if not data:
                break
            write(data)
    except OSError:
        pass


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
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    exabgp = os.getppid()
    # ExaBGP -> agent in a thread, agent -> ExaBGP here; either ending ends the bridge.
    upstream = threading.Thread(target=_pump, args=(stdin_fd, sock.sendall), daemon=True)
    upstream.start()
    _pump(sock.fileno(), lambda data: _write_all(stdout_fd, data))
    if upstream.is_alive() and os.getppid() == exabgp != 1:
        # Kill first: our stderr is ExaBGP's, read by the agent, so writing may fail now.
        os.kill(exabgp, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
