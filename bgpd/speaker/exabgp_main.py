"""ExaBGP's entry point with bgpd's patches: ``python -m bgpd.speaker.exabgp_main``.

The patch (see PATCHES.md) is applied only to the exact ExaBGP release it was written and
tested against; any other release runs unpatched and says so in its log.
"""

from __future__ import annotations

import os
import re
import sys

from bgpd.speaker import exabgp_packed

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
            nlri = change.nlri
            # (afi, safi) as NLRI.family().afi_safi() gives it, without two objects made
            if (nlri.afi, nlri.safi) in neighbor.families():
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


def _no_sleep_while_commands_wait(original):
    def _wait_for_io(self, sleeptime):
        # The reactor polls with a timeout (1 ms at our reactor speed) unless a peer asked
        # to run again or an API line was read this round. Commands read earlier and still
        # queued do not count, so a bulk load slept once every few hundred routes. While
        # the queue holds work, poll without waiting: as in a round that read a line.
        if self.asynchronous._async:
            sleeptime = 0
        return original(self, sleeptime)

    _wait_for_io.__wrapped__ = original
    return _wait_for_io


COMMAND_STEPS_PER_ROUND = 1000
"""ASYNC.LIMIT, ExaBGP's queued command steps per reactor round (50 as shipped). One step
of ``announce attributes ... nlri`` is one prefix, and the peer sends what the round put
in its RIB: 50 gave UPDATEs of 50 /32s, with a round's fixed costs per 50 prefixes.
1,000 fills a 4,096-byte UPDATE (about 800 /32s). A round then takes up to ~40 ms on a
loaded 2-core machine: far below any keepalive or hold time."""

_API_WORD = re.compile(r"[;{}\[\],]|[^ \t\r\n;{}\[\],]+")
_API_END = (";", "{", "}")


def _fast_api_tokeniser(original):
    def set_api(self, line):
        # ExaBGP splits an API line into words one character at a time, a tenth of a bulk
        # load's CPU for our 16 kB lines. A line without quotes, comments or escapes that
        # ends a statement splits the same with one regular expression: words between
        # blanks, and each of , [ ] ; { } a word of its own; ; { } end a statement. Any
        # other line takes ExaBGP's path.
        if ('"' in line or "'" in line or "#" in line or "\\" in line
                or not line.rstrip(" \t\r\n").endswith(_API_END)):
            return original(self, line)
        return self._set(_api_statements(self, line))

    set_api.__wrapped__ = original
    return set_api


def _api_statements(tokeniser, line):
    words = []
    for word in _API_WORD.findall(line):
        words.append(word)
        if word in _API_END:
            tokeniser.line = "".join(words)
            yield words
            words = []


class InIndexOrder(list):
    """NLRIs already in ``NLRI.__lt__`` order (sorted by ``index()``)."""


def sorted_unless_in_index_order(iterable, /, *, key=None, reverse=False):
    """``sorted`` for ExaBGP's update module: a list we sorted already is copied as it is,
    anything else is sorted by the builtin."""
    if type(iterable) is InIndexOrder and key is None and not reverse:
        return list(iterable)
    return sorted(iterable, key=key, reverse=reverse)


def _presorted_nlris(original, plain_lt):
    def _split_nlris(self, negotiated):
        # Update._split_nlris sorts with NLRI.__lt__, which builds both NLRIs' index()
        # bytes for every comparison: 2 n log n of them for an UPDATE of n prefixes. For
        # NLRIs compared by NLRI.__lt__ (index() < index()), a sort keyed on index() gives
        # the same order (both sorts are stable); marked as such, ExaBGP's sort in that
        # module (sorted_unless_in_index_order) copies it instead of comparing again.
        nlris = self.nlris
        if len(nlris) > 2 and all(type(n).__lt__ is plain_lt for n in nlris):
            self.nlris = InIndexOrder(sorted(nlris, key=lambda n: n.index()))
        return original(self, negotiated)

    _split_nlris.__wrapped__ = original
    return _split_nlris


