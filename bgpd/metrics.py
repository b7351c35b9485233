"""Prometheus metrics, all prefixed ``bgpd_``, read from the agent at scrape time.

A custom collector reads the agent's state when scraped instead of updating gauges on every
change: nothing can drift, and a reconcile pays nothing for metrics.
"""

from __future__ import annotations

import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from bgpd import __version__
from bgpd.agent import DURATION_BUCKETS, Agent
from bgpd.views import traffic_summary

PEER_STATES = ("idle", "connect", "established", "down")


class AgentCollector(Collector):
    def __init__(self, agent: Agent):
        self.agent = agent
        self._bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._sum = 0.0

    def collect(self):
        agent = self.agent
        st = agent.status
        speaker = agent.speaker
        up = GaugeMetricFamily("bgpd_peer_session_up", "1 when the BGP session is established",
                               labels=["peer"])
        state = GaugeMetricFamily("bgpd_peer_session_state", "BGP session state (1 for the "
                                  "current state)", labels=["peer", "state"])
        uptime = GaugeMetricFamily("bgpd_peer_uptime_seconds", "Seconds since the session "
                                   "was established", labels=["peer"])
        sent = GaugeMetricFamily("bgpd_peer_prefixes_sent", "Prefixes announced to the peer",
                                 labels=["peer"])
        received = GaugeMetricFamily("bgpd_peer_prefixes_received", "Routes received from "
                                     "the peer and stored (import rules, max_prefixes)",
                                     labels=["peer"])
        not_sent = GaugeMetricFamily("bgpd_peer_prefixes_refused", "Our prefixes this session "
                                     "cannot carry (family not negotiated, attributes too big)",
                                     labels=["peer"])
        refused = GaugeMetricFamily("bgpd_peer_routes_refused", "Routes the peer sent that "
                                    "were counted, not stored, this session", labels=["peer"])
        stale = GaugeMetricFamily("bgpd_peer_routes_stale", "The peer's routes kept through its "
                                  "restart (graceful restart)", labels=["peer"])
        now = time.time()
        for p in (speaker.peers() if speaker is not None else []):
            up.add_metric([p.address], 1.0 if p.state == "established" else 0.0)
            for s in PEER_STATES:
                state.add_metric([p.address, s], 1.0 if p.state == s else 0.0)
            uptime.add_metric([p.address], now - p.since if p.state == "established"
                              and p.since else 0.0)
            sent.add_metric([p.address], p.prefixes_sent)
            received.add_metric([p.address], p.prefixes_received)
            not_sent.add_metric([p.address], p.prefixes_refused)
            refused.add_metric([p.address], p.routes_refused)
            stale.add_metric([p.address], p.routes_stale)
        yield from (up, state, uptime, sent, received, not_sent, refused, stale)

        views = agent.snapshot_views()
        announced = GaugeMetricFamily("bgpd_announced_prefixes", "Prefixes announced by this "
                                      "node", labels=["family"])
        fams = {"ipv4": 0, "ipv6": 0}
        for a in views["applied"].values():
            fams[a.family] += 1
        for fam, n in fams.items():
            announced.add_metric([fam], n)
        yield announced
        yield GaugeMetricFamily("bgpd_kernel_routes_owned", "Kernel routes this agent owns",
                                value=len(views["kernel"]) - len(st.kernel_failures))
        yield GaugeMetricFamily("bgpd_kernel_route_failures", "Kernel routes refused or in "
                                "conflict with a foreign route", value=len(st.kernel_failures))
        learned = speaker.learned() if speaker is not None else {}
        yield GaugeMetricFamily("bgpd_received_routes_installable", "Learned routes passing "
                                "the import policy", value=len(learned))

        rej = GaugeMetricFamily("bgpd_rejections", "Addresses rejected right now, by reason",
                                labels=["reason"])
        for reason, n in sorted(st.rejections_by_reason.items()):
            rej.add_metric([reason], n)
        yield rej
        yield GaugeMetricFamily("bgpd_withdrawals_held", "Withdrawals held back by the "
                                "mass-withdraw guard", value=st.held)
        yield CounterMetricFamily("bgpd_withdrawal_holds", "Times the guard started holding "
                                  "withdrawals", value=st.holds_total)
        yield GaugeMetricFamily("bgpd_peers_held", "BGP peers kept although the config no "
                                "longer selects them (held like a mass withdrawal)",
                                value=len(st.peers_held))
        yield GaugeMetricFamily("bgpd_adopted_kernel_routes", "Kernel routes of an earlier "
                                "agent kept until every peer has sent End-of-RIB",
                                value=st.adopted_kernel_routes)
        traffic = traffic_summary(views["decision"], views["applied"])
        yield GaugeMetricFamily("bgpd_draining", "1 while this node drains (drain.*: "
                                "cordoned, a drain label or taint)",
                                value=float(bool(traffic["draining"])))
        drained = GaugeMetricFamily("bgpd_drained_prefixes", "Addresses the drain withdrew "
                                    "or announces less preferred", labels=["effect"])
        drained.add_metric(["withdrawn"], traffic["drained_withdrawn"])
        drained.add_metric(["less-preferred"], traffic["drained_less_preferred"])
        yield drained
        yield GaugeMetricFamily("bgpd_weighted_prefixes", "Announced with a link bandwidth "
                                "(weighted ECMP)", value=traffic["weighted"])
        yield GaugeMetricFamily("bgpd_ready", "1 when /readyz answers ok",
                                value=float(agent.ready()[0]))
        info = GaugeMetricFamily("bgpd_build_info", "The agent's version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily("bgpd_synced", "1 when every watch has listed", value=float(st.synced))
        yield GaugeMetricFamily("bgpd_api_healthy", "1 when every watch is connected",
                                value=float(st.api_healthy))
        yield CounterMetricFamily("bgpd_api_unreachable_seconds", "Seconds the API server was "
                                  "unreachable", value=agent.outage_seconds())
        yield CounterMetricFamily("bgpd_reconciles", "Reconcile rounds", value=st.reconciles)

        restarts = CounterMetricFamily("bgpd_watch_restarts", "Watches restarted after an "
                                       "error", labels=["kind"])
        relists = CounterMetricFamily("bgpd_watch_relists", "Relists forced by 410 Gone",
                                      labels=["kind"])
        skipped = CounterMetricFamily("bgpd_watch_skipped", "Objects or events a watch could "
                                      "not use (undecodable, unconvertible), skipped",
                                      labels=["kind"])
        for kind, stats in sorted(agent.cluster.stats().items()):
            restarts.add_metric([kind], getattr(stats, "watch_restarts", 0))
            relists.add_metric([kind], getattr(stats, "relists", 0))
            skipped.add_metric([kind], getattr(stats, "skipped", 0))
        yield restarts
        yield relists
        yield skipped
        counters = speaker.counters() if speaker is not None else {}
        yield CounterMetricFamily("bgpd_exabgp_restarts", "ExaBGP process restarts",
                                  value=counters.get("exabgp_restarts", 0))
        yield CounterMetricFamily("bgpd_exabgp_commands_refused", "API commands ExaBGP "
                                  "refused", value=counters.get("commands_refused", 0))
        yield CounterMetricFamily("bgpd_exabgp_commands_sent", "API commands sent to ExaBGP",
                                  value=counters.get("commands_sent", 0))
        yield CounterMetricFamily("bgpd_exabgp_commands_packed", "API commands sent as "
                                  "'announce packed' (ExaBGP patch 13)",
                                  value=counters.get("commands_packed", 0))

        durations, st.durations = st.durations, []
        for d in durations:
            self._sum += d
            for i, bound in enumerate(DURATION_BUCKETS):
                if d <= bound:
                    self._bucket_counts[i] += 1
                    break
            else:
                self._bucket_counts[-1] += 1
        buckets, acc = [], 0
        for bound, n in zip((*map(str, DURATION_BUCKETS), "+Inf"), self._bucket_counts,
                            strict=True):
            acc += n
            buckets.append((bound, acc))
        yield HistogramMetricFamily("bgpd_reconcile_duration_seconds", "Time one reconcile "
                                    "round took", buckets=buckets, sum_value=self._sum)


def registry_for(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry
