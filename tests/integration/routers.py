"""Real routers in network namespaces for integration tests: FRR (zebra + bgpd) and BIRD 2.

Every helper is a context manager that removes what it created (processes, namespaces,
runtime folders) even when the test fails. Namespaces are named ``bgpdtest-<tag>-<random>``
so parallel runs and other engineers' namespaces never collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
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
