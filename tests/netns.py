"""Network-namespace helpers for tests: create, wire with veth, run commands, always clean up.

    with NetNS() as a, NetNS() as b:
        veth(a, "va", b, "vb")
        run(a, "ip", "addr", "add", "10.0.0.1/24", "dev", "va")

Names are ``bgpdtest-<pid>-<random>`` so parallel runs never collide, and only namespaces
created here are ever deleted. Deleting a namespace also destroys the veth ends inside it.
"""

from __future__ import annotations

import os
import secrets
import subprocess

PREFIX = "bgpdtest-"
# Every helper command is local and quick; a hang means something is badly wrong.
COMMAND_TIMEOUT_S = 60


class NetNS:
    """``ip netns add`` on enter (or on construction), ``ip netns del`` on exit/close."""

    def __init__(self, label: str = "") -> None:
        tag = f"{label}-" if label else ""
        self.name = f"{PREFIX}{tag}{os.getpid()}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=COMMAND_TIMEOUT_S)
        self._open = True
        try:
            run(self, "ip", "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def __enter__(self) -> NetNS:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __str__(self) -> str:
        return self.name

    def close(self) -> None:
        if self._open:
            self._open = False
            subprocess.run(
                ["ip", "netns", "del", self.name], check=False, timeout=COMMAND_TIMEOUT_S
            )


def _ns_name(ns: NetNS | str | None) -> str | None:
    return None if ns is None else str(ns)


def run(ns: NetNS | str | None, *cmd: str, check: bool = True, input: str | None = None) -> str:
    """Run ``cmd`` inside ``ns`` (None: the current namespace); return its stdout."""
    name = _ns_name(ns)
    argv = list(cmd) if name is None else ["ip", "netns", "exec", name, *cmd]
    proc = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        input=input,
        timeout=COMMAND_TIMEOUT_S,
    )
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def veth(
    ns_a: NetNS | str, name_a: str, ns_b: NetNS | str | None, name_b: str, up: bool = True
) -> None:
    """A veth pair with one end in each namespace (``ns_b`` None: the current one)."""
    a, b = _ns_name(ns_a), _ns_name(ns_b)
    # Create inside ns_a so a name clash with the host's links is impossible.
    peer = ["peer", "name", name_b] + (
        ["netns", b] if b is not None else ["netns", str(os.getpid())]
    )
    run(a, "ip", "link", "add", name_a, "type", "veth", *peer)
    if up:
        run(a, "ip", "link", "set", name_a, "up")
        run(b, "ip", "link", "set", name_b, "up")


def batch(ns: NetNS | str | None, lines: list[str]) -> None:
    """Feed ``ip -batch -`` inside ``ns`` (fast bulk setup of routes, links ...)."""
    run(ns, "ip", "-batch", "-", input="\n".join(lines) + "\n")
