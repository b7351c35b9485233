"""Cold-start and incremental BGP convergence: our ExaBGP driver against BIRD as baseline.

``python bench/bgp_convergence.py --routes N`` (root; creates and removes its own network
namespaces). Each run: a speaker namespace and a BIRD peer namespace joined by one veth; the
clock starts when the speaker process starts and stops when the peer counts N routes
(``birdc show route count``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgpd.config import BgpConfig, PeerConfig  # noqa: E402
from bgpd.model import Announcement  # noqa: E402
from bgpd.speaker import Speaker  # noqa: E402
from tests.integration import routers  # noqa: E402

DEFAULT_ROUTES = 100_000
INCREMENTAL_CHANGES = 50
CONVERGE_TIMEOUT = 900.0  # seconds for one full load; ExaBGP unpatched needs minutes at 100k
CHANGE_TIMEOUT = 30.0
POLL = 0.002
BASE = ipaddress.ip_address("100.64.0.0")  # /32s counted up from here (RFC 6598 space)
PEER_AS, SPEAKER_AS = 65000, 65001
PEER_IP, SPEAKER_IP = "10.255.0.1", "10.255.0.2"

PEER_CONF = f"""
router id {PEER_IP};
protocol device {{}}
protocol bgp speaker {{
    local {PEER_IP} as {PEER_AS};
    neighbor {SPEAKER_IP} as {SPEAKER_AS};
    passive on;
    ipv4 {{ import all; export none; }};
}}
"""


def speaker_bird_conf(n: int) -> str:
    """The baseline speaker: BIRD with N static blackhole /32s exported over BGP."""
    routes = "\n".join(f"    route {BASE + i}/32 blackhole;" for i in range(n))
    return f"""
router id {SPEAKER_IP};
protocol device {{}}
protocol static bench_routes {{
    ipv4;
{routes}
}}
protocol bgp peer {{
    local {SPEAKER_IP} as {SPEAKER_AS};
    neighbor {PEER_IP} as {PEER_AS};
    ipv4 {{ import none; export all; next hop self; }};
}}
"""


def prefixes(n: int, offset: int = 0) -> list[Announcement]:
    return [Announcement(ipaddress.ip_network(f"{BASE + offset + i}/32")) for i in range(n)]


def wait_count(peer: routers.Bird, n: int, timeout: float) -> float:
    routers.wait_for(lambda: peer.route_count() == n, timeout, f"peer to count {n} routes", POLL)
    return time.monotonic()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_ours(n: int) -> dict:
    with routers.netns("bench-spk") as spk, routers.netns("bench-peer") as peer_ns:
        routers.link(spk, [f"{SPEAKER_IP}/24"], peer_ns, [f"{PEER_IP}/24"])
        with routers.bird(peer_ns, PEER_CONF) as peer:
            bgp = BgpConfig(
                asn=SPEAKER_AS,
                router_id=SPEAKER_IP,
                peers=(
                    PeerConfig(
                        PEER_IP, PEER_AS, local_address=SPEAKER_IP, families=("ipv4-unicast",)
                    ),
                ),
            )
            speaker = Speaker(bgp, netns=spk)
            routes = prefixes(n)
            speaker.set_desired(routes)
            try:
                start = time.monotonic()
                speaker.start()
                ours = wait_count(peer, n, CONVERGE_TIMEOUT) - start
                pid = speaker.exabgp_pid()
                rss = rss_mb(pid) if pid else math.nan
                samples = []
                extra = prefixes(INCREMENTAL_CHANGES, offset=n)
                current = set(routes)
                for i, ann in enumerate(extra):
                    current.add(ann)
                    begin = time.monotonic()
                    speaker.set_desired(current)
                    samples.append(wait_count(peer, n + i + 1, CHANGE_TIMEOUT) - begin)
            finally:
                speaker.stop()
    samples.sort()
    p99 = samples[max(0, math.ceil(0.99 * len(samples)) - 1)]
    return {
        "ours_s": round(ours, 2),
        "incremental_p99_ms": round(p99 * 1000, 1),
        "speaker_rss_mb": round(rss, 1),
    }


def run_bird(n: int) -> float:
    with routers.netns("bench-bspk") as spk, routers.netns("bench-bpeer") as peer_ns:
        routers.link(spk, [f"{SPEAKER_IP}/24"], peer_ns, [f"{PEER_IP}/24"])
        with routers.bird(peer_ns, PEER_CONF) as peer:
            workdir = Path(routers.tempfile.mkdtemp(prefix="bgpdtest-bench-"))
            try:
                speaker = routers.Bird(spk, speaker_bird_conf(n), workdir)
                start = time.monotonic()
                speaker.start()
                try:
                    return wait_count(peer, n, CONVERGE_TIMEOUT) - start
                finally:
                    speaker.stop()
            finally:
                routers.shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=DEFAULT_ROUTES)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    bird_s = math.nan if args.skip_baseline else run_bird(args.routes)
    ours = run_ours(args.routes)
    result = {
        "routes": args.routes,
        "ours_s": ours["ours_s"],
        "bird_s": None if bird_s != bird_s else round(bird_s, 2),
        "ratio": round(ours["ours_s"] / bird_s, 2) if bird_s == bird_s else None,
        "incremental_p99_ms": ours["incremental_p99_ms"],
        "speaker_rss_mb": ours["speaker_rss_mb"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
