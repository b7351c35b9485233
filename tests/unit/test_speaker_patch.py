"""The ExaBGP patch applied by bgpd.speaker.exabgp_main is pinned to one release."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from bgpd.speaker import exabgp_main


def test_installed_exabgp_is_the_release_the_patch_was_written_for():
    # When this fails, ExaBGP was upgraded: re-read Configuration.inject_change and
    # Neighbor.remove_self in the new release, re-measure (bench/bgp_convergence.py), and
    # move PATCHED_VERSION only if the patch still holds (see bgpd/speaker/PATCHES.md).
    assert exabgp_main.installed_version() == exabgp_main.PATCHED_VERSION


def _fake_change(self_next_hop: bool, afi: str = "ipv4"):
    nlri = SimpleNamespace(nexthop=SimpleNamespace(SELF=self_next_hop), afi=afi, safi="unicast")
    return SimpleNamespace(nlri=nlri)


class _FakeNeighbor:
    def __init__(self):
        self.added = []
        self.rib = SimpleNamespace(outgoing=SimpleNamespace(add_to_rib=self.added.append))

    def families(self):
        return [("ipv4", "unicast")]


@pytest.mark.parametrize(
    "peers, self_next_hop, afi, copied",
    [(["a"], False, "ipv4", False), (["a"], True, "ipv4", True),
     (["a", "b"], False, "ipv4", True), (["a"], False, "ipv6", True)],
    ids=[
        "one neighbour with an explicit next hop shares the parsed change",
        "next-hop self still goes through ExaBGP's own copy",
        "several neighbours still get their own copies",
        "a family the neighbour lacks goes to ExaBGP's own path",
    ],
)
def test_the_copy_is_skipped_only_when_nothing_can_share_or_rewrite_the_change(
    peers, self_next_hop, afi, copied
):
    calls = []
    patched = exabgp_main._inject_change_without_copy(lambda self, p, c: calls.append(c) or True)
    config = SimpleNamespace(neighbors={"a": _FakeNeighbor(), "b": _FakeNeighbor()})
    change = _fake_change(self_next_hop, afi)
    assert patched(config, peers, change)
    assert bool(calls) == copied
    if not copied:
        assert config.neighbors["a"].added == [change]


def test_the_patch_is_applied_in_a_fresh_interpreter_and_only_once():
    code = (
        "from bgpd.speaker import exabgp_main as m\n"
        "assert m.apply_patches() and m.apply_patches()\n"
        "from exabgp.configuration.configuration import Configuration as C\n"
        "assert C.inject_change.__wrapped__.__name__ == 'inject_change'\n"
        "assert not hasattr(C.inject_change.__wrapped__, '__wrapped__')\n"
        "from exabgp.reactor.peer import Peer\n"
        "assert not hasattr(Peer.teardown.__wrapped__, '__wrapped__')\n"
        "from exabgp.reactor.asynchronous import ASYNC\n"
        f"assert ASYNC.LIMIT == {exabgp_main.COMMAND_STEPS_PER_ROUND}\n"
        "from exabgp.configuration.core.tokeniser import Tokeniser\n"
        "assert not hasattr(Tokeniser.set_api.__wrapped__, '__wrapped__')\n"
        "from exabgp.bgp.message.update.nlri.inet import INET\n"
        "assert not hasattr(INET.index.__wrapped__, '__wrapped__')\n"
        "assert not hasattr(INET.family.__wrapped__, '__wrapped__')\n"
        "import exabgp.bgp.message.update as u\n"
        "assert u.sorted is m.sorted_unless_in_index_order\n"
        "from exabgp.rib.change import Change\n"
        "assert not hasattr(Change.extensive.__wrapped__, '__wrapped__')\n"
        "from exabgp.reactor.api import API\n"
        "assert not hasattr(API.log_message.__wrapped__, '__wrapped__')\n"
        "from exabgp.protocol.ip.netmask import NetMask\n"
        "assert not hasattr(NetMask.create.__func__.__wrapped__, '__wrapped__')\n"
        "from exabgp.reactor.api.command.command import Command\n"
        "for name in m.QUIET_COMMANDS:\n"
        "    assert not hasattr(Command.callback['text'][name].__wrapped__, '__wrapped__')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_another_release_runs_unpatched(monkeypatch, capsys):
    monkeypatch.setattr(exabgp_main, "installed_version", lambda: "5.0.16")
    assert exabgp_main.apply_patches() is False
    assert "unpatched" in capsys.readouterr().out


@pytest.mark.parametrize("code, graceful", [(1, False), (2, 120), (4, 120)],
                         ids=["max prefixes: a Cease even under graceful restart",
                              "other codes: as shipped", "a reset to re-learn: as shipped"])
def test_only_a_max_prefixes_teardown_drops_graceful_restart(code, graceful):
    calls = []
    patched = exabgp_main._teardown_with_cease(lambda self, c, r: calls.append((c, r)))
    peer = SimpleNamespace(neighbor={"capability": {"graceful-restart": 120}})
    patched(peer, code)
    assert calls == [(code, True)]
    assert peer.neighbor["capability"]["graceful-restart"] == graceful


# ------------------------------------------------------------------ bulk-load patches

API_LINE = (
    "neighbor 10.255.0.1 announce attributes next-hop 10.255.0.2 origin igp community "
    "[ 65000:1 65000:2 ] as-path [ 64512 64512 ] extended-community [ bandwidth:0:125000 ] "
    "nlri 198.51.100.1/32 198.51.100.2/32 ;"
)


def _exabgp_words(line: str) -> list:
    """What ExaBGP's own tokeniser makes of ``line``: its statements, each a word list."""
    from exabgp.configuration.core.tokeniser import Tokeniser

    tokeniser = Tokeniser.__new__(Tokeniser)
    try:
        return list(Tokeniser._tokenise(tokeniser, iter([line])))
    except ValueError as exc:
        return [f"ValueError: {exc}"]


