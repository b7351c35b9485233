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


def _fake_change(self_next_hop: bool):
    family = SimpleNamespace(afi_safi=lambda: ("ipv4", "unicast"))
    nlri = SimpleNamespace(nexthop=SimpleNamespace(SELF=self_next_hop), family=lambda: family)
    return SimpleNamespace(nlri=nlri)


class _FakeNeighbor:
    def __init__(self):
        self.added = []
        self.rib = SimpleNamespace(outgoing=SimpleNamespace(add_to_rib=self.added.append))

    def families(self):
        return [("ipv4", "unicast")]


@pytest.mark.parametrize(
    "peers, self_next_hop, copied",
    [(["a"], False, False), (["a"], True, True), (["a", "b"], False, True)],
    ids=[
        "one neighbour with an explicit next hop shares the parsed change",
        "next-hop self still goes through ExaBGP's own copy",
        "several neighbours still get their own copies",
    ],
)
def test_the_copy_is_skipped_only_when_nothing_can_share_or_rewrite_the_change(
    peers, self_next_hop, copied
):
    calls = []
    patched = exabgp_main._inject_change_without_copy(lambda self, p, c: calls.append(c) or True)
    config = SimpleNamespace(neighbors={"a": _FakeNeighbor(), "b": _FakeNeighbor()})
    change = _fake_change(self_next_hop)
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
