"""Config and key files, watched: a change takes effect within a second on an idle agent.

One thread watches the folders holding the config file and the peers' TCP MD5 key files
with inotify (``inotify_simple``), so it also sees a ConfigMap or Secret update, which the
kubelet makes by swapping the folder's ``..data`` symlink rather than writing the file. A
poll of the files' identity every POLL_SECONDS backs it up (a file system without inotify
events, an exhausted watch limit). On a change of the config file the new file is parsed:
a broken one is logged and ignored, the agent keeps its last good config; a good one goes
to ``on_config``. A change of a key file only calls ``on_secret`` (the agent re-reads
them when it converges its sessions).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable

from bgpd.config import Config, ConfigError, load_config

log = logging.getLogger("bgpd.configwatch")

DEBOUNCE_S = 0.2  # an editor or the kubelet writes in several steps: wait for the last
POLL_SECONDS = 5.0  # the fallback when inotify says nothing
_MASK_NAMES = ("CREATE", "DELETE", "MODIFY", "CLOSE_WRITE", "MOVED_TO", "MOVED_FROM",
               "ATTRIB", "DELETE_SELF", "MOVE_SELF")

Signature = tuple[str, float, int, int]


def signature(path: str) -> Signature:
    """Identity of what ``path`` points at now (through symlinks): changes when the file
    or the ``..data`` link behind it is replaced."""
    try:
        st = os.stat(path)
        return (os.path.realpath(path), st.st_mtime, st.st_ino, st.st_size)
    except OSError:
        return ("", 0.0, 0, 0)


class ConfigWatcher:
    def __init__(self, path: str, config: Config, on_config: Callable[[Config], None],
                 on_secret: Callable[[], None]):
        self.path = path
        self._on_config, self._on_secret = on_config, on_secret
        self._stop = threading.Event()
        self._secrets = self._secret_paths(config)
        self._seen = {p: signature(p) for p in (path, *self._secrets)}
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._inotify = None
        self._wake_r, self._wake_w = os.pipe()  # stop() wakes the thread at once
        self.reloads = 0
        self.rejected = 0

    @staticmethod
    def _secret_paths(config: Config) -> tuple[str, ...]:
        return tuple(sorted({p.password_file for p in config.bgp.peers if p.password_file}))

    def start(self) -> None:
        # Watched before start() returns: a change made right after is never missed.
        self._inotify = _inotify()
        if self._inotify is not None:
            self._watch(self._inotify)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(POLL_SECONDS + 1)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        inotify = self._inotify
        try:
            while not self._stop.is_set():
                watched = [self._wake_r]
                if inotify is not None:
                    self._watch(inotify)
                    watched.append(inotify.fileno())
                ready = select.select(watched, [], [], POLL_SECONDS)[0]
                if inotify is not None and inotify.fileno() in ready:
                    time.sleep(DEBOUNCE_S)
                    inotify.read(timeout=0)  # this change and what came meanwhile
                if not self._stop.is_set():
                    self.check()
        except Exception:  # the watcher must not die silently: the poll fallback remains
            log.exception("event=config_watch_failed fallback=poll")
            while not self._stop.wait(POLL_SECONDS):
                self.check()
        finally:
            if inotify is not None:
                inotify.close()

    def _watch(self, inotify) -> None:
        import inotify_simple

        mask = 0
        for name in _MASK_NAMES:
            mask |= getattr(inotify_simple.flags, name)
        for folder in {os.path.dirname(os.path.abspath(p)) for p in (self.path, *self._secrets)}:
            try:
                inotify.add_watch(folder, mask)  # idempotent for a folder already watched
            except OSError as exc:
                log.warning("event=config_watch_unavailable folder=%s error=%r", folder, str(exc))

    def check(self) -> None:
        """Compare the files with what was seen last; act on what changed."""
        now = signature(self.path)
        if now != self._seen[self.path]:
            self._seen[self.path] = now
            self._reload()
        changed = [p for p in self._secrets if signature(p) != self._seen.get(p)]
        for p in changed:
            self._seen[p] = signature(p)
        if changed:
            log.info("event=key_file_changed files=%s", ",".join(changed))
            self._on_secret()

    def _reload(self) -> None:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.rejected += 1
            for line in exc.errors:
                log.error("event=config_rejected error=%r", line)
            return
        self.reloads += 1
        secrets = self._secret_paths(config)
        if secrets != self._secrets:
            self._secrets = secrets
            for p in secrets:
                self._seen.setdefault(p, signature(p))
        self._on_config(config)


def _inotify():
    try:
        import inotify_simple

        return inotify_simple.INotify()
    except (ImportError, OSError) as exc:
        log.warning("event=config_watch_unavailable error=%r fallback=poll every %gs",
                    str(exc), POLL_SECONDS)
        return None