def _fast_words(line: str) -> tuple[list, list]:
    tokeniser = SimpleNamespace(line="")
    lines = []
    out = []
    for words in exabgp_main._api_statements(tokeniser, line):
        out.append(list(words))
        lines.append(tokeniser.line)
    return out, lines


def _takes_fast_path(line: str) -> bool:
    calls = []
    patched = exabgp_main._fast_api_tokeniser(lambda self, ln: calls.append(ln))
    tokeniser = SimpleNamespace(_set=lambda gen: list(gen))
    patched(tokeniser, line)
    return not calls


def test_the_fast_tokeniser_splits_our_lines_as_exabgp_does():
    assert _takes_fast_path(API_LINE)
    words, lines = _fast_words(API_LINE)
    assert words == _exabgp_words(API_LINE)
    assert lines == ["".join(w) for w in words]
    assert words[0][-3:] == ["198.51.100.1/32", "198.51.100.2/32", ";"]


@pytest.mark.parametrize("line", [
    'neighbor 10.0.0.1 announce route 10.0.0.0/24 next-hop 10.0.0.2 community "a b" ;',
    "neighbor 10.0.0.1 announce route 10.0.0.0/24 next-hop 10.0.0.2 # comment ;",
    "neighbor 10.0.0.1 announce route 10.0.0.0/24 next-hop 10.0.0.2 \\t;",
    "neighbor 10.0.0.1 announce route 10.0.0.0/24 next-hop 10.0.0.2",
])
def test_lines_with_quotes_comments_escapes_or_no_end_take_exabgps_path(line):
    assert not _takes_fast_path(line)


hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")


@hypothesis.settings(max_examples=3000, deadline=None)
@hypothesis.given(st.text(alphabet="ab1:./- \t\r\n,[];{}\x0b\u00a0", max_size=60),
                  st.sampled_from([";", " ;", "}", " { ", "; \n", "{"]))
