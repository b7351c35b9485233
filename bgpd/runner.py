"""`bgpd run`: build the real adapters around the Agent, serve HTTP, handle signals.

The only module that knows every adapter; the Agent itself sees ports (bgpd/ports.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from bgpd import logs
from bgpd.agent import Agent
from bgpd.config import BgpConfig, Config, ConfigError, load_config
from bgpd.configwatch import ConfigWatcher
from bgpd.runtime import freeze_after_sync, tune_gc
from bgpd.statefile import StateStore

log = logging.getLogger("bgpd.run")

STATE_DIR_ENV = "BGPD_STATE_DIR"  # where the agent keeps state for its successor


class ClusterPort:
    """ClusterCache plus a health signal: is every watch connected right now?"""

    def __init__(self, cache: Any):
        self.cache = cache

    def start(self) -> None:
        self.cache.start()

    def stop(self) -> None:
        self.cache.stop()

    def snapshot(self):
        return self.cache.snapshot()

    def stats(self) -> dict[str, Any]:
        return self.cache.stats()

    def healthy(self) -> bool:
        """False while any watch's last attempt failed (a success since clears it)."""
        if not self.cache.synced:
            return False
        return all(not stats.last_error_at or stats.last_error_at <= stats.last_ok_at
                   for stats in self.cache.stats().values())


class EventsPort:
    def __init__(self, recorder: Any):
        self.recorder = recorder

    def record(self, kind: str, namespace: str, name: str, reason: str, message: str,
               cluster_wide: bool = False, uid: str = "") -> None:
        from bgpd.kube.events import ObjectRef

        self.recorder.record(ObjectRef(kind, namespace, name, uid), reason, message,
                             cluster_wide=cluster_wide)


class Parts:
    """The agent and the adapters around it, started and stopped together."""

    def __init__(self, agent: Agent, servers: Any, recorder: Any, monitor: Any,
                 watcher: Any = None, status_writer: Any = None, gate: Any = None,
                 drain_peers: Any = None):
        self.agent, self.servers, self.recorder, self.monitor = agent, servers, recorder, monitor
        # Optional parts, each a thread of its own: the config watcher, the node's
        # BGPNodeStatus (bgpd/nodestatus.py), the NetworkUnavailable condition, the check
        # for another undrained node (bgpd/kube/drainpeers.py; idle unless asked).
        self.extras = [p for p in (watcher, status_writer, gate, drain_peers) if p is not None]
        self.watcher, self.status_writer, self.gate = watcher, status_writer, gate

    def start(self) -> None:
        self.servers.start()
        self.recorder.start()
        self.monitor.start()
        for part in self.extras:
            part.start()
        self.agent.wake()

    def stop(self) -> None:
        for part in reversed(self.extras):
            part.stop()
        self.monitor.stop()
        self.recorder.stop()
        self.servers.stop()


def build(config: Config, node: str, client: Any, *, withdraw_on_exit: bool = False,
          netns: str | None = None, timing: Any = None, state_dir: str | None = None,
          config_path: str | None = None) -> Parts:
    """Wire the real adapters. ``netns`` puts ExaBGP and the kernel table in a network
    namespace while the agent itself stays in the caller's (integration tests use it)."""
    # Adapters are imported here so `bgpd check-config` and the CLI stay light.
    from bgpd.http import HttpServers
    from bgpd.kernel import KernelMonitor, KernelTable
    from bgpd.kube import ClusterCache
    from bgpd.kube.drainpeers import OthersAvailable
    from bgpd.kube.events import EventRecorder
    from bgpd.kube.nodecondition import ConditionWriter
    from bgpd.kube.statuswriter import StatusWriter
    from bgpd.nodestatus import StatusSource
    from bgpd.speaker.speaker import Speaker

    agent_ref: list[Agent] = []

    def wake(*_args: Any) -> None:
        if agent_ref:
            agent_ref[0].wake()

    def speaker_factory(bgp: BgpConfig, router_id: str) -> Speaker:
        return Speaker(bgp, router_id=router_id, import_config=agent_ref[0].config.import_,
                       notify=wake, netns=netns, log_level=config.log_level.upper())

    extra = {"timing": timing} if timing is not None else {}
    cache = ClusterCache(client, node, notify=wake, prefix=config.annotation_prefix, **extra)
    recorder = EventRecorder(client, node)
    kernel = KernelTable(netns=netns, table=config.kernel.table, proto=config.kernel.proto)
    def on_kernel(_reason: str, result: Any) -> None:
        if agent_ref and result is not None:
            agent_ref[0].note_kernel_result(result)
        wake()

    monitor = KernelMonitor(kernel, notify=on_kernel)
    drain_peers = OthersAvailable(client, node, on_change=wake)
    agent = Agent(config, node, ClusterPort(cache), speaker_factory, kernel,
                  EventsPort(recorder), withdraw_on_exit=withdraw_on_exit,
                  after_first_sync=freeze_after_sync,
                  state=StateStore(state_dir) if state_dir else None, drain_peers=drain_peers)
    agent_ref.append(agent)
    servers = HttpServers(agent, config.http.debug_address, config.http.metrics_address)
    watcher = (ConfigWatcher(config_path, config, agent.apply_config, agent.wake)
               if config_path else None)
    # Polls the agent's views from its own thread: the loop never waits for the API.
    status_writer = StatusWriter(client, node, StatusSource(agent))
    gate = (ConditionWriter(client, node, agent,
                            debounce_seconds=config.scheduling.debounce_seconds)
            if config.scheduling.network_unavailable else None)
    return Parts(agent, servers, recorder, monitor, watcher, status_writer, gate, drain_peers)


def run(config_path: str, node_name: str | None, kubeconfig: str | None,
        withdraw_on_exit: bool, netns: str | None = None, state_dir: str | None = None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{config_path}: {line}")
        return 1
    logs.setup(config.log_format, config.log_level)
    tune_gc()
    node = node_name or os.environ.get("NODE_NAME", "")
    if not node:
        log.error("event=no_node_name hint=\"pass --node or set NODE_NAME\"")
        return 2

    from bgpd.kube import KubeError
    from bgpd.kube.client import KubeClient

    try:
        client = KubeClient.from_kubeconfig(kubeconfig) if kubeconfig else KubeClient.in_cluster()
    except KubeError as exc:
        log.error("event=no_api_client error=%r", str(exc))
        return 1
    state_dir = state_dir or os.environ.get(STATE_DIR_ENV) or None
    parts = build(config, node, client, withdraw_on_exit=withdraw_on_exit, netns=netns,
                  state_dir=state_dir, config_path=config_path)
    agent = parts.agent
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()
        agent.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parts.start()
    log.info("event=started node=%s debug=%s metrics=%s", node, config.http.debug_address,
             config.http.metrics_address)
    try:
        agent.run(stop)
    finally:
        parts.stop()
        client.close()
    log.info("event=stopped")
    return 0
