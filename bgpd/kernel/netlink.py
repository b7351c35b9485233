"""A NETLINK_ROUTE socket inside a network namespace, with bulk send and dump helpers.

Why not ``IPRoute(netns=...)``: in pyroute2 0.9.7 it forks a helper process that enters the
namespace and passes the socket back (``pyroute2.netns.create_socket``), wraps it in an
asyncio transport, and defaults to *creating* a missing namespace. The agent is threaded,
and a fork from a threaded process is fragile, so the socket is opened by a short-lived
thread that enters the namespace with pyroute2's ``setns`` (``setns(CLONE_NEWNET)`` only
moves the calling thread) and never creates it. A netlink socket stays bound to the
namespace it was opened in, so every later call works from any thread.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NETLINK_ROUTE, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR

from bgpd.kernel.errors import KernelError
from bgpd.kernel.messages import HDR, barrier_request, parse_error

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

# Big enough for every error of one send chunk plus a dump burst; root may exceed rmem_max.
DEFAULT_RCVBUF = 32 * 1024 * 1024
SNDBUF = 4 * 1024 * 1024
# Bytes of requests per sendmsg: the kernel handles one send synchronously, so errors of a
# chunk are queued before send() returns and are drained before the next chunk.
SEND_CHUNK_BYTES = 64 * 1024
RECV_BYTES = 1024 * 1024
# How long the kernel may take to answer a barrier or finish a dump.
REPLY_TIMEOUT_S = 30.0
NAMESPACE_ENTER_TIMEOUT_S = 10.0
DUMP_RETRIES = 5

ErrorMap = dict  # seq -> (errno, text)


def open_route_socket(netns: str | None) -> socket.socket:
    """A raw NETLINK_ROUTE socket living in ``netns`` (None: this process's namespace)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    box: dict = {}

    def enter() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)
            box["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        except Exception as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=enter, name=f"netns-enter-{netns}", daemon=True)
    thread.start()
    thread.join(NAMESPACE_ENTER_TIMEOUT_S)
    if "sock" not in box:
        raise KernelError(f"cannot open a netlink socket in netns {netns!r}") from box.get("error")
    return box["sock"]


class NetlinkChannel:
    """One netlink socket; ``groups`` subscribes it to multicast notifications."""

    def __init__(self, netns: str | None, groups: int = 0, rcvbuf: int = DEFAULT_RCVBUF):
        try:
            self.sock = open_route_socket(netns)
            sock = self.sock
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
                sock.setsockopt(SOL_NETLINK, opt, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF)
            sock.bind((0, groups))
        except OSError as exc:
            raise KernelError(f"netlink socket setup failed: {exc}") from exc
        self._seq = int(time.time()) & 0xFFFFFF
        self.lost_errors = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------------ bulk writes

    def send_bulk(self, messages: list[bytes]) -> ErrorMap:
        """Send requests without per-message ACKs, then an ACKed barrier; return the
        errors the kernel reported, keyed by the sequence number of the failed request.

        ``lost_errors`` is set when the error queue overflowed: the caller must then
        re-read the table instead of trusting this map.
        """
        errors: ErrorMap = {}
        self.lost_errors = False
        try:
            chunk: list[bytes] = []
            size = 0
            for data in messages:
                chunk.append(data)
                size += len(data)
                if size >= SEND_CHUNK_BYTES:
                    self.sock.send(b"".join(chunk))
                    self._drain(errors, block_for=None)
                    chunk, size = [], 0
            barrier = self.next_seq()
            chunk.append(barrier_request(barrier))
            self.sock.send(b"".join(chunk))
            self._drain(errors, block_for=barrier)
        except OSError as exc:
            raise KernelError(f"netlink bulk send failed: {exc}") from exc
        return errors

    def _drain(self, errors: ErrorMap, block_for: int | None) -> None:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            try:
                flags = 0 if block_for is not None else socket.MSG_DONTWAIT
                if block_for is not None:
                    self._wait_readable(deadline)
                buf = self.sock.recv(RECV_BYTES, flags)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost_errors = True
                continue
            for off, length, mtype in iter_messages(buf):
                if mtype != NLMSG_ERROR:
                    continue
                err, seq, text = parse_error(buf, off, length)
                if seq == block_for:
                    return
                if err:
                    errors[seq] = (err, text or os.strerror(err))

    def _wait_readable(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
            raise KernelError("netlink reply timed out")

    # ------------------------------------------------------------------------ dumps

    def dump(self, make_request: Callable[[int], bytes], wanted: int) -> list:
        """All ``(buf, off, length)`` of message type ``wanted`` from one dump request,
        retried while the kernel flags the dump as interrupted by concurrent changes."""
        for _ in range(DUMP_RETRIES):
            items, interrupted = self._dump_once(make_request, wanted)
            if not interrupted:
                return items
        return items

    def _dump_once(self, make_request: Callable[[int], bytes], wanted: int):
        seq = self.next_seq()
        items = []
        interrupted = False
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        try:
            self.sock.send(make_request(seq))
            while True:
                self._wait_readable(deadline)
                buf = self.sock.recv(RECV_BYTES)
                for off, length, mtype in iter_messages(buf):
                    flags, mseq = HDR.unpack_from(buf, off)[2:4]
                    if mseq != seq:
                        continue
                    if flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if mtype == NLMSG_DONE:
                        return items, interrupted
                    if mtype == NLMSG_ERROR:
                        err, _, text = parse_error(buf, off, length)
                        raise KernelError(f"netlink dump failed: {os.strerror(err)} {text}")
                    if mtype == wanted:
                        items.append((buf, off, length))
        except OSError as exc:
            raise KernelError(f"netlink dump failed: {exc}") from exc


def iter_messages(buf: bytes) -> Iterator[tuple[int, int, int]]:
    off = 0
    end = len(buf)
    while off + 16 <= end:
        length, mtype = HDR.unpack_from(buf, off)[:2]
        if length < 16:
            return
        yield off, length, mtype
        off += (length + 3) & ~3