def test_the_fast_tokeniser_equals_exabgps_on_any_line_it_takes(body, end):
    line = body + end
    if not _takes_fast_path(line):
        return
    words, lines = _fast_words(line)
    assert words == _exabgp_words(line)
    assert lines == ["".join(w) for w in words]


def test_presorting_nlris_keeps_exabgps_order():
    import random

    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.nlri import NLRI
    from exabgp.protocol.family import AFI, SAFI
    from exabgp.protocol.ip import IP

    rng = random.Random(7)
    nlris = []
    for _ in range(2000):
        nlri = INET(AFI.ipv4, SAFI.unicast, Action.ANNOUNCE)
        address = ".".join(str(rng.randint(0, 255)) for _ in range(4))
        nlri.cidr = CIDR(IP.pton(address), rng.choice([16, 24, 32, 32]))
        nlris.append(nlri)
    nlris += nlris[:50]  # equal keys: both sorts keep their first-seen order
    seen = []
    shim = exabgp_main.sorted_unless_in_index_order
    patched = exabgp_main._presorted_nlris(lambda self, neg: seen.append(shim(self.nlris)),
                                           NLRI.__lt__)
    update = SimpleNamespace(nlris=list(nlris))
    patched(update, None)
    expected = [id(n) for n in sorted(nlris)]  # the builtin, with NLRI.__lt__
    assert [id(n) for n in update.nlris] == expected
    assert [id(n) for n in seen[0]] == expected  # what ExaBGP's loop walks
    assert type(seen[0]) is list and seen[0] is not update.nlris
    # anything not marked is sorted as the builtin sorts it
    assert [id(n) for n in shim(list(reversed(nlris)))] == [
        id(n) for n in sorted(reversed(nlris))]
    assert shim([3, 1, 2], reverse=True) == [3, 2, 1]


def test_the_reactor_does_not_sleep_while_commands_wait():
    calls = []
    patched = exabgp_main._no_sleep_while_commands_wait(lambda self, t: calls.append(t))
    patched(SimpleNamespace(asynchronous=SimpleNamespace(_async=[("uid", iter(()))])), 1)
    patched(SimpleNamespace(asynchronous=SimpleNamespace(_async=[])), 1)
    assert calls == [0, 1]


def test_the_inet_index_is_exabgps_with_the_family_built_once():
    import random

    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update.nlri.cidr import CIDR
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.qualifier import PathInfo
    from exabgp.protocol.family import AFI, SAFI, Family
    from exabgp.protocol.ip import IP

    original = getattr(INET.index, "__wrapped__", INET.index)
    patched = exabgp_main._inet_index_with_family_once(original, Family.index, PathInfo.NOPATH)
    rng = random.Random(11)
    for _ in range(3000):
        v6 = rng.random() < 0.4
        afi = AFI.ipv6 if v6 else AFI.ipv4
        nlri = INET(afi, rng.choice([SAFI.unicast, SAFI.multicast]), Action.ANNOUNCE)
        raw = bytes(rng.randrange(256) for _ in range(16 if v6 else 4))
        nlri.cidr = CIDR(raw, rng.randint(0, 128 if v6 else 32))
        if rng.random() < 0.2:
            nlri.path_info = PathInfo(bytes(rng.randrange(256) for _ in range(4)))
        assert patched(nlri) == original(nlri), IP.ntop(raw)


class _Scheduler:
    def __init__(self):
        self.queued = []

    def schedule(self, uid, command, callback):
        self.queued.append(callback)


