"""BGP convergence, ours against BIRD, measured the same way for both speakers.

``python bench/bgp_convergence.py [--routes N] [--runs R] [--quick]`` (root; creates and
removes its own network namespaces and processes).

Each run puts a speaker in one namespace and a BIRD peer (passive, ``import all``) in
another, joined by one veth, and loads N /32s into the peer:

- ours: bgpd's ``Speaker`` driving ExaBGP, the N announcements given before it starts;
- baseline: BIRD announcing the same N prefixes from a static protocol, with its connect
  delay at the minimum (``connect delay time 0``: BIRD still waits 1 s, its floor;
  ``start delay time`` is only a deprecated alias of it in BIRD 2).

The peer is watched by one long-lived child process (this file with ``--watch``) holding
BIRD's control socket open: it asks ``show protocols all speaker`` every few milliseconds
(O(1) for BIRD: the session state and the channel's import counter, no table walk) and
stamps every change with CLOCK_MONOTONIC, the clock the parent reads too. So no process is
spawned per poll and the stamps do not wait for the parent's GIL. For both speakers:

- ``start``: just before the speaker process is started;
- ``established``: the first poll that sees the peer's session Established;
- ``first``: the first poll that counts a route from the speaker (its first UPDATE);
- ``done``: the first poll that counts all N.

``transfer_s`` = done - established (the fair figure: speaker throughput, no start-up
timers), ``ours_s`` / ``bird_s`` = done - start. The poll interval (2 ms while loading) is
the resolution: BIRD can send 10k prefixes between two polls, so ``transfer_ratio``
divides by at least one interval. ``incremental_p99_ms``: after the load,
one more /32 at a time (``--changes``), handed over as the agent does (a ``DesiredSet``
made from the last one, carrying the difference), from making it to the peer counting it.
Runs alternate which speaker goes first. Top-level figures are medians over the runs;
``spread`` holds min / median / max; ``series`` holds, per run, (seconds since
Established, routes in the peer) for plotting. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

DEFAULT_ROUTES = 100_000
QUICK_ROUTES = 10_000
DEFAULT_RUNS = 3
DEFAULT_CHANGES = 100  # per run: p99 of 100 is the 99th, not simply the maximum
CONVERGE_TIMEOUT = 900.0  # seconds for one full load
CHANGE_TIMEOUT = 30.0
LOAD_POLL_S = 0.002  # the watcher's poll interval while a full table loads (its resolution)
CHANGE_POLL_S = 0.001  # ... and while single changes are timed
SERIES_POINTS = 250  # per run, kept for the plot
BASE = ipaddress.ip_address("100.64.0.0")  # /32s counted up from here (RFC 6598 space)
PEER_AS, SPEAKER_AS = 65000, 65001
PEER_IP, SPEAKER_IP = "10.255.0.1", "10.255.0.2"
PEER_PROTOCOL = "speaker"

PEER_CONF = f"""
router id {PEER_IP};
protocol device {{}}
protocol bgp {PEER_PROTOCOL} {{
    local {PEER_IP} as {PEER_AS};
    neighbor {SPEAKER_IP} as {SPEAKER_AS};
    passive on;
    ipv4 {{ import all; export none; }};
}}
"""

BIRD_TIMERS = "connect delay time 0; connect retry time 1; error wait time 1, 2;"
WAKE_BIRD = """BIRD 2.0.12 as the speaker sends 99.8 % of 100k prefixes within ~0.1 s of
Established, then often holds its last UPDATE for ~3 s (its event loop sleeps until its
next poll timeout when nothing else happens). Any CLI command wakes it: so during a BIRD
run the watcher also asks the speaker ``show status`` on every poll (``--no-wake-bird``
turns this off to show the stall). Real BIRDs have timers and CLI traffic; the stall is not
its throughput."""


def speaker_bird_conf(n: int) -> str:
    """The baseline speaker: BIRD with N static blackhole /32s exported over BGP."""
    routes = "\n".join(f"    route {BASE + i}/32 blackhole;" for i in range(n))
    return f"""
