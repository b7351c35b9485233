"""Shared by the benches: spreads (min / median / max), percentiles, the machine description,
and the one-JSON-line convention (a readable table first, the JSON object last on stdout).

Every bench repeats its measurement (``--runs``) and reports each figure as
``{"min", "median", "max", "n"}`` under ``"spread"``; the top-level figures are the medians.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100): of 100 samples, p99 is the 99th smallest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Iterable[float], digits: int = 3) -> dict:
    """min / median / max / n of ``values`` (NaN dropped), rounded to ``digits``."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {
        "min": round(min(clean), digits),
        "median": round(statistics.median(clean), digits),
        "max": round(max(clean), digits),
        "n": len(clean),
    }


def medians(spreads: dict[str, dict]) -> dict[str, float | None]:
    """The top-level figures: the median of each spread."""
    return {name: s["median"] for name, s in spreads.items()}


def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdecimal():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its direct children (e.g. ExaBGP and its API process)."""
    return sum(cpu_seconds(p) for p in [pid, *children(pid)])


def self_cpu_seconds() -> float:
    """CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def machine() -> dict:
    """What the figures came from: cores, CPU model, kernel, memory, date, load."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "code": code_version(),
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or "unknown",
        "kernel": platform.release(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "loadavg_1m": loadavg(),
    }


def code_version() -> str:
    """The commit measured, with '+dirty.<hash>' when bgpd/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--", "bgpd"],
                               capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # Uncommitted changes are named by a hash of their diff, so two runs on the same
    # working tree can be told from two runs on different ones.
    return (head or "unknown") + (f"+dirty.{hashlib.sha1(dirty).hexdigest()[:8]}"
                                  if dirty else "")


def machine_line(m: dict) -> str:
    code = f", bgpd {m['code']}" if m.get("code") else ""
    return (f"{m.get('cores')} cores, {m.get('cpu')}, Linux {m.get('kernel')}, "
            f"{m.get('memory_gb')} GB, Python {m.get('python')}, {m.get('date')}{code}")


def table(title: str, spreads: dict[str, dict], file=sys.stdout) -> None:
    """A readable min / median / max table (before the JSON line)."""
    print(f"# {title}", file=file)
    width = max((len(k) for k in spreads), default=10)
    print(f"# {'figure':<{width}}  {'min':>10} {'median':>10} {'max':>10}   n", file=file)
    for name, s in spreads.items():
        cells = [("-" if s[k] is None else f"{s[k]:g}") for k in ("min", "median", "max")]
        print(f"# {name:<{width}}  {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}   {s['n']}",
              file=file)
    file.flush()


def emit(result: dict) -> None:
    """The bench's last stdout line: one JSON object (the load average at the end is added
    to its machine description: the machine is shared, so say how busy it was)."""
    if isinstance(result.get("machine"), dict):
        result["machine"]["loadavg_1m_end"] = loadavg()
    print(json.dumps(result, separators=(",", ":")), flush=True)


AGENT_STOP_TIMEOUT_S = 30.0
"""SIGTERM to SIGKILL for a bench's agent process."""


def start_agent(stack: ExitStack, config: Path, node: str, kubeconfig: Path | str,
                netns: str) -> subprocess.Popen:
    """``bgpd run`` for ``node`` with its speaker and kernel side in ``netns``, from this
    checkout; stopped (SIGTERM, then SIGKILL) when ``stack`` closes."""
    root = Path(__file__).resolve().parents[1]
    agent = subprocess.Popen(
        [sys.executable, "-m", "bgpd", "run", "--config", str(config), "--node", node,
         "--kubeconfig", str(kubeconfig), "--netns", netns],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)})

    def stop() -> None:
        agent.terminate()
        try:
            agent.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()

    stack.callback(stop)
    return agent


def log(*parts: object) -> None:
    """Progress on stderr (stdout stays: table, then the JSON line)."""
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)