@pytest.mark.parametrize("info_logged", [False, True])
def test_route_commands_build_no_route_text_only_while_it_is_not_logged(info_logged):
    quiet = [False]
    text = exabgp_main._quiet_route_text(lambda change: "10.0.0.1/32 next-hop 10.0.0.9", quiet,
                                         lambda source, level: info_logged)
    seen = []

    def command(self, reactor, service, line, use_json):
        def steps():
            seen.append(text(None))  # what ExaBGP's own step builds its log line from
            yield False
            seen.append(text(None))
        reactor.asynchronous.schedule(service, line, steps())
        return True

    reactor = SimpleNamespace(asynchronous=_Scheduler())
    wrapped = exabgp_main._route_command_quietly(command, quiet)
    assert wrapped(None, reactor, "svc", "announce attributes ...", False)
    assert "schedule" not in vars(reactor.asynchronous)  # the class's method is back
    assert text(None) == "10.0.0.1/32 next-hop 10.0.0.9"  # scheduling is not a step
    assert list(reactor.asynchronous.queued[0]) == [False]
    expected = "10.0.0.1/32 next-hop 10.0.0.9" if info_logged else ""
    assert seen == [expected, expected]
    assert text(None) == "10.0.0.1/32 next-hop 10.0.0.9"  # outside the steps: the full text


def test_one_family_object_is_shared_per_family_and_equals_exabgps():
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update.nlri.inet import INET
    from exabgp.bgp.message.update.nlri.label import Label
    from exabgp.protocol.family import AFI, SAFI

    original = getattr(INET.family, "__wrapped__", INET.family)
    patched = exabgp_main._one_family_object_each(original)
    made = {}
    for cls, afi, safi in [(INET, AFI.ipv4, SAFI.unicast), (INET, AFI.ipv6, SAFI.unicast),
                           (INET, AFI.ipv4, SAFI.multicast), (Label, AFI.ipv4, SAFI.nlri_mpls)]:
        for _ in range(3):
            nlri = cls(afi, safi, Action.ANNOUNCE)
            got, want = patched(nlri), original(nlri)
            assert type(got) is type(want)
            assert got.afi_safi() == want.afi_safi() == (afi, safi)
            assert got == want
            assert made.setdefault((afi, safi), got) is got  # shared within a family
    assert len({id(f) for f in made.values()}) == 4  # and never across families


@pytest.mark.parametrize("logged", [False, True])
def test_log_messages_go_to_exabgp_exactly_when_it_logs_them(logged):
    asked, passed = [], []

    def enabled(source, level):
        asked.append((source, level))
        return logged

    patched = exabgp_main._log_message_only_if_logged(
        lambda self, message, level="INFO": passed.append((message, level)), enabled)
    patched(None, "route added to 10.0.0.1 : 10.1.0.0/32")
    patched(None, "something", "WARNING")
    assert asked == [("processes", "INFO"), ("processes", "WARNING")]
    assert passed == ([("route added to 10.0.0.1 : 10.1.0.0/32", "INFO"), ("something", "WARNING")]
                      if logged else [])


def test_a_netmask_is_exabgps_each_time_whatever_came_before():
    from exabgp.protocol.family import AFI
    from exabgp.protocol.ip.netmask import NetMask

    original = NetMask.create
    original = getattr(original.__func__, "__wrapped__", original)
    patched = exabgp_main._netmask_once(original).__get__(None, NetMask)
    texts = ["0", "8", "24", "32", "33", "64", "128", "129", "x", "032", "0032", "-1", ""]
    for _ in range(3):
        for afi in (AFI.ipv4, AFI.ipv6, AFI.ipv4):
            for text in texts:
                try:
                    got = patched(text, afi)
                except ValueError as exc:
                    with pytest.raises(ValueError, match=str(exc)):
                        original(text, afi)
                    continue
                # the maximum of this family, though the instance is shared between them
                assert got.maximum == (32 if afi == AFI.ipv4 else 128)
                want = original(text, afi)
                assert got is want and int(got) == int(want)
    # Remembered: only the short texts that parsed ("0032" parses but is not kept), per
    # family, whatever odd or long text came by.
    made = next(c.cell_contents for c in patched.__func__.__closure__
                if isinstance(c.cell_contents, dict))
    v4 = {"0", "8", "24", "32", "032"}
    assert {(text, afi) for _, text, afi in made} == (
        {(t, AFI.ipv4) for t in v4} | {(t, AFI.ipv6) for t in v4 | {"33", "64", "128"}})
