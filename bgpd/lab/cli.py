"""``bgpd lab up|down|status|exec``: the entry point the main CLI wires to ``run_lab``.

    python -m bgpd.lab.cli up lab/single-tor.clab.yml [--with-examples] [--agents container]
    python -m bgpd.lab.cli exec lab/single-tor.clab.yml client -- ping -c1 10.244.1.10
    python -m bgpd.lab.cli status
    python -m bgpd.lab.cli down lab/single-tor.clab.yml
"""

from __future__ import annotations

import argparse
import os
import sys

USAGE = """usage: bgpd lab up FILE [--with-examples] [--agents process|container]
       bgpd lab down FILE
       bgpd lab status
       bgpd lab exec FILE NODE -- CMD..."""


def run_lab(argv: list[str]) -> int:
    """Exit codes: 0 ok, 1 the lab failed (message on stderr), 2 usage."""
    from bgpd.lab.system import LabError
    from bgpd.lab.topology import TopologyError

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    action, rest = argv[0], argv[1:]
    if action in ("up", "down", "exec") and os.geteuid() != 0:
        print("bgpd lab: needs root (network namespaces, veth, FRR)", file=sys.stderr)
        return 1
    try:
        from bgpd.lab import runner

        if action == "up":
            p = argparse.ArgumentParser(prog="bgpd lab up")
            p.add_argument("file")
            p.add_argument("--with-examples", action="store_true",
                           help="also apply lab/examples/workloads.yaml")
            p.add_argument("--agents", choices=runner.AGENT_MODES, default=None,
                           help="run each node's agent as a plain process (default) or as "
                                "a container of the image under the DaemonSet's "
                                "securityContext (default: $BGPD_LAB_AGENTS, else process; "
                                "fixed when the lab is made)")
            args = p.parse_args(rest)
            runner.load(args.file).up(with_examples=args.with_examples, agents=args.agents)
            return 0
        if action == "down":
            p = argparse.ArgumentParser(prog="bgpd lab down")
            p.add_argument("file")
            args = p.parse_args(rest)
            runner.load(args.file).down()
            return 0
        if action == "status":
            lines = runner.status_lines()
            print("\n".join(lines) if lines else "no lab is up")
            return 0
        if action == "exec":
            if "--" not in rest:
                print(USAGE, file=sys.stderr)
                return 2
            cut = rest.index("--")
            head, cmd = rest[:cut], rest[cut + 1:]
            if len(head) != 2 or not cmd:
                print(USAGE, file=sys.stderr)
                return 2
            return runner.exec_in(runner.parse_topology(head[0]), head[1], cmd)
    except (LabError, TopologyError) as exc:
        print(f"bgpd lab {action}: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)
    print(USAGE, file=sys.stderr)
    return 2


def main() -> int:
    return run_lab(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
