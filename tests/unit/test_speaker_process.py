"""ExaBGP's supervisor (bgpd.speaker.process) and API helper (bgpd.speaker.bridge), run on
stand-in processes."""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from bgpd.speaker import bridge, process
from bgpd.speaker.bridge import argv as bridge_argv
from bgpd.speaker.process import Supervisor

TIMEOUT = 10.0


def test_an_exit_is_noticed_while_a_leftover_child_still_holds_the_output_pipe(monkeypatch):
    monkeypatch.setattr(process, "RESTART_BACKOFF_INITIAL", 60.0)  # no restart in this test
    exits = []
    exited = threading.Event()

    def on_exit(code):
        exits.append(code)
        exited.set()

    # The "ExaBGP" leaves a child holding its stdout (as the API helper used to) and dies.
    sup = Supervisor(["sh", "-c", "sleep 60 & kill -9 $$"], dict(os.environ), on_exit=on_exit)
    started = time.monotonic()
    sup.start()
    pgid = sup._proc.pid
    try:
        assert exited.wait(TIMEOUT), "the exit went unnoticed"
        assert exits == [-signal.SIGKILL]
        assert time.monotonic() - started < TIMEOUT
    finally:
        sup.stop()
        try:
            os.killpg(pgid, signal.SIGKILL)  # the leftover sleep
        except ProcessLookupError:
            pass


def test_nothing_is_started_once_stop_was_called():
    sup = Supervisor(["true"], dict(os.environ))
    sup._stopping.set()  # stop() landed between the backoff wait and the spawn
    assert sup._spawn() is False
    assert sup._proc is None


def test_the_bridge_leaves_when_exabgp_dies_and_does_not_hold_its_stderr(tmp_path):
    path = str(tmp_path / "api.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    # We play ExaBGP: the bridge's parent, holding its stdin/stdout pipes.
    bridge = subprocess.Popen(
        bridge_argv(sys.executable, path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        # Connected: its stderr (ExaBGP's output pipe, read by the agent) is released.
        ready, _, _ = select.select([bridge.stderr], [], [], TIMEOUT)
        assert ready and os.read(bridge.stderr.fileno(), 100) == b""
        bridge.stdin.write(b'{"type": "state"}\n')
        bridge.stdin.flush()
        assert conn.recv(100) == b'{"type": "state"}\n'
        bridge.stdin.close()  # "ExaBGP" dies
        bridge.stdout.close()
        assert conn.recv(100) == b"", "the agent must see the connection end"
        assert bridge.wait(TIMEOUT) == 0
        conn.close()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
        listener.close()


def test_the_bridge_loads_only_compiled_modules():
    # It races ExaBGP's first session (see the bridge's docstring): a Python module (one
    # that imports enum, typing, or site-packages) costs every session's first route tens
    # of ms. Built-in, frozen (os in 3.11) and C extension modules load in microseconds.
    import ast
    import importlib.util

    tree = ast.parse(open(bridge.__file__).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in getattr(node, "names", [])}
    assert imported
    for name in imported:
        origin = importlib.util.find_spec(name).origin or ""
        assert origin in ("built-in", "frozen") or origin.endswith(".so"), (name, origin)
    assert bridge_argv("py", "/s")[:3] == ["py", "-I", "-S"]
