"""The agent's end of ExaBGP's API (bgpd.speaker.channel) over a real unix socket."""

import socket
import threading

from bgpd.speaker.channel import ApiServer

TIMEOUT = 5.0


def test_a_line_the_agent_cannot_handle_does_not_close_the_connection(tmp_path):
    seen, connected, disconnected = [], threading.Event(), threading.Event()
    got_good = threading.Event()

    def on_line(conn, line):
        if "boom" in line:
            raise ValueError("a bug in a handler")
        seen.append(line)
        got_good.set()

    server = ApiServer(
        str(tmp_path / "api.sock"),
        lambda conn: connected.set(),
        on_line,
        lambda conn: disconnected.set(),
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(server.path)
        assert connected.wait(TIMEOUT)
        conn = server.current
        replies = []
        conn.send("cmd", replies.append)
        client.sendall(b'{"boom": 1}\ndone\n{"ok": 1}\n')
        assert got_good.wait(TIMEOUT)
        assert seen == ['{"ok": 1}']
        assert replies == [True]
        assert not conn.closed.is_set() and not disconnected.is_set()
        assert client.recv(100) == b"cmd\n"
    finally:
        client.close()
        server.close()
