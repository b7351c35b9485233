"""`bgpd check-config`: every broken file names the field path and the bad value, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgpd.cli import main

HERE = Path(__file__).parent / "configs"

MINIMAL = "bgp: {asn: 64512}\n"

BROKEN = [
    ("ASN out of range", "bgp: {asn: 4294967296}\n",
     "bgp.asn: 4294967296 must be an integer in 1..4294967295"),
    ("missing ASN", "bgp: {router_id: auto}\n", "bgp.asn: is required"),
    ("peer address is not an IP", "bgp: {asn: 1, peers: [{address: tor1, asn: 2}]}\n",
     "bgp.peers[0].address: 'tor1' is not an IP address"),
    ("hold time below 3", "bgp: {asn: 1, peers: [{address: 10.0.0.1, asn: 2, hold_time: 2}]}\n",
     "bgp.peers[0].hold_time: 2 must be 0 or at least 3"),
    ("keepalive not below hold time",
     "bgp: {asn: 1, peers: [{address: 10.0.0.1, asn: 2, hold_time: 9, keepalive: 9}]}\n",
     "bgp.peers[0].keepalive: 9 must be less than hold_time 9"),
    ("unknown family",
     "bgp: {asn: 1, peers: [{address: 10.0.0.1, asn: 2, families: [ipv4-flowspec]}]}\n",
     "bgp.peers[0].families[0]: 'ipv4-flowspec' must be one of ipv4-unicast, ipv6-unicast"),
    ("relative password file",
     "bgp: {asn: 1, peers: [{address: 10.0.0.1, asn: 2, password_file: secret}]}\n",
     "bgp.peers[0].password_file: 'secret' must be an absolute path"),
    ("passive peer without a listen port",
     "bgp: {asn: 1, peers: [{address: 10.0.0.1, asn: 2, passive: true}]}\n",
     "bgp.peers[0].passive: a passive peer needs bgp.listen_port"),
    ("pool with a /0", MINIMAL + "pools: [{name: all, cidrs: [0.0.0.0/0], allow: [external-ip]}]\n",
     "pools[0].cidrs[0]: '0.0.0.0/0' covers every address"),
    ("pool CIDR with host bits", MINIMAL
     + "pools: [{name: p, cidrs: [198.51.100.1/24], allow: [external-ip]}]\n",
     "pools[0].cidrs[0]: '198.51.100.1/24' is not a CIDR prefix"),
    ("pool use misspelled", MINIMAL
     + "pools: [{name: p, cidrs: [198.51.100.0/24], allow: [externalip]}]\n",
     "pools[0].allow[0]: 'externalip' must be one of"),
    ("pool overlapping the service CIDR", MINIMAL
     + "cluster: {service_cidrs: [10.96.0.0/16]}\n"
       "pools: [{name: p, cidrs: [10.96.0.0/24], allow: [external-ip]}]\n",
     "pools[0].cidrs[0]: 10.96.0.0/24 overlaps the service CIDR 10.96.0.0/16"),
    ("two pools overlapping", MINIMAL
     + "pools: [{name: a, cidrs: [198.51.100.0/24], allow: [external-ip]},\n"
       "        {name: b, cidrs: [198.51.100.128/25], allow: [load-balancer-ip]}]\n",
     "pools[1].cidrs: 198.51.100.128/25 overlaps 198.51.100.0/24 of pool 'a'"),
    ("bad community", MINIMAL
     + "pools: [{name: p, cidrs: [198.51.100.0/24], allow: [external-ip], communities: ['65536:1']}]\n",
     "pools[0].communities[0]: '65536:1' is not a community"),
    ("withdraw fraction above 1", MINIMAL + "safety: {max_withdraw_fraction: 1.5}\n",
     "safety.max_withdraw_fraction: 1.5 must be a number in 0.0..1.0"),
    ("unknown top-level field", MINIMAL + "peers: []\n", "peers: unknown field"),
    ("import rule with le below ge", MINIMAL
     + "import: {allow: [{prefix: 10.0.0.0/8, ge: 24, le: 16}]}\n",
     "import.allow[0].le: 16 must be at least ge 24"),
    ("kernel proto reserved for the kernel", MINIMAL + "kernel: {proto: 2}\n",
     "kernel.proto: 2 must be an integer in 5..255"),
    ("metrics address without a port", MINIMAL + "http: {metrics_address: 0.0.0.0}\n",
     "http.metrics_address: '0.0.0.0' must be HOST:PORT"),
    ("not YAML", "bgp: {asn: [1\n", "not valid YAML"),
    ("not a mapping", "- 1\n- 2\n", "(top): must be a mapping"),
]


@pytest.mark.parametrize("text,message", [(t, m) for _, t, m in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_broken_file_is_refused_with_path_and_value(tmp_path, capsys, text, message):
    path = tmp_path / "bgpd.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err, err


def test_every_error_is_reported_at_once(tmp_path, capsys):
    path = tmp_path / "bgpd.yaml"
    path.write_text("bgp: {asn: 0, peers: [{address: x, asn: 0}]}\nsafety: {max_withdraw_fraction: 2}\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") >= 4 and "4 error(s)" in err


def test_valid_file_passes(capsys):
    assert main(["check-config", str(HERE / "good.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("run", "check-config", "status", "peers", "routes", "explain", "diff", "lab"):
        assert name in out


@pytest.mark.parametrize("value", ["²", "６５０００:1", "1:2:3", "-1:5", " :1"])
def test_community_with_non_ascii_or_malformed_digits_is_an_error_not_a_crash(value):
    from bgpd.config import ConfigError, parse_config

    raw = {"bgp": {"asn": 1}, "pools": [{"name": "p", "cidrs": ["198.51.100.0/24"],
                                         "allow": ["external-ip"], "communities": [value]}]}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "is not a community" in str(err.value)


@pytest.mark.parametrize("content", [b"bgp: {asn: 1}\n# caf\xe9\n", b"bgp: {asn: " + b"9" * 5000 + b"}\n"],
                         ids=["not UTF-8", "a 5,000-digit integer"])
def test_unreadable_files_are_config_errors_not_crashes(tmp_path, capsys, content):
    path = tmp_path / "bgpd.yaml"
    path.write_bytes(content)
    assert main(["check-config", str(path)]) == 1
    assert "cannot be read" in capsys.readouterr().err
