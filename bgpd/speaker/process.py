"""ExaBGP as a supervised child: started in the foreground, its output turned into our
log records, restarted with backoff when it exits unexpectedly."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from bgpd.speaker.errors import SpeakerError

log = logging.getLogger("bgpd.speaker.exabgp")

RESTART_BACKOFF_INITIAL = 0.5  # seconds before the first restart
RESTART_BACKOFF_MAX = 30.0
RESTART_BACKOFF_FACTOR = 2.0
# A run this long counts as healthy: the next crash restarts after the initial delay again.
RESTART_BACKOFF_RESET_AFTER = 60.0
STOP_GRACE = 5.0  # SIGTERM to SIGKILL
FIRST_START_TIMEOUT = 30.0
RELAY_DRAIN = 1.0  # seconds to let ExaBGP's last output lines through after it exits


# ExaBGP's short log format is "<category> <message>"; these words in it mean trouble.
_ERROR_WORDS = re.compile(
    r"\b(error|failure|could not|not understood|invalid|problem|issue)\b", re.I
)
_WARNING_WORDS = re.compile(r"\b(closing|notification|down|refused|timeout|stopped)\b", re.I)


# ExaBGP echoes configuration lines in some errors; a line naming the MD5 key (ours are
# base64) is never relayed as it is, whatever the level.
_SECRET = re.compile(r"(md5[-_ ]?(password|base64)?\W*)\S+", re.I)


def redact(line: str) -> str:
    return _SECRET.sub(r"\1[redacted]", line)


def log_exabgp_line(line: str) -> int:
    """Log one ExaBGP output line at a level guessed from its words; returns that level."""
    line = redact(line)
    level = logging.INFO
    if _ERROR_WORDS.search(line):
        level = logging.ERROR
    elif _WARNING_WORDS.search(line):
        level = logging.WARNING
    log.log(level, "%s", line)
    return level


class Supervisor:
    """Runs ``argv`` until ``stop()``; ``on_exit(returncode)`` after every unexpected exit."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ):
        self.argv = list(argv)
        self.env = dict(env)
        self._on_line = on_line
        self._on_exit = on_exit
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.restarts = 0
        self._paused_until = 0.0  # monotonic: no restart before (max_prefixes teardown)
        self._first_start = threading.Event()
        self._first_error: SpeakerError | None = None
        self._thread = threading.Thread(target=self._run, name="speaker-exabgp", daemon=True)

    def start(self) -> None:
        """Start ExaBGP; raises SpeakerError if it cannot even be executed."""
        self._thread.start()
        self._first_start.wait(FIRST_START_TIMEOUT)
        if self._first_error is not None:
            raise self._first_error

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _spawn(self) -> bool:
        """Start ExaBGP; False (nothing started) once stop() was called."""
        # Under the lock: stop() either sees the new process (and stops it) or we see stop().
        with self._lock:
            if self._stopping.is_set():
                return False
            try:
                proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # our terminal's ^C must not reach it; we stop it
                )
            except OSError as exc:
                raise SpeakerError(
                    f"cannot start ExaBGP ({' '.join(self.argv)}): {exc}"
                ) from exc
            self._proc = proc
        log.info("ExaBGP started (pid %d)", proc.pid)
        return True

    def _relay_output(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                log_exabgp_line(line)
                line = redact(line)
                if self._on_line is not None:
                    try:
                        self._on_line(line)
                    except Exception:
                        log.exception("ExaBGP output handler failed")
        except (OSError, ValueError):
            pass
        finally:
            proc.stdout.close()

    def _run(self) -> None:
        try:
            if not self._spawn():
                return
        except SpeakerError as exc:
            self._first_error = exc
            return
        finally:
            self._first_start.set()
        backoff = RESTART_BACKOFF_INITIAL
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            # The output is relayed on its own thread and the exit is noticed here, from
            # wait(): a child of ExaBGP that outlives it (its API helper) may hold the pipe
            # open, and an exit must not wait for that pipe's EOF.
            relay = threading.Thread(
                target=self._relay_output, args=(proc,), name="speaker-exabgp-log", daemon=True
            )
            relay.start()
            code = proc.wait()
            relay.join(RELAY_DRAIN)  # ExaBGP's last words, unless something holds the pipe
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            if ran > RESTART_BACKOFF_RESET_AFTER:
                backoff = RESTART_BACKOFF_INITIAL
            log.error("ExaBGP exited with %s after %.1fs; restarting in %.1fs", code, ran, backoff)
            if self._on_exit is not None:
                try:
                    self._on_exit(code)
                except Exception:
                    log.exception("ExaBGP exit handler failed")
            while True:
                if self._stopping.wait(max(backoff, self._paused_until - time.monotonic())):
                    return
                backoff = min(backoff * RESTART_BACKOFF_FACTOR, RESTART_BACKOFF_MAX)
                try:
                    if not self._spawn():
                        return
                except SpeakerError as exc:
                    log.error("%s; retrying in %.1fs", exc, backoff)
                    continue
                self.restarts += 1
                break

    def pause(self, seconds: float) -> None:
        """Stop the process now and start it again only after ``seconds``."""
        self._paused_until = time.monotonic() + seconds
        self.signal(signal.SIGTERM)

    def signal(self, signum: int) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signum)

    def stop(self, graceful: bool = True) -> None:
        """Stop for good: SIGTERM (then SIGKILL after STOP_GRACE) or SIGKILL at once."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
        if self._thread.is_alive():
            self._thread.join(STOP_GRACE)