def _once_per_family(make):
    """``make(nlri)``, made once per (afi, safi) and then shared: bounded by the families
    ExaBGP has NLRI classes for, whatever a peer sends."""
    made: dict[tuple, object] = {}

    def get(nlri):
        key = (nlri.afi, nlri.safi)
        found = made.get(key)
        if found is None:
            found = made[key] = make(nlri)
        return found

    return get


def _inet_index_with_family_once(original, family_index, no_path):
    head_of = _once_per_family(lambda nlri: family_index(nlri) + b"no-pi")

    def index(self):
        # INET.index formats the family as hex text and encodes it for every call, and
        # ExaBGP calls it twice per route we send (to file it in the outgoing RIB, then to
        # sort the UPDATE). Without a path id the index is a fixed prefix per family (at
        # most the four INET families) and the packed prefix: the same bytes, built once.
        if self.path_info is not no_path:
            return original(self)
        return head_of(self) + self.cidr.pack_nlri()

    index.__wrapped__ = original
    return index


def _one_family_object_each(original):
    # NLRI.family() builds a new Family, and an AFI and a SAFI object, at each call: three
    # times per route we send (filing it in the outgoing RIB, twice in
    # Update._split_nlris), each to read its (afi, safi) or compare it. Nothing in ExaBGP
    # changes the object it gets, so one per family (at most the few INET families) is
    # made and shared.
    family = _once_per_family(original)
    family.__wrapped__ = original
    return family


QUIET_COMMANDS = ("announce attributes", "withdraw attributes")
"""The commands bgpd sends routes with: theirs are the only per-route log lines quietened."""


def _quiet_route_text(original, quiet, log_enabled):
    def extensive(self):
        # A change's text, wanted only for the log line that ExaBGP builds per route of a
        # command whether or not it is logged: 9 % of its CPU in a bulk load. Empty while
        # one of our route commands runs and ExaBGP's INFO lines are off (bgpd keeps them
        # off below debug, see render.exabgp_log_level); the full text otherwise.
        if quiet[0] and not log_enabled("processes", "INFO"):
            return ""
        return original(self)

    extensive.__wrapped__ = original
    return extensive


def _log_message_only_if_logged(original, log_enabled):
    def log_message(self, message, level="INFO"):
        # API.log_message wraps the text in a lambda and goes through two calls to learn
        # that "processes" is not logged at that level, once per route of a command. The
        # same check first, then ExaBGP's own path: what gets logged is unchanged.
        if not log_enabled("processes", level):
            return None
        return original(self, message, level)

    log_message.__wrapped__ = original
    return log_message


NETMASK_TEXT_MAX = 3
"""Mask texts remembered by _netmask_once: "0" to "128", the ones bgpd writes."""


def _netmask_once(original):
    made: dict[tuple, tuple] = {}

    def create(cls, string, afi):
        # NetMask.create checks and converts the mask text, then asks Resource.__new__ for
        # the shared instance (a string join and two dict lookups) and sets its maximum:
        # once per prefix parsed. The same (text, family) always gives the same instance
        # and maximum; it is looked up, and the maximum set again as the original does
        # (the instance is shared between families). Invalid masks raise, never cached.
        key = (cls, string, afi)
        found = made.get(key)
        if found is None:
            mask = original.__func__(cls, string, afi)
            if isinstance(string, str) and len(string) <= NETMASK_TEXT_MAX:
                made[key] = (mask, mask.maximum)
            return mask
        mask, maximum = found
        mask.maximum = maximum
        return mask

    create.__wrapped__ = original
    return classmethod(create)


def _stepped_quietly(generator, quiet):
    """``generator``'s steps, each run with ``quiet`` set."""
    while True:
        quiet[0] = True
        try:
            step = next(generator)
        except StopIteration:
            return
        finally:
            quiet[0] = False
        yield step


