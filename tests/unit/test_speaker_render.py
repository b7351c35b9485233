"""ExaBGP configuration and environment rendering (bgpd.speaker.render)."""

from pathlib import Path

import pytest

from bgpd.config import BgpConfig, PeerConfig
from bgpd.speaker.errors import SpeakerError
from bgpd.speaker.render import SpeakerSettings, render_config, render_environment

GOLDEN = Path(__file__).parent / "golden" / "exabgp.conf"

BGP = BgpConfig(
    asn=64512,
    router_id="10.0.0.2",
    peers=(
        PeerConfig(address="10.0.0.1", asn=65000, local_address="10.0.0.2", name="tor1", families=("ipv4-unicast",)),
        PeerConfig(address="fd00::1", asn=64512, local_address="fd00::2", hold_time=30, graceful_restart=0,
                   passive=True, password_file="/secret", families=("ipv6-unicast",)),
        PeerConfig(address="10.9.0.1", asn=65001, ttl_security=True, port=1179),
    ),
)  # fmt: skip
SETTINGS = SpeakerSettings(
    router_id="10.0.0.2",
    api_argv=["/usr/bin/python3", "-m", "bgpd.speaker.bridge", "/run/x/api.sock"],
)


def test_rendered_config_matches_the_golden_file():
    # The golden file was checked once against ExaBGP itself (`exabgp validate`), and the
    # integration tests run the same renderer against FRR and BIRD.
    text = render_config(BGP, SETTINGS, {"fd00::1": 's3cret; with "quotes"'})
    if not GOLDEN.exists():  # first run writes it; review and commit it
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_the_md5_secret_never_appears_in_clear():
    text = render_config(BGP, SETTINGS, {"fd00::1": "s3cret"})
    assert "s3cret" not in text
    assert "md5-password czNjcmV0;" in text


@pytest.mark.parametrize(
    "arg", ["/path with space", "a;b", ""], ids=["space", "semicolon", "empty"]
)
def test_unsafe_helper_arguments_are_refused(arg):
    with pytest.raises(SpeakerError):
        render_config(BGP, SpeakerSettings("10.0.0.2", ["/usr/bin/python3", arg]))


def test_no_listening_unless_a_listen_port_is_configured():
    assert render_environment(BGP, SETTINGS)["exabgp_tcp_bind"] == ""
    listening = BgpConfig(asn=1, listen_port=1790, peers=BGP.peers)
    env = render_environment(listening, SETTINGS)
    assert env["exabgp_tcp_bind"] == "10.0.0.2 fd00::2"
    assert env["exabgp_tcp_port"] == "1790"


def test_every_environment_name_is_one_exabgp_knows():
    from exabgp.environment import setup  # noqa: F401  (fills the definition table)
    from exabgp.environment.environment import Env

    Env._ensure_setup()
    known = {
        f"exabgp_{section}_{option}"
        for section, options in Env.definition.items()
        for option in options
    }
    names = {name for name in render_environment(BGP, SETTINGS) if name.startswith("exabgp_")}
    assert names <= known, names - known


def test_exabgp_logs_per_route_lines_only_when_we_debug_and_never_its_debug_trace():
    assert render_environment(BGP, SETTINGS)["exabgp_log_level"] == "WARNING"
    debug = SpeakerSettings("10.0.0.2", SETTINGS.api_argv, log_level="debug")
    # ExaBGP's DEBUG prints its parsed configuration, MD5 keys included.
    assert render_environment(BGP, debug)["exabgp_log_level"] == "INFO"
    error = SpeakerSettings("10.0.0.2", SETTINGS.api_argv, log_level="error")
    assert render_environment(BGP, error)["exabgp_log_level"] == "ERROR"


def test_stale_work_folders_are_those_no_living_agent_locks(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    from bgpd.speaker import workdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(workdir, "SWEEP_MIN_AGE_S", 0.0)
    mine = workdir.Workdir()  # alive: this process holds its lock
    # A dead agent's folder, named after pid 1 as every agent in a container is: the name
    # says "alive", the lock (released when its holder died) says otherwise.
    dead = tmp_path / f"{workdir.WORKDIR_PREFIX}1-abc"
    dead.mkdir()
    (dead / workdir.LOCK_NAME).touch()
    (dead / "exabgp.conf").write_text("md5-password secret;")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY);"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"),
        str(dead / workdir.LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert workdir.remove_stale_workdirs() == []  # another living agent holds it
    finally:
        holder.kill()
        holder.wait()
    assert workdir.remove_stale_workdirs() == [str(dead)]
    assert mine.path.exists() and not dead.exists()
    monkeypatch.setattr(workdir, "SWEEP_MIN_AGE_S", 3600.0)
    young = tmp_path / f"{workdir.WORKDIR_PREFIX}{os.getpid()}-new"
    young.mkdir()  # being created right now, not locked yet: left alone
    assert workdir.remove_stale_workdirs() == []
    mine.remove()
    assert not mine.path.exists()
