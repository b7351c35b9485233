"""Real routers in network namespaces for integration tests: FRR (zebra + bgpd) and BIRD 2.

Every helper is a context manager that removes what it created (processes, namespaces,
runtime folders) even when the test fails. Namespaces are named ``bgpdtest-<tag>-<random>``
so parallel runs and other engineers' namespaces never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

FRR_DIR = Path("/usr/lib/frr")
FRR_RUN_DIR = Path("/var/run/frr")  # vtysh -N finds the daemons' sockets under here
COMMAND_TIMEOUT = 20.0  # one ip/vtysh/birdc call; they answer in milliseconds when healthy
STOP_TIMEOUT = 5.0  # SIGTERM grace before SIGKILL
DAEMON_READY_TIMEOUT = 15.0
POLL_INTERVAL = 0.05

T = TypeVar("T")


def run(*argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def wait_for(
    probe: Callable[[], T], timeout: float, what: str, interval: float = POLL_INTERVAL
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except RuntimeError as exc:  # a daemon still starting answers with errors
            if "exited" in str(exc):
                raise
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what} (last error: {last_exc})"
            )
        time.sleep(interval)


def unique_name(tag: str) -> str:
    return f"bgpdtest-{tag}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def netns(tag: str) -> Iterator[str]:
    name = unique_name(tag)
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        # Killing leftovers first: a namespace with live processes lingers after `del`.
        pids = run("ip", "netns", "pids", name, check=False).split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", name, check=False)


def link(ns_a: str, addrs_a: list[str], ns_b: str, addrs_b: list[str]) -> tuple[str, str]:
    """A veth between two namespaces with the given addresses (CIDR notation) on each end."""
    suffix = secrets.token_hex(3)
    a, b = f"va{suffix}", f"vb{suffix}"
    run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    run("ip", "link", "set", a, "netns", ns_a)
    run("ip", "link", "set", b, "netns", ns_b)
    for ns, dev, addrs in ((ns_a, a, addrs_a), (ns_b, b, addrs_b)):
        for addr in addrs:
            # nodad: IPv6 duplicate address detection would delay the session by seconds
            extra = ["nodad"] if ":" in addr else []
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev, *extra)
        run("ip", "-n", ns, "link", "set", dev, "up")
    return a, b


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)


class Frr:
    """FRR zebra + bgpd in ``ns``, with pathspace ``ns`` (so ``vtysh -N ns`` reaches them)."""

    def __init__(self, ns: str, bgpd_conf: str, workdir: Path):
        self.ns = ns
        self.workdir = workdir
        self.bgpd_conf = bgpd_conf
        self.rundir = FRR_RUN_DIR / ns
        self.zebra: subprocess.Popen | None = None
        self.bgpd: subprocess.Popen | None = None

    def _spawn(self, daemon: str, conf: str, *extra: str) -> subprocess.Popen:
        conf_path = self.workdir / f"{daemon}.conf"
        conf_path.write_text(conf)
        log = open(self.workdir / f"{daemon}.log", "ab")
        argv = [
            "ip", "netns", "exec", self.ns, str(FRR_DIR / daemon), "-N", self.ns,
            "-f", str(conf_path), "-i", str(self.rundir / f"{daemon}.pid"),
            "-z", str(self.rundir / "zserv.api"), "-u", "frr", "-g", "frr", *extra,
        ]  # fmt: skip
        with log:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.rundir, "frr", "frr")
        os.chmod(self.workdir, 0o777)  # the daemons run as frr and write their logs here
        if self.zebra is None or self.zebra.poll() is not None:
            self.zebra = self._spawn("zebra", "hostname zebra\n")
            wait_for(
                lambda: (self.rundir / "zserv.api").exists(), DAEMON_READY_TIMEOUT, "zebra socket"
            )
        self.start_bgpd()

    def start_bgpd(self) -> None:
        self.bgpd = self._spawn("bgpd", "hostname bgpd\n")
        wait_for(
            lambda: self.vtysh("show bgp summary json") is not None,
            DAEMON_READY_TIMEOUT,
            "bgpd vty",
        )
        # bgpd applies a -f file asynchronously, after it answers on its vty, so a test could
        # meet a half-configured peer; vtysh -f returns only once every line is applied.
        conf_path = self.workdir / "bgpd-applied.conf"
        conf_path.write_text(self.bgpd_conf)
        run("vtysh", "-N", self.ns, "-f", str(conf_path))

    def kill_bgpd(self) -> None:
        if self.bgpd is not None:
            stop_process(self.bgpd)
            self.bgpd = None

    def stop(self) -> None:
        self.kill_bgpd()
        if self.zebra is not None:
            stop_process(self.zebra)
            self.zebra = None
        shutil.rmtree(self.rundir, ignore_errors=True)

    def vtysh(self, command: str) -> dict:
        out = run("vtysh", "-N", self.ns, "-c", command)
        return json.loads(out) if out.strip() else {}

    def routes(self, family: str = "ipv4") -> dict:
        """``{prefix: [path, ...]}`` from bgpd's own JSON."""
        return self.vtysh(f"show bgp {family} unicast json").get("routes", {})

    def neighbor_state(self, address: str) -> str:
        info = self.vtysh(f"show bgp neighbors {address} json").get(address, {})
        return info.get("bgpState", "")

    def kernel_routes(self, family: str = "ipv4") -> str:
        return run("ip", "-n", self.ns, "-6" if family == "ipv6" else "-4", "route", "show")