def _route_command_quietly(original, quiet):
    def command(self, reactor, service, line, use_json):
        # The command's work runs later, as a generator ExaBGP schedules; the generator is
        # wrapped on its way into the queue so that only its own steps are quiet.
        asynchronous = reactor.asynchronous
        schedule = asynchronous.schedule

        def quietly(uid, text, callback):
            return schedule(uid, text, _stepped_quietly(callback, quiet))

        asynchronous.schedule = quietly
        try:
            return original(self, reactor, service, line, use_json)
        finally:
            del asynchronous.schedule  # the class's own method again

    command.__wrapped__ = original
    return command


def unpatched_reason(environ) -> str | None:
    """Why an ExaBGP started with ``environ`` runs as shipped; None when it is patched
    (the speaker driver asks too: only a patched ExaBGP takes ``announce packed``)."""
    if environ.get(DISABLE_ENV) == "0":
        return f"{DISABLE_ENV}=0"
    version = installed_version()
    if version != PATCHED_VERSION:
        return f"ExaBGP {version} is not {PATCHED_VERSION}"
    return None


def apply_patches() -> bool:
    """Patch ExaBGP in this process; False (and nothing changed) on another release."""
    why = unpatched_reason(os.environ)
    if why is not None:
        sys.stdout.write(f"bgpd       {why}: running ExaBGP unpatched (slower bulk loads)\n")
        return False
    from exabgp.bgp.message.update import Update
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.nlri import NLRI
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.configuration.configuration import Configuration
    from exabgp.configuration.core.tokeniser import Tokeniser
    from exabgp.logger import option
    from exabgp.protocol.family import Family
    from exabgp.protocol.ip.netmask import NetMask
    from exabgp.reactor.api import API
    from exabgp.reactor.api.command.command import Command
    from exabgp.reactor.asynchronous import ASYNC
    from exabgp.reactor.loop import Reactor
    from exabgp.reactor.peer import Peer
    from exabgp.rib.change import Change

    if not hasattr(Configuration.inject_change, "__wrapped__"):
        Configuration.inject_change = _inject_change_without_copy(Configuration.inject_change)
    if not hasattr(Peer.teardown, "__wrapped__"):
        Peer.teardown = _teardown_with_cease(Peer.teardown)
    if not hasattr(Reactor._wait_for_io, "__wrapped__"):
        Reactor._wait_for_io = _no_sleep_while_commands_wait(Reactor._wait_for_io)
    if not hasattr(Tokeniser.set_api, "__wrapped__"):
        Tokeniser.set_api = _fast_api_tokeniser(Tokeniser.set_api)
    if not hasattr(Update._split_nlris, "__wrapped__"):
        Update._split_nlris = _presorted_nlris(Update._split_nlris, NLRI.__lt__)
        # _split_nlris' module looks `sorted` up in its globals first (its only use)
        sys.modules[Update.__module__].sorted = sorted_unless_in_index_order
    if not hasattr(Change.extensive, "__wrapped__"):
        quiet = [False]
        Change.extensive = _quiet_route_text(Change.extensive, quiet, option.log_enabled)
        API.log_message = _log_message_only_if_logged(API.log_message, option.log_enabled)
        for name in QUIET_COMMANDS:
            Command.callback["text"][name] = _route_command_quietly(
                Command.callback["text"][name], quiet)
    if not hasattr(INET.family, "__wrapped__"):
        INET.family = _one_family_object_each(INET.family)
    if not hasattr(NetMask.create, "__wrapped__"):
        NetMask.create = _netmask_once(NetMask.create)
    if not hasattr(INET.index, "__wrapped__"):
        INET.index = _inet_index_with_family_once(INET.index, Family.index, PathInfo.NOPATH)
    ASYNC.LIMIT = COMMAND_STEPS_PER_ROUND
    exabgp_packed.apply()
    return True


def main() -> None:
    apply_patches()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    sys.exit(exabgp_main())


if __name__ == "__main__":
    main()
