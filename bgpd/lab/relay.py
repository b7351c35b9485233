"""TCP relay: the lab API server, reachable inside node namespaces at 127.0.0.1:6443.

kube-apiserver listens on 127.0.0.1 of the host namespace, which the lab's node namespaces
cannot reach (and must not: no lab namespace gets a route to the host's networks). This one
process opens a listening socket *inside* each node namespace (``setns`` on the thread that
creates it; a socket stays in the namespace it was made in) and connects each accepted
connection to the API server from the host namespace. No route, no address, no interface is
added anywhere; TLS passes through untouched (the serving certificate covers 127.0.0.1).

    python -m bgpd.lab.relay --target 127.0.0.1:PORT --listen 127.0.0.1:6443 NETNS...
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading

from bgpd.lab.system import in_netns

BUFFER = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(BUFFER)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept_loop(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(client, target), daemon=True).start()


def listen_in(netns: str, address: tuple[str, int]) -> socket.socket:
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    return sock


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bgpd.lab.relay")
    p.add_argument("--target", required=True, help="HOST:PORT in this (host) namespace")
    p.add_argument("--listen", default="127.0.0.1:6443", help="HOST:PORT in each netns")
    p.add_argument("netns", nargs="+")
    args = p.parse_args(argv)
    th, _, tp = args.target.rpartition(":")
    lh, _, lp = args.listen.rpartition(":")
    target = (th, int(tp))
    threads = []
    for ns in args.netns:
        listener = listen_in(ns, (lh, int(lp)))
        t = threading.Thread(target=_accept_loop, args=(listener, target), daemon=True)
        t.start()
        threads.append(t)
    print(f"relay: {args.listen} in {', '.join(args.netns)} -> {args.target}", flush=True)
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
