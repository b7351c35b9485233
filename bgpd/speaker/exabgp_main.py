"""ExaBGP's entry point with bgpd's performance patch: ``python -m bgpd.speaker.exabgp_main``.

The patch (see PATCHES.md) is applied only to the exact ExaBGP release it was written and
tested against; any other release runs unpatched and says so in its log.
"""

from __future__ import annotations

import os
import sys

PATCHED_VERSION = "5.0.15"
# Operators' escape hatch (and the benchmark's A/B switch): BGPD_EXABGP_PATCH=0 runs ExaBGP as shipped.
DISABLE_ENV = "BGPD_EXABGP_PATCH"


def installed_version() -> str:
    from exabgp.version import release

    return release


def _inject_change_without_copy(original):
    def inject_change(self, peers, change):
        # ExaBGP deep-copies every change before checking whether its next hop is "self"
        # (Neighbor.remove_self), so that neighbours sharing one change can each rewrite it.
        # A change bound for exactly one neighbour with an explicit next hop is never
        # rewritten nor shared: the API parsed it for this command alone. Skipping the
        # copy there saves most of the CPU and memory of a bulk load.
        targets = [name for name in self.neighbors if name in peers]
        if len(targets) == 1 and not change.nlri.nexthop.SELF:
            neighbor = self.neighbors[targets[0]]
            if change.nlri.family().afi_safi() in neighbor.families():
                neighbor.rib.outgoing.add_to_rib(change)
                return True
        return original(self, peers, change)

    inject_change.__wrapped__ = original
    return inject_change


CEASE_MAX_PREFIXES = 1  # RFC 4486 Cease subcode


def _teardown_with_cease(original):
    def teardown(self, code, restart=True):
        # ExaBGP closes a session that negotiated graceful restart without any NOTIFICATION,
        # whatever the teardown's code. A peer cut off for sending too many prefixes must be
        # told why (RFC 4486), and must not keep our routes as if we were restarting: for
        # this code only, this peer's graceful-restart setting is dropped. The agent stops
        # this ExaBGP for the hold-down right after, and the next one reads the config anew.
        if code == CEASE_MAX_PREFIXES:
            self.neighbor["capability"]["graceful-restart"] = False
        return original(self, code, restart)

    teardown.__wrapped__ = original
    return teardown


def apply_patches() -> bool:
    """Patch ExaBGP in this process; False (and nothing changed) on another release."""
    if os.environ.get(DISABLE_ENV) == "0":
        sys.stdout.write(f"bgpd       {DISABLE_ENV}=0: running ExaBGP unpatched\n")
        return False
    version = installed_version()
    if version != PATCHED_VERSION:
        sys.stdout.write(
            f"bgpd       ExaBGP {version} is not {PATCHED_VERSION}: running it unpatched (slower bulk loads)\n"
        )
        return False
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor.peer import Peer

    if not hasattr(Configuration.inject_change, "__wrapped__"):
        Configuration.inject_change = _inject_change_without_copy(Configuration.inject_change)
    if not hasattr(Peer.teardown, "__wrapped__"):
        Peer.teardown = _teardown_with_cease(Peer.teardown)
    return True


def main() -> None:
    apply_patches()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    sys.exit(exabgp_main())


if __name__ == "__main__":
    main()
