"""Bring the kubelet lab up by hand and keep it until Ctrl-C (or SIGTERM), then tear it down.

    make kubelet image
    sudo .venv/bin/python -m tests.kubelet [--apply]     # --apply: daemonset/overlays/lab

Prints the admin kubectl command line. Everything lives and dies with this process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.kubelet import lab as kl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.kubelet")
    p.add_argument("--apply", action="store_true", help="kubectl apply -k daemonset/overlays/lab")
    p.add_argument("--no-tor", action="store_true", help="no FRR ToR (no BGP peer)")
    args = p.parse_args(argv)
    why = kl.requirements()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lab = kl.KubeletLab(tor=not args.no_tor).start()
    try:
        assert lab.cp is not None
        if args.apply:
            print(lab.kubectl("apply", "-k", str(kl.REPO / "daemonset" / "overlays" / "lab")))
        print(f"up: {', '.join(f'{k} {v:.1f} s' for k, v in lab.timings.items())}")
        print(f"  {lab.cp.bin / 'kubectl'} --kubeconfig={lab.cp.kubeconfig} get nodes,pods -A")
        print(f"  pod logs: {', '.join(str(n.pod_logs) for n in lab.nodes.values())}")
        print(f"  namespaces: {', '.join(n.netns for n in lab.nodes.values())}"
              + ("" if args.no_tor else f", {lab.tor_netns} (vtysh -N {lab.tor_netns})"))
        print("Ctrl-C to tear down", flush=True)
        stop.wait()
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
