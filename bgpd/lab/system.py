"""Small system helpers for the lab runner: commands, namespaces, detached processes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

COMMAND_TIMEOUT = 30.0
STOP_GRACE = 5.0
POLL = 0.05
CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """Something the lab needs failed; the message says what."""


def run(*argv: str, check: bool = True, input: str | None = None,
        timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                              timeout=timeout, stdin=None if input is not None else
                              subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()}")
    return done


def wait_for(probe: Callable[[], object], timeout: float, what: str,
             interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ namespaces

def netns_list() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(os.listdir("/run/netns"))
    return []


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def netns_pids(name: str) -> list[int]:
    done = run("ip", "netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def netns_delete(name: str) -> None:
    """Kill whatever still runs inside, then delete (which also destroys its veths)."""
    if not netns_exists(name):
        return
    for _ in range(3):
        pids = netns_pids(name)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    run("ip", "netns", "del", name, check=False)


_libc = None


def setns(fd: int) -> None:
    """Move the calling *thread* into the network namespace open at ``fd``."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(name: str):
    """Run the body with this thread in netns ``name`` (sockets made there stay there)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


# ------------------------------------------------------------------ processes

def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a recycled PID apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


class ProcRecord(dict):
    """One detached lab process: name, argv, netns, log, pid, start (JSON-able)."""

    @property
    def alive(self) -> bool:
        pid = self.get("pid")
        return bool(pid) and start_time(pid) == self.get("start")


def spawn(name: str, argv: Sequence[str], log: Path, netns: str | None = None,
          env: dict[str, str] | None = None, cwd: str | None = None) -> ProcRecord:
    """Start ``argv`` detached (own session, no terminal, survives ``bgpd lab up``)."""
    full = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, cwd=cwd, close_fds=True)
    # `ip netns exec` execs the command in place: the pid is the command's own.
    proc.returncode = 0  # we never wait(); keep Popen.__del__ quiet
    begun = None
    for _ in range(100):
        begun = start_time(proc.pid)
        if begun is not None:
            break
        time.sleep(0.01)
    return ProcRecord(name=name, argv=list(argv), netns=netns, log=str(log), pid=proc.pid,
                      start=begun, env=env, cwd=cwd)


def adopt(name: str, pid: int, log: Path, netns: str | None = None) -> ProcRecord:
    """Record a process someone else started, so ``down`` stops it and ``up`` can restart it."""
    return ProcRecord(name=name, argv=cmdline(pid), netns=netns, log=str(log), pid=pid,
                      start=start_time(pid), env=None, cwd=None)


def respawn(rec: ProcRecord) -> ProcRecord:
    return spawn(rec["name"], rec["argv"], Path(rec["log"]), rec.get("netns"),
                 rec.get("env"), rec.get("cwd"))


def stop(rec: ProcRecord, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Signal the process's group (its session), then SIGKILL after ``grace``."""
    if not rec.alive:
        return
    pid = rec["pid"]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while rec.alive and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(POLL)
    if rec.alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not rec.alive, 5, f"{rec['name']} (pid {pid}) to die", POLL)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
