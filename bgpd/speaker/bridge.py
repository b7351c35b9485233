"""The helper ExaBGP runs as its API process: relays its stdin/stdout to the agent's socket.

``python -I -S .../bgpd/speaker/bridge.py /path/api.sock``. ExaBGP only talks to child
processes through pipes; the agent is ExaBGP's parent, so this relay joins the two. It
exits as soon as either side closes. When ExaBGP dies (even SIGKILL, OOM) its pipe ends
close and the bridge shuts its socket, so the agent sees the speaker gone and does not
wait for an orphan.
If the agent goes away (even killed), the bridge kills ExaBGP with SIGKILL: ExaBGP 5.0.15
keeps running without its API process, and an orphan speaker would hold our sessions
against the agent's next ExaBGP. SIGKILL sends no NOTIFICATION, so peers keep our routes
under graceful restart until the new speaker replays them.

It must be up before ExaBGP's first session is: ExaBGP starts it and connects to its
peers at the same moment, and whatever it reports (the session up) waits in the pipe
until the bridge relays it. So it is run as a script with ``python -I -S`` (see argv())
and loads only compiled modules (``_socket`` and ``_thread``, not ``socket``, ``signal``
and ``threading``, which import ``enum``): about 15 ms to start instead of 70 ms with
``-m`` and site-packages, which under the load of a first table was 40-60 ms of every
session's first UPDATE.
"""

import _socket
import _thread
import os
import sys

CHUNK = 65536
CONNECT_TIMEOUT = 10.0  # seconds; the agent listens before it starts ExaBGP
SIGKILL = 9  # Linux: the signal module is not loaded (see above)


def argv(python: str, socket_path: str) -> list[str]:
    """The command ExaBGP runs as its API process."""
    return [python, "-I", "-S", os.path.abspath(__file__), socket_path]


def _pump(read_fd, write):
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


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(args):
    if len(args) != 1:
        sys.stderr.write("usage: python -I -S bridge.py SOCKET\n")
        return 2
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(args[0])
    except OSError as exc:
        sys.stderr.write(f"bridge: cannot reach the agent at {args[0]}: {exc}\n")
        return 1
    sock.settimeout(None)
    # Our stderr is ExaBGP's, a pipe the agent reads to EOF to learn that ExaBGP is gone:
    # from here on we must not hold it open, or a dead ExaBGP would look alive until we exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    exabgp = os.getppid()
    upstream_end = []

    def upstream():
        # ExaBGP -> agent. When ExaBGP's end closes (it exited, even by SIGKILL), the agent
        # must see its socket close: shut it down, which also ends the pump below.
        upstream_end.append(_pump(stdin_fd, sock.sendall))
        try:
            sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    _thread.start_new_thread(upstream, ())
    # agent -> ExaBGP here; either direction ending ends the bridge.
    downstream_end = _pump(sock.fileno(), lambda data: _write_all(stdout_fd, data))
    exabgp_gone = upstream_end == ["read"] or downstream_end == "write"
    if not exabgp_gone and os.getppid() == exabgp != 1:
        os.kill(exabgp, SIGKILL)  # the agent went away: its ExaBGP must not live on
    try:
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
