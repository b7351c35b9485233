"""Start ExaBGP without any capability: ``python -m bgpd.speaker.launch [--netns NS] -- ARGV``.

ExaBGP parses BGP from the network and needs no privilege: TCP MD5, TTL and GTSM socket
options and binding a source address are unprivileged, and it never listens below 1024
unless ``bgp.listen_port`` says so. The agent holds NET_ADMIN (routes) and, in the image,
its interpreter carries it as a file capability, so a plain exec would hand it on. This
helper, run as the speaker's first process:

1. joins the network namespace ``--netns`` if given (tests and benches; needs the caller's
   privilege, so it comes first);
2. drops every capability it can: the bounding set and root's exec-time grant when it may
   (root in the lab), then its own effective, permitted, inheritable and ambient sets;
3. sets no_new_privs, so no file capability or set-uid bit can give one back;
4. replaces itself with ARGV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWNET = 0x40000000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SETPCAP = 8
# noroot + no_setuid_fixup, each locked: uid 0 gets no capability from exec.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def join_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc().setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)


def _has(cap: int) -> bool:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def drop_capabilities() -> None:
    libc = _libc()
    if _has(CAP_SETPCAP):  # root (the lab): also the bounding set and exec's grant to uid 0
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
        for cap in range(last + 1):
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
        _check(libc.prctl(PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "securebits")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()  # all zero: nothing effective, permitted or inheritable
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def main(argv: list[str]) -> int:
    netns = None
    if argv[:1] == ["--netns"]:
        netns, argv = argv[1], argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        sys.stderr.write("usage: python -m bgpd.speaker.launch [--netns NAME] -- ARGV...\n")
        return 2
    argv = argv[1:]
    try:
        if netns:
            join_netns(netns)
        drop_capabilities()
    except OSError as exc:
        sys.stderr.write(f"bgpd speaker launch: {exc}\n")
        return 1
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
