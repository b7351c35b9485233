"""Render ExaBGP's configuration and environment from the agent's BGP config (pure).

ExaBGP reads its settings from ``exabgp_<section>_<option>`` environment variables
(exabgp/environment/environment.py), so nothing is written outside our own folder and no
``exabgp.env`` file on the host can change the speaker's behaviour.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bgpd.config import BgpConfig, PeerConfig
from bgpd.speaker.errors import SpeakerError

PROCESS_NAME = "bgpd"
# One hop for directly connected eBGP, the usual IP default for iBGP (possibly multi-hop).
EBGP_DEFAULT_TTL = 1
IBGP_DEFAULT_TTL = 64
GTSM_TTL = 255  # RFC 5082: send 255, accept only 255
# How long ExaBGP spends per reactor round at most. The default (1.0 s) makes it idle
# between API reads; BASELINES.md measured 0.1 s as ~40% faster for bulk loads.
REACTOR_SPEED = 0.1
FAMILY_LINES = {"ipv4-unicast": "ipv4 unicast", "ipv6-unicast": "ipv6 unicast"}


@dataclass(frozen=True)
class SpeakerSettings:
    """What the config file does not say but the speaker needs to start ExaBGP."""

    router_id: str
    api_argv: Sequence[str]  # the helper ExaBGP runs; its stdin/stdout is the API
    log_level: str = "INFO"


def is_ibgp(bgp: BgpConfig, peer: PeerConfig) -> bool:
    return bgp.asn == peer.asn


def outgoing_ttl(bgp: BgpConfig, peer: PeerConfig) -> int:
    if peer.ttl_security:
        return GTSM_TTL
    if peer.ttl is not None:
        return peer.ttl
    return IBGP_DEFAULT_TTL if is_ibgp(bgp, peer) else EBGP_DEFAULT_TTL


def _argv_line(argv: Sequence[str]) -> str:
    for arg in argv:
        if not arg or any(c in arg for c in " ;{}\"'\n"):
            raise SpeakerError(f"cannot pass {arg!r} to ExaBGP's process run line")
    return " ".join(argv)


def _safe_text(text: str) -> str:
    """A label for ExaBGP's tokeniser: no quotes, braces or separators to end it early."""
    return "".join(c if c.isalnum() or c in "-_.:/ " else "_" for c in text)


def _peer_block(
    bgp: BgpConfig, peer: PeerConfig, settings: SpeakerSettings, password: str | None
) -> str:
    lines = [
        f"neighbor {peer.address} {{",
        f'    description "{_safe_text(peer.label)}";',
        f"    router-id {settings.router_id};",
    ]
    if peer.local_address:
        lines.append(f"    local-address {peer.local_address};")
    lines += [
        f"    local-as {bgp.asn};",
        f"    peer-as {peer.asn};",
        f"    hold-time {peer.hold_time};",
        f"    connect {peer.port};",
        f"    passive {'true' if peer.passive else 'false'};",
        f"    outgoing-ttl {outgoing_ttl(bgp, peer)};",
    ]
    if peer.ttl_security:
        lines.append(f"    incoming-ttl {GTSM_TTL};")
    if password is not None:
        # base64 keeps any byte of the secret away from ExaBGP's tokeniser (quotes, ';', '#').
        encoded = base64.b64encode(password.encode()).decode()
        lines += [f"    md5-password {encoded};", "    md5-base64 true;"]
    lines += [
        # We replay the whole desired set ourselves when a session comes up, so ExaBGP need
        # not keep a second copy of every route (memory), and we send End-of-RIB only once
        # that replay is queued: a GR peer then never flushes stale routes too early.
        "    adj-rib-out false;",
        # What peers send us lives in the agent (filtered, bounded by import.max_prefixes);
        # ExaBGP keeping its own copy would let a peer's full table grow it without limit.
        "    adj-rib-in false;",
        "    manual-eor true;",
        "    group-updates true;",
        "    capability {",
    ]
    if peer.graceful_restart:
        lines.append(f"        graceful-restart {peer.graceful_restart};")
    lines += [
        "        route-refresh disable;",
        # 4,096-byte messages with every peer: the policy checks each announcement against
        # that size (ExaBGP acknowledges, then drops, what does not fit).
        "        extended-message disable;",
        "    }",
        "    family {",
    ]
    for family in peer.families:
        if family not in FAMILY_LINES:
            raise SpeakerError(f"peer {peer.label}: unsupported family {family!r}")
        lines.append(f"        {FAMILY_LINES[family]};")
    lines += [
        "    }",
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        negotiated;",  # the families agreed on: only those are sent
        "        receive { parsed; update; notification; open; }",  # the peer's GR capability
        "    }",
        "}",
    ]
    return "\n".join(lines)


def render_config(
    bgp: BgpConfig,
    settings: SpeakerSettings,
    passwords: Mapping[str, str] | None = None,
) -> str:
    """ExaBGP configuration text; ``passwords`` maps peer address to its TCP MD5 secret."""
    passwords = passwords or {}
    blocks = [
        f"process {PROCESS_NAME} {{",
        f"    run {_argv_line(settings.api_argv)};",
        "    encoder json;",
        "}",
    ]
    for peer in bgp.peers:
        blocks.append(_peer_block(bgp, peer, settings, passwords.get(peer.address)))
    return "\n".join(blocks) + "\n"


def exabgp_log_level(requested: str) -> str:
    """ExaBGP's level for our level: ExaBGP logs one INFO line per route it is given (100,000
    on a cold start), so below debug it only tells us about warnings and errors; sessions and
    routes reach us through the API anyway. Never DEBUG: at DEBUG ExaBGP prints its parsed
    configuration, TCP MD5 keys included."""
    level = requested.upper()
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level == "DEBUG":
        return "INFO"
    return level if level in ("ERROR", "CRITICAL") else "WARNING"


def listen_addresses(bgp: BgpConfig) -> str:
    """Where ExaBGP listens: nowhere unless ``listen_port`` is set, then the peers' local sides."""
    if not bgp.listen_port:
        return ""
    local = sorted({p.local_address for p in bgp.peers if p.local_address})
    return " ".join(local) or "0.0.0.0"


def render_environment(bgp: BgpConfig, settings: SpeakerSettings) -> dict[str, str]:
    """ExaBGP settings as environment variables (names from exabgp/environment/setup.py)."""
    return {
        # Root keeps root: dropping to `nobody` would leave the API helper unable to reach
        # our socket and the MD5 setsockopt unable to run after a reconnect.
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": "",
        # Listening is opt-in: port 179 on the node may belong to someone else.
        "exabgp_tcp_bind": listen_addresses(bgp),
        "exabgp_tcp_port": str(bgp.listen_port or 179),
        "exabgp_bgp_passive": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_encoder": "json",
        "exabgp_api_respawn": "false",  # a dead helper means our socket went away: restart all
        "exabgp_api_terminate": "true",
        "exabgp_api_cli": "false",  # no named pipes: the agent is the only client
        "exabgp_reactor_speed": str(REACTOR_SPEED),
        "exabgp_log_enable": "true",
        "exabgp_log_level": exabgp_log_level(settings.log_level),
        "exabgp_log_destination": "stdout",
        "exabgp_log_short": "true",
        "exabgp_log_routes": "false",
        "exabgp_log_packets": "false",
        "exabgp_log_message": "false",
        "exabgp_log_rib": "false",
        "exabgp_log_statistics": "false",
        "exabgp_cache_attributes": "true",
        # A host-wide exabgp.env must not change a node agent's speaker.
        "EXABGP_ENVFILE": "/dev/null",
    }
