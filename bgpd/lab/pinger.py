"""A steady ICMP echo stream (like ``ping -i 0.01 -c N``) in pure Python, for the lab's
zero-loss checks without depending on iputils. Needs root (raw socket). Prints one JSON line:
{"sent": N, "received": M, "lost_seq": [...]}.

    ip netns exec clab-single-tor-client python -m bgpd.lab.pinger 10.244.1.10 --count 1500
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _packet(ident: int, seq: int) -> bytes:
    payload = b"bgpd-lab-ping" + struct.pack("!d", time.time())
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def ping(target: str, count: int, interval: float, wait: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    got: set[int] = set()
    next_send = time.monotonic()
    sent = 0
    end = None
    while True:
        now = time.monotonic()
        if sent < count and now >= next_send:
            sock.sendto(_packet(ident, sent & 0xFFFF), (target, 0))
            sent += 1
            next_send += interval
            if sent == count:
                end = now + wait
        if end is not None and (now >= end or len(got) == count):
            break
        timeout = max(0.0, min(next_send if sent < count else end, now + 0.05) - now)
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            data, addr = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and addr[0] == target:
                got.add(seq)
    lost = [s for s in range(sent) if (s & 0xFFFF) not in got]
    return {"sent": sent, "received": sent - len(lost), "lost_seq": lost[:50]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bgpd.lab.pinger")
    p.add_argument("target")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for late replies")
    args = p.parse_args(argv)
    result = ping(args.target, args.count, args.interval, args.wait)
    print(json.dumps(result), flush=True)
    return 0 if result["received"] == result["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