router id {SPEAKER_IP};
protocol device {{}}
protocol static bench_routes {{
    ipv4;
{routes}
}}
protocol bgp peer {{
    local {SPEAKER_IP} as {SPEAKER_AS};
    neighbor {PEER_IP} as {PEER_AS};
    {BIRD_TIMERS}
    ipv4 {{ import none; export all; next hop self; }};
}}
"""


# --------------------------------------------------------------------------- the watcher


def _reply(f) -> list[str]:
    """One BIRD CLI reply: lines up to one whose 4-digit code is followed by a space."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("BIRD closed its control socket")
        lines.append(line)
        if len(line) >= 5 and line[:4].isdigit() and line[4] == " ":
            return lines


def _parse(lines: list[str]) -> tuple[str, int]:
    state, imported = "", 0
    for line in lines:
        text = line[5:] if line[:4].isdigit() else line
        text = text.strip()
        if text.startswith("BGP state:"):
            state = text.split(":", 1)[1].strip()
        elif text.startswith("Routes:"):
            imported = int(text.split()[1])
    return state, imported


def _connect(sock_path: str):
    deadline = time.monotonic() + 15
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(sock_path)
            break
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    f = sock.makefile("rw", encoding="ascii", newline="\n")
    _reply(f)  # the greeting
    return f


def watch(sock_path: str, protocol: str, interval: float, wake: str | None) -> None:
    """Child mode: poll the peer over its control socket; print ``t state imported`` on
    every change. With ``wake`` (a BIRD speaker's socket), ask it ``show status`` on every
    poll too (see WAKE_BIRD). Commands on stdin: ``interval SECONDS``; EOF ends."""
    f = _connect(sock_path)
    w = _connect(wake) if wake else None
    command = f"show protocols all {protocol}\n"
    last = None
    stdin = sys.stdin.fileno()
    while True:
        if w is not None:
            try:
                w.write("show status\n")
                w.flush()
                _reply(w)
            except (OSError, ConnectionError):
                w = None  # the speaker stopped: nothing left to wake
        f.write(command)
        f.flush()
        state, imported = _parse(_reply(f))
        now = time.monotonic()
        if (state, imported) != last:
            last = (state, imported)
            sys.stdout.write(f"{now:.6f} {state or '-'} {imported}\n")
            sys.stdout.flush()
        ready, _, _ = select.select([stdin], [], [], interval)
        if ready:
            line = os.read(stdin, 4096).decode()
            if not line:
                return
            for cmd in line.splitlines():
                if cmd.startswith("interval "):
                    interval = float(cmd.split()[1])