@contextlib.contextmanager
def _running(kind: type, ns: str, conf: str) -> Iterator:
    """A started router of ``kind`` (Frr or Bird) with its own work folder, always stopped."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bgpdtest-{kind.__name__.lower()}-"))
    router = kind(ns, conf, workdir)
    try:
        router.start()
        yield router
    finally:
        router.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def frr(ns: str, bgpd_conf: str) -> contextlib.AbstractContextManager[Frr]:
    return _running(Frr, ns, bgpd_conf)


class Bird:
    """BIRD 2 in ``ns`` with its own control socket, queried through birdc."""

    def __init__(self, ns: str, conf: str, workdir: Path):
        self.ns = ns
        self.conf = conf
        self.workdir = workdir
        self.socket = workdir / "bird.ctl"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        conf_path = self.workdir / "bird.conf"
        conf_path.write_text(self.conf)
        with open(self.workdir / "bird.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "bird", "-f", "-c", str(conf_path), "-s", str(self.socket)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.workdir / "bird.log").read_text()[-2000:]
                raise RuntimeError(f"bird exited ({self.proc.returncode}): {log}")
            return "ready" in self.birdc("show status")

        try:
            wait_for(ready, DAEMON_READY_TIMEOUT, "bird socket")
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def birdc(self, *command: str) -> str:
        return run("birdc", "-s", str(self.socket), *command)

    def route_count(self) -> int:
        """Routes in BIRD's tables (``show route count``: "N of M routes for K networks")."""
        out = self.birdc("show", "route", "count")
        for line in out.splitlines():
            words = line.split()
            if "routes" in words and "of" in words:
                return int(words[words.index("of") - 1])
        return 0

    def routes(self, protocol: str) -> str:
        return self.birdc("show", "route", "protocol", protocol, "all")

    def protocol_state(self, protocol: str) -> str:
        return self.birdc("show", "protocols", protocol)

    def bgp_routes(self, protocol: str) -> dict[str, dict[str, str]]:
        """``{prefix: {"BGP.med": "5", ...}}`` from ``show route all protocol P``."""
        routes: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in self.routes(protocol).splitlines():
            if not line.strip() or line.startswith(("Table", "BIRD")):
                continue
            if not line[0].isspace():
                current = routes.setdefault(line.split()[0], {})
            elif current is not None and ":" in line:
                key, _, value = line.strip().partition(": ")
                current[key] = value
        return routes

    def established(self, protocol: str) -> bool:
        return "Established" in self.protocol_state(protocol)


def bird_config(
    asn: int,
    neighbors: dict[str, int],
    networks: list[str] = (),  # type: ignore[assignment]
) -> str:
    """A BIRD ToR: one BGP protocol per neighbour (named ``n1``, ``n2``... in order) in its
    own family, importing everything and exporting ``networks`` (static blackholes)."""
    v4 = [n for n in networks if ":" not in n]
    lines = [f"router id {TOR_V4};", "protocol device {}"]
    if v4:
        lines.append(
            "protocol static tor_routes { ipv4; "
            + " ".join(f"route {n} blackhole;" for n in v4)
            + " }"
        )
    for i, (address, remote_as) in enumerate(neighbors.items(), 1):
        family = "ipv6" if ":" in address else "ipv4"
        local = TOR_V6 if family == "ipv6" else TOR_V4
        export = 'where proto = "tor_routes"' if v4 and family == "ipv4" else "none"
        lines.append(
            f"protocol bgp n{i} {{ local {local} as {asn}; neighbor {address} as {remote_as}; "
            f"connect delay time 1; {family} {{ import all; export {export}; }}; }}"
        )
    return "\n".join(lines) + "\n"


