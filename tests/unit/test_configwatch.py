"""The config watcher (bgpd.configwatch): a ConfigMap-style update, a broken file, a
rotated key file, and the poll fallback, each seen within its documented time."""

from __future__ import annotations

import os
import time

import pytest
import yaml

from bgpd import configwatch
from bgpd.config import load_config
from tests.unit.policy_builders import BASE_CONFIG

DEADLINE = 3.0  # inotify + DEBOUNCE_S (0.2 s), with room for a loaded machine


def wait_for(probe, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.02)
    return probe()


class ConfigMapDir:
    """A folder laid out as the kubelet mounts a ConfigMap: the file is a symlink into
    ``..data``, itself a symlink to a timestamped folder swapped atomically on update."""

    def __init__(self, root, name="bgpd.yaml"):
        self.root, self.name, self.n = root, name, 0
        self.path = os.path.join(root, name)

    def write(self, doc):
        self.n += 1
        version = os.path.join(self.root, f"..v{self.n}")
        os.mkdir(version)
        with open(os.path.join(version, self.name), "w") as fh:
            fh.write(doc if isinstance(doc, str) else yaml.safe_dump(doc))
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(f"..v{self.n}", tmp)
        os.replace(tmp, os.path.join(self.root, "..data"))  # the atomic swap
        if not os.path.islink(self.path):
            os.symlink(os.path.join("..data", self.name), self.path)


@pytest.fixture
def mounted(tmp_path):
    cm = ConfigMapDir(str(tmp_path))
    cm.write(BASE_CONFIG)
    seen, secrets = [], []
    watcher = configwatch.ConfigWatcher(cm.path, load_config(cm.path), seen.append,
                                        lambda: secrets.append(1))
    watcher.start()
    yield cm, watcher, seen, secrets
    watcher.stop()


def test_a_configmap_update_is_applied_within_a_second(mounted):
    cm, _, seen, _ = mounted
    started = time.monotonic()
    cm.write({**BASE_CONFIG, "resync_seconds": 30})
    assert wait_for(lambda: seen)
    assert time.monotonic() - started < 1.5
    assert seen[-1].resync_seconds == 30


def test_a_broken_file_is_rejected_and_the_last_good_config_stays(mounted):
    cm, watcher, seen, _ = mounted
    cm.write("bgp: [not, a, mapping\n")
    assert wait_for(lambda: watcher.rejected == 1)
    assert seen == []
    cm.write({**BASE_CONFIG, "resync_seconds": 40})
    assert wait_for(lambda: seen and seen[-1].resync_seconds == 40)


def test_a_rotated_key_file_is_noticed(tmp_path):
    keys = tmp_path / "secrets"
    keys.mkdir()
    key = keys / "rack1"
    key.write_text("old")
    cm = ConfigMapDir(str(tmp_path / "config"))
    os.mkdir(cm.root)
    peers = [{"address": "10.0.0.1", "asn": 65000, "password_file": str(key)}]
    cm.write({**BASE_CONFIG, "bgp": {"asn": 64512, "peers": peers}})
    secrets = []
    watcher = configwatch.ConfigWatcher(cm.path, load_config(cm.path), lambda c: None,
                                        lambda: secrets.append(1))
    watcher.start()
    try:
        tmp = keys / ".rack1.new"
        tmp.write_text("new")
        os.replace(tmp, key)
        assert wait_for(lambda: secrets)
    finally:
        watcher.stop()


def test_without_inotify_the_poll_still_sees_the_change(tmp_path, monkeypatch):
    monkeypatch.setattr(configwatch, "_inotify", lambda: None)
    monkeypatch.setattr(configwatch, "POLL_SECONDS", 0.2)
    cm = ConfigMapDir(str(tmp_path))
    cm.write(BASE_CONFIG)
    seen = []
    watcher = configwatch.ConfigWatcher(cm.path, load_config(cm.path), seen.append, lambda: None)
    watcher.start()
    try:
        cm.write({**BASE_CONFIG, "resync_seconds": 50})
        assert wait_for(lambda: seen and seen[-1].resync_seconds == 50)
    finally:
        watcher.stop()
