"""The speaker's work folder (ExaBGP's config with the MD5 keys, the API socket) and the
sweep of folders whose agent died without cleaning up (SIGKILL, OOM).

A folder is alive while its agent holds an exclusive ``flock`` on the ``.lock`` file inside
it: the kernel drops the lock when the process dies, however it dies. A process id would
not do: in a container every agent is PID 1, so a dead agent's folder named after pid 1
would look alive to its successor forever.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bgpd.speaker")

WORKDIR_PREFIX = "bgpd-speaker-"  # + the agent's pid: <base>/bgpd-speaker-<pid>-<random>
LOCK_NAME = ".lock"
# Where work folders go: $BGPD_WORK_DIR, else the temporary folder. Not $TMPDIR alone: the
# image's interpreter carries a file capability, and glibc drops TMPDIR from the
# environment of such a program (secure-execution mode).
WORK_DIR_ENV = "BGPD_WORK_DIR"


def base_dir() -> str:
    return os.environ.get(WORK_DIR_ENV) or tempfile.gettempdir()
# A folder younger than this is never swept: its agent may be between mkdtemp and flock.
SWEEP_MIN_AGE_S = 10.0


class Workdir:
    """A private folder (mode 0700) locked for the life of this object (or the process)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-",
                                          dir=base_dir()))
        # O_CLOEXEC: ExaBGP must not inherit the lock (an orphan would keep it "alive").
        self._fd = os.open(self.path / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _abandoned(folder: Path, now: float) -> bool:
    try:
        if now - folder.stat().st_mtime < SWEEP_MIN_AGE_S:
            return False
        fd = os.open(folder / LOCK_NAME, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # no lock file: the folder never got that far, or is half removed
    except OSError:
        return False  # not ours to judge (permissions): leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True  # nobody holds it: its agent is gone
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def remove_stale_workdirs() -> list[str]:
    """Delete the work folders no living agent holds. Returns what was removed."""
    removed = []
    now = time.time()
    for folder in Path(base_dir()).glob(f"{WORKDIR_PREFIX}*"):
        if folder.is_dir() and _abandoned(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    if removed:
        log.info("removed %d stale speaker folders of dead agents", len(removed))
    return removed