class PeerWatch:
    """The parent's side of the watcher: every (t, state, imported) change, in order."""

    def __init__(self, peer, interval: float = LOAD_POLL_S, wake: Path | None = None):
        wake_args = ["--wake", str(wake)] if wake else []
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--watch", str(peer.socket), PEER_PROTOCOL,
             "--interval", str(interval), *wake_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.samples: list[tuple[float, str, int]] = []
        self.cond = threading.Condition()
        self.failed: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, state, imported = line.split()
            with self.cond:
                self.samples.append((float(t), state, int(imported)))
                self.cond.notify_all()
        with self.cond:
            self.failed = f"the watcher exited ({self.proc.wait()})"
            self.cond.notify_all()

    def interval(self, seconds: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"interval {seconds}\n")
        self.proc.stdin.flush()

    def wait(self, pred, timeout: float, what: str, start_index: int = 0) -> tuple[float, int]:
        """The first sample from ``start_index`` on with ``pred(state, imported)``:
        (its time, its index)."""
        deadline = time.monotonic() + timeout
        i = start_index
        with self.cond:
            while True:
                while i < len(self.samples):
                    t, state, imported = self.samples[i]
                    if pred(state, imported):
                        return t, i
                    i += 1
                if self.failed:
                    raise RuntimeError(f"{self.failed} while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.samples[-1] if self.samples else None
                    raise TimeoutError(f"{what}: not after {timeout} s (last: {last})")
                self.cond.wait(left)

    def close(self) -> None:
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- one run


def load_figures(w: PeerWatch, start: float, n: int, cpu) -> dict:
    """Established / first / done from the watcher's samples of one full load, and the CPU
    seconds each process spent from Established to done (``cpu()``: {name: seconds}, read
    when the parent learns of each event, a few milliseconds late at most)."""
    established, _ = w.wait(lambda s, c: s == "Established", CONVERGE_TIMEOUT,
                            "session Established")
    cpu_established = cpu()
    first, _ = w.wait(lambda s, c: c > 0, CONVERGE_TIMEOUT, "first route")
    most, _ = w.wait(lambda s, c: c >= 0.99 * n, CONVERGE_TIMEOUT, f"{0.99 * n:.0f} routes")
    done, _ = w.wait(lambda s, c: c >= n, CONVERGE_TIMEOUT, f"{n} routes")
    cpu_done = cpu()
    return {
        "total_s": done - start,
        "established_s": established - start,
        "first_route_s": first - start,
        "transfer_s": done - established,
        "transfer99_s": most - established,
        "first_to_last_s": done - first,
        "transfer_cpu_s": {k: round(cpu_done[k] - cpu_established[k], 3) for k in cpu_done},
        "total_cpu_s": {k: round(v, 3) for k, v in cpu_done.items()},
    }


def series(w: PeerWatch, established: float, n: int) -> list[list[float]]:
    """(seconds since Established, routes) up to the first sample with all n, thinned to
    about SERIES_POINTS points (always keeping the first and the last)."""
    points = []
    for t, _state, count in w.samples:
        if t >= established:
            points.append([round(t - established, 4), count])
            if count >= n:
                break
    if len(points) > SERIES_POINTS:
        step = len(points) / SERIES_POINTS
        keep = {int(i * step) for i in range(SERIES_POINTS)} | {len(points) - 1}
        points = [p for i, p in enumerate(points) if i in keep]
    return [[0.0, 0], *points] if points and points[0][0] > 0 else points


def run_ours(n: int, changes: int) -> dict:
    from bgpd.config import BgpConfig, PeerConfig
    from bgpd.model import Announcement, DesiredSet
    from bgpd.policy.addresses import v4_host_network
    from bgpd.runtime import tune_gc
    from bgpd.speaker import Speaker
    from tests.integration import routers

    def prefixes(count: int, offset: int = 0) -> list[Announcement]:
        # made as the agent's policy makes a /32 (a Pod or Service address)
        return [Announcement(v4_host_network(int(BASE) + offset + i)) for i in range(count)]

    tune_gc()  # the speaker runs in the agent's process, which does this at start
    with routers.netns("bench-spk") as spk, routers.netns("bench-peer") as peer_ns:
        routers.link(spk, [f"{SPEAKER_IP}/24"], peer_ns, [f"{PEER_IP}/24"])
        with routers.bird(peer_ns, PEER_CONF) as peer:
            bgp = BgpConfig(
                asn=SPEAKER_AS,
                router_id=SPEAKER_IP,
                peers=(PeerConfig(PEER_IP, PEER_AS, local_address=SPEAKER_IP,
                                  families=("ipv4-unicast",)),),
            )
            speaker = Speaker(bgp, netns=spk)
            routes = prefixes(n)
            speaker.set_desired(routes)
            w = PeerWatch(peer)
            try:
                peer_pid = peer.proc.pid if peer.proc else 0
                driver0 = benchlib.self_cpu_seconds()

                def cpu() -> dict[str, float]:
                    pid = speaker.exabgp_pid()
                    return {"speaker": benchlib.tree_cpu_seconds(pid) if pid else math.nan,
                            "driver": benchlib.self_cpu_seconds() - driver0,
                            "peer": benchlib.cpu_seconds(peer_pid)}

                start = time.monotonic()
                speaker.start()
                figures = load_figures(w, start, n, cpu)
                established = start + figures["established_s"]
                pid = speaker.exabgp_pid()
                figures["rss_mb"] = benchlib.rss_mb(pid) if pid else math.nan
                figures["series"] = series(w, established, n)
                w.interval(CHANGE_POLL_S)
                samples = []
                # As the agent hands a change over (Agent._desired_set): the new set made
                # from the last one, carrying the difference; making it is timed too.
                objs, last = set(routes), DesiredSet(routes)
                speaker.set_desired(last)
                for i, ann in enumerate(prefixes(changes, offset=n)):
                    time.sleep(random.uniform(0.0, 0.02))  # no phase lock with any timer
                    index = len(w.samples)
                    begin = time.monotonic()
                    objs.add(ann)
                    last = DesiredSet(objs, base=last, added=frozenset((ann,)))
                    speaker.set_desired(last)
                    seen, _ = w.wait(lambda s, c, want=n + i + 1: c >= want, CHANGE_TIMEOUT,
                                     f"change {i}", index)
                    samples.append((seen - begin) * 1000)
                figures["changes_ms"] = samples
            finally:
                w.close()
                speaker.stop()
    return figures


def run_bird(n: int, wake: bool = True) -> dict:
    from tests.integration import routers

    with routers.netns("bench-bspk") as spk, routers.netns("bench-bpeer") as peer_ns:
        routers.link(spk, [f"{SPEAKER_IP}/24"], peer_ns, [f"{PEER_IP}/24"])
        with routers.bird(peer_ns, PEER_CONF) as peer:
            workdir = Path(routers.tempfile.mkdtemp(prefix="bgpdtest-bench-"))
            speaker = routers.Bird(spk, speaker_bird_conf(n), workdir)
            w = PeerWatch(peer, wake=speaker.socket if wake else None)
            try:
                peer_pid = peer.proc.pid if peer.proc else 0

                def cpu() -> dict[str, float]:
                    pid = speaker.proc.pid if speaker.proc else 0  # ip netns exec execs bird
                    return {"speaker": benchlib.cpu_seconds(pid),
                            "peer": benchlib.cpu_seconds(peer_pid)}

                start = time.monotonic()
                speaker.start()
                try:
                    figures = load_figures(w, start, n, cpu)
                    pid = speaker.proc.pid if speaker.proc else None
                    figures["rss_mb"] = benchlib.rss_mb(pid) if pid else math.nan
                    figures["series"] = series(w, start + figures["established_s"], n)
                finally:
                    w.close()  # before the speaker it wakes goes away
                    speaker.stop()
            finally:
                w.close()
                routers.shutil.rmtree(workdir, ignore_errors=True)
    return figures


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--changes", type=int)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_ROUTES} routes, 3 runs, 20 changes")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--watch", metavar="BIRD_SOCKET", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=LOAD_POLL_S, help=argparse.SUPPRESS)
    parser.add_argument("--wake", help=argparse.SUPPRESS)
    parser.add_argument("--no-wake-bird", action="store_true",
                        help="do not poll the BIRD speaker's control socket (shows its stall)")
    parser.add_argument("protocol", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        watch(args.watch, args.protocol or PEER_PROTOCOL, args.interval, args.wake)
        return
    n = args.routes or (QUICK_ROUTES if args.quick else DEFAULT_ROUTES)
    runs = args.runs or DEFAULT_RUNS
    changes = args.changes if args.changes is not None else (20 if args.quick else DEFAULT_CHANGES)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    machine = benchlib.machine()

    ours_runs: list[dict] = []
    bird_runs: list[dict] = []
    for r in range(runs):
        order = ["bird", "ours"] if r % 2 == 0 else ["ours", "bird"]
        for who in order:
            if who == "bird" and args.skip_baseline:
                continue
            benchlib.log(f"run {r + 1}/{runs}: {who}, {n} routes")
            figures = (run_bird(n, not args.no_wake_bird) if who == "bird"
                       else run_ours(n, changes))
            (bird_runs if who == "bird" else ours_runs).append(figures)
            benchlib.log(f"  {who}: established {figures['established_s']:.2f} s, "
                         f"transfer {figures['transfer_s']:.2f} s, "
                         f"total {figures['total_s']:.2f} s")

    def each(rs: list[dict], key: str) -> list[float]:
        return [r[key] for r in rs]

    p99s = [benchlib.percentile(r["changes_ms"], 99) for r in ours_runs]
    p50s = [benchlib.percentile(r["changes_ms"], 50) for r in ours_runs]
    # BIRD may send everything between two polls (10k prefixes take it a few ms): its
    # transfer then reads 0, and the ratio's denominator is the poll interval instead.
    ratios = [o["transfer_s"] / max(b["transfer_s"], LOAD_POLL_S)
              for o, b in zip(ours_runs, bird_runs, strict=False)]
    total_ratios = [o["total_s"] / b["total_s"] for o, b in zip(ours_runs, bird_runs, strict=False)]
    spreads = {
        "transfer_s": benchlib.spread(each(ours_runs, "transfer_s")),
        "bird_transfer_s": benchlib.spread(each(bird_runs, "transfer_s")),
        "transfer_ratio": benchlib.spread(ratios),
        "ours_s": benchlib.spread(each(ours_runs, "total_s")),
        "bird_s": benchlib.spread(each(bird_runs, "total_s")),
        "total_ratio": benchlib.spread(total_ratios),
        "established_s": benchlib.spread(each(ours_runs, "established_s")),
        "first_route_after_established_s": benchlib.spread(
            [r["first_route_s"] - r["established_s"] for r in ours_runs]),
        "bird_first_route_after_established_s": benchlib.spread(
            [r["first_route_s"] - r["established_s"] for r in bird_runs]),
        "bird_established_s": benchlib.spread(each(bird_runs, "established_s")),
        "transfer99_s": benchlib.spread(each(ours_runs, "transfer99_s")),
        "bird_transfer99_s": benchlib.spread(each(bird_runs, "transfer99_s")),
        "first_to_last_s": benchlib.spread(each(ours_runs, "first_to_last_s")),
        "bird_first_to_last_s": benchlib.spread(each(bird_runs, "first_to_last_s")),
        "incremental_p99_ms": benchlib.spread(p99s, 1),
        "incremental_p50_ms": benchlib.spread(p50s, 1),
        "speaker_rss_mb": benchlib.spread(each(ours_runs, "rss_mb"), 1),
        "bird_rss_mb": benchlib.spread(each(bird_runs, "rss_mb"), 1),
        "speaker_transfer_cpu_s": benchlib.spread(
            [r["transfer_cpu_s"]["speaker"] for r in ours_runs], 2),
        "driver_transfer_cpu_s": benchlib.spread(
            [r["transfer_cpu_s"]["driver"] for r in ours_runs], 2),
        "peer_transfer_cpu_s": benchlib.spread(
            [r["transfer_cpu_s"]["peer"] for r in ours_runs], 2),
        "bird_transfer_cpu_s": benchlib.spread(
            [r["transfer_cpu_s"]["speaker"] for r in bird_runs], 2),
        "bird_peer_transfer_cpu_s": benchlib.spread(
            [r["transfer_cpu_s"]["peer"] for r in bird_runs], 2),
    }
    benchlib.table(f"bgp_convergence: {n} routes, {runs} runs, {changes} changes a run", spreads)
    all_changes = [x for r in ours_runs for x in r["changes_ms"]]
    result = {
        "bench": "bgp_convergence",
        "routes": n,
        "runs": runs,
        "changes_per_run": changes,
        **benchlib.medians({k: spreads[k] for k in (
            "transfer_s", "bird_transfer_s", "transfer_ratio", "ours_s", "bird_s",
            "incremental_p99_ms", "speaker_rss_mb")}),
        "spread": spreads,
        "incremental_all_ms": {"p50": round(benchlib.percentile(all_changes, 50), 1),
                               "p99": round(benchlib.percentile(all_changes, 99), 1),
                               "max": round(max(all_changes), 1) if all_changes else None,
                               "n": len(all_changes)},
        "bird_timers": BIRD_TIMERS,
        "poll_s": LOAD_POLL_S,
        "bird_woken": not args.no_wake_bird,
        "series": {"ours": [r["series"] for r in ours_runs],
                   "bird": [r["series"] for r in bird_runs]},
        "targets": {"transfer_ratio": 1.5, "incremental_p99_ms": 20, "speaker_rss_mb": 150},
        "machine": machine,
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