def bird(ns: str, conf: str) -> contextlib.AbstractContextManager[Bird]:
    return _running(Bird, ns, conf)


# Addresses of the two-namespace lab the speaker tests use: a router ("tor") and a node.
TOR_V4, NODE_V4 = "10.0.0.1", "10.0.0.2"
TOR_V6, NODE_V6 = "fd00::1", "fd00::2"


@contextlib.contextmanager
def tor_and_node(tag: str) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth carrying 10.0.0.0/24 and fd00::/64."""
    with netns(f"{tag}-tor") as tor, netns(f"{tag}-node") as node:
        link(tor, [f"{TOR_V4}/24", f"{TOR_V6}/64"], node, [f"{NODE_V4}/24", f"{NODE_V6}/64"])
        yield tor, node


def frr_config(
    asn: int,
    neighbors: dict[str, int],
    networks: list[str] = (),  # type: ignore[assignment]
    passwords: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    """bgpd config for a ToR: eBGP/iBGP ``neighbors`` (address -> ASN), each activated only
    in its own address family; ``networks`` are announced (no RIB check needed)."""
    passwords = passwords or {}
    lines = [
        "frr defaults traditional",
        f"router bgp {asn}",
        f" bgp router-id {TOR_V4}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        extra,
    ]
    for address, remote_as in neighbors.items():
        lines += [
            f" neighbor {address} remote-as {remote_as}",
            f" neighbor {address} timers connect 1",
        ]
        if address in passwords:
            lines.append(f" neighbor {address} password {passwords[address]}")
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        lines.append(f" address-family {family} unicast")
        for address in neighbors:
            is_family = (":" in address) == (version == 6)
            lines.append(f"  {'' if is_family else 'no '}neighbor {address} activate")
        lines += [f"  network {n}" for n in networks if (":" in n) == (version == 6)]
        lines.append(" exit-address-family")
    return "\n".join(line for line in lines if line) + "\n"


# ---------------------------------------------------------------------------- OpenBGPD
#
# Debian's `openbgpd` (7.7): bgpd has no flag for its control socket (the config's `socket`
# line sets it, one per instance: a second instance on the same socket exits with status 0),
# chroots its route engine into the home of user _openbgpd, /run/openbgpd, which only
# systemd creates, and logs to stderr with -d, without timestamps.

OPENBGPD = Path("/usr/sbin/bgpd")  # FRR's bgpd lives in /usr/lib/frr
BGPCTL = Path("/usr/sbin/bgpctl")
OPENBGPD_CHROOT = Path("/run/openbgpd")
OPENBGPD_HOLDTIME = 9  # seconds, negotiated down from ExaBGP's 90; OpenBGPD's minimum is 3
OPENBGPD_CONNECT_RETRY = 5  # seconds (global only in 7.7); the default is 120


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdecimal():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Openbgpd:
    """OpenBGPD's bgpd in ``ns`` with its own control socket, queried through ``bgpctl -j``.

    ``conf`` is a bgpd.conf without a ``socket`` line (``openbgpd_config``): the socket in
    the work folder is prepended here."""

    def __init__(self, ns: str, conf: str, workdir: Path):
        self.ns = ns
        self.conf = conf
        self.workdir = workdir
        self.socket = workdir / "bgpd.sock"
        self.conf_path = workdir / "bgpd.conf"
        self.log_path = workdir / "bgpd.log"
        self.proc: subprocess.Popen | None = None
        self._relay: threading.Thread | None = None

    def start(self) -> None:
        for path in (OPENBGPD, BGPCTL):
            if not path.exists():  # a failure, not a skip: the suite needs all three routers
                raise RuntimeError(f"{path} is missing: install the Debian package openbgpd")
        if not OPENBGPD_CHROOT.is_dir():  # left behind on purpose: other instances share it
            OPENBGPD_CHROOT.mkdir(parents=True, exist_ok=True)
            OPENBGPD_CHROOT.chmod(0o755)
        self.conf_path.write_text(f'socket "{self.socket}"\n' + self.conf)
        run(str(OPENBGPD), "-n", "-f", str(self.conf_path))  # a config error, said clearly
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, str(OPENBGPD), "-d", "-v", "-f", str(self.conf_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._relay = threading.Thread(
            target=self._timestamp_log, args=(self.proc.stderr,), daemon=True
        )
        self._relay.start()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"openbgpd exited ({self.proc.returncode}): {self.log()[-2000:]}")
            return "neighbors" in self.bgpctl("show", "summary")

        try:
            wait_for(ready, DAEMON_READY_TIMEOUT, "openbgpd control socket")
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def _timestamp_log(self, stream) -> None:
        """bgpd's log lines carry no time: add it (the pipe closes when all four exit)."""
        with stream, open(self.log_path, "ab") as log:
            for line in stream:
                stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d} "
                log.write(stamp.encode() + line)
                log.flush()

    def stop(self) -> None:
        """SIGTERM bgpd (its peers get a Cease) and wait for its three engines too."""
        if self.proc is None:
            return
        engines = _children(self.proc.pid)
        stop_process(self.proc)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in engines) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        for pid in engines:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._relay is not None:
            self._relay.join(STOP_TIMEOUT)
        self.proc = self._relay = None
        self.socket.unlink(missing_ok=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def bgpctl(self, *command: str) -> dict:
        """``bgpctl -j``; an unknown neighbour or an empty table answers ``{}``."""
        out = run(str(BGPCTL), "-s", str(self.socket), "-j", *command)
        return json.loads(out) if out.strip() else {}

    def neighbor(self, address: str) -> dict:
        """``show neighbor``: state, capabilities, ``stats`` (no ``session`` key when down)."""
        found = self.bgpctl("show", "neighbor", address).get("neighbors") or []
        return found[0] if found else {}

    def neighbor_state(self, address: str) -> str:
        return self.neighbor(address).get("state", "")

    def established(self, address: str) -> bool:
        return self.neighbor_state(address) == "Established"

    def routes(self, address: str, adj_rib_in: bool = False) -> dict[str, dict]:
        """``{prefix: entry}`` received from ``address``, both families: accepted by the
        filters (``show rib neighbor``) or, with ``adj_rib_in``, as received
        (``show rib in neighbor``). Entries have ``exit_nexthop``, ``stale``, ``valid``..."""
        command = ["show", "rib", *(["in"] if adj_rib_in else []), "neighbor", address]
        return {r["prefix"]: r for r in self.bgpctl(*command).get("rib", [])}

    def stale(self, address: str, prefix: str) -> bool:
        """Kept under graceful restart (the key is present only while it is)."""
        return bool(self.routes(address).get(prefix, {}).get("stale"))

    def notifications(self, address: str) -> dict[str, int]:
        """NOTIFICATIONs sent to and received from ``address`` since bgpd started. 7.7 counts
        only the sent ones (``stats.message.received.notifications`` stays 0): the received
        ones are counted in the log ("neighbor A: received notification: Cease, ...")."""
        sent = self.neighbor(address).get("stats", {}).get("message", {}).get("sent", {})
        received = re.compile(rf"neighbor {re.escape(address)}( \([^)]*\))?: received notification")
        return {"sent": sent.get("notifications", 0), "received": len(received.findall(self.log()))}


def openbgpd(ns: str, conf: str) -> contextlib.AbstractContextManager[Openbgpd]:
    return _running(Openbgpd, ns, conf)


def openbgpd_config(
    asn: int,
    neighbors: dict[str, int],
    networks: list[str] = (),  # type: ignore[assignment]
    passwords: dict[str, str] | None = None,
    dual_stack: tuple[str, ...] = (),
    holdtime: int = OPENBGPD_HOLDTIME,
    connect_retry: int = OPENBGPD_CONNECT_RETRY,
    extra: str = "",
) -> str:
    """bgpd.conf for a ToR on OpenBGPD's defaults but for what a test needs: eBGP/iBGP
    ``neighbors`` (address -> ASN), each in its own address family only (OpenBGPD's default)
    unless listed in ``dual_stack`` (IPv4 and IPv6 unicast on one session); ``networks``
    announced to every neighbour; TCP MD5 ``passwords`` per address. Graceful restart stays
    announced (OpenBGPD's default: helper only, restart time 0). The kernel table is left
    alone, every route is accepted and announced (filters deny by default), and the timers
    are short for tests."""
    passwords = passwords or {}
    lines = [
        f"AS {asn}",
        f"router-id {TOR_V4}",
        "fib-update no",
        f"connect-retry {connect_retry}",
        f"holdtime {holdtime}",
        "holdtime min 3",
        *(f"network {n}" for n in networks),
    ]
    for address, remote_as in neighbors.items():
        lines += [f"neighbor {address} {{", f"    remote-as {remote_as}"]
        if address in passwords:
            lines.append(f'    tcp md5sig password "{passwords[address]}"')
        if address in dual_stack:  # once one family is named, both must be
            lines += ["    announce IPv4 unicast", "    announce IPv6 unicast"]
        lines.append("}")
    lines += ["allow from any", "allow to any", extra]
    return "\n".join(line for line in lines if line) + "\n"
