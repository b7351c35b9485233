"""The ``bgpd`` command line: the agent itself and the operator's debugging tools."""

from __future__ import annotations

import argparse
import sys

from bgpd import __version__

EXIT_OK = 0
EXIT_PROBLEM = 1  # the thing asked about is not right (bad config, not announced, peer down)
EXIT_USAGE = 2  # bad invocation, or a subcommand that is not built yet
EXIT_UNREACHABLE = 3  # the agent's debug endpoint did not answer

DEFAULT_ENDPOINT = "http://127.0.0.1:9180"

_NOT_BUILT = "this subcommand is not built yet"


def _cmd_check_config(args: argparse.Namespace) -> int:
    from bgpd.config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{args.file}: {line}", file=sys.stderr)
        print(f"{args.file}: {len(exc.errors)} error(s)", file=sys.stderr)
        return EXIT_PROBLEM
    print(f"{args.file}: ok")
    return EXIT_OK


def _cmd_admission_policy(args: argparse.Namespace) -> int:
    import yaml

    from bgpd.admission import header, render_policy
    from bgpd.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{args.file}: {line}", file=sys.stderr)
        return EXIT_PROBLEM

    class Dumper(yaml.SafeDumper):  # CEL spanning lines stays readable as a block literal
        def represent_str(self, text: str) -> yaml.ScalarNode:
            return self.represent_scalar("tag:yaml.org,2002:str", text,
                                         style="|" if "\n" in text else None)

    Dumper.add_representer(str, Dumper.represent_str)
    print(header(args.file) + yaml.dump_all(render_policy(config), Dumper=Dumper,
                                            sort_keys=False, width=1 << 16), end="")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from bgpd.runner import run

    return run(args.config, args.node, args.kubeconfig, args.withdraw_on_exit,
               netns=args.netns, state_dir=args.state_dir)


def _client(name: str):
    def run(args: argparse.Namespace) -> int:
        from bgpd.client import command

        return command(name, args)

    return run


def _cmd_fleet(args: argparse.Namespace) -> int:
    from bgpd.fleet import command

    return command(args)


def _cmd_lab(args: argparse.Namespace) -> int:
    try:
        from bgpd.lab.cli import run_lab
    except ImportError:
        print(f"bgpd lab: {_NOT_BUILT}", file=sys.stderr)
        return EXIT_USAGE
    return run_lab([args.action, *args.rest])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgpd",
        description="Announce this node's pod and service prefixes over BGP and program "
                    "kernel routes, with no NAT.",
        epilog="Exit codes: 0 ok, 1 problem found (bad config, not announced, peer down), "
               "2 usage error or not built, 3 agent unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"bgpd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the node agent")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--node", help="this node's name (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config)")
    p.add_argument("--withdraw-on-exit", action="store_true",
                   help="withdraw every announcement on SIGTERM instead of leaving them to "
                        "graceful restart")
    p.add_argument("--state-dir", metavar="DIR",
                   help="keep what the peers were told and what they sent here, for the "
                        "next agent after a restart (default: $BGPD_STATE_DIR; the "
                        "DaemonSet uses its emptyDir, which outlives container restarts)")
    p.add_argument("--netns", metavar="NAME",
                   help="run ExaBGP and program routes in this network namespace while the "
                        "agent itself stays in the current one (labs and benchmarks)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config file; print every error")
    p.add_argument("file")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("admission-policy",
                       help="print the ValidatingAdmissionPolicy refusing at write time what "
                            "this config's policy would reject")
    p.add_argument("file", metavar="CONFIG_FILE")
    p.set_defaults(func=_cmd_admission_policy)

    for name, text in (("status", "sync state, peers up, counts, last reconcile"),
                       ("peers", "BGP sessions and their state"),
                       ("diff", "desired versus applied announcements and routes")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="the agent's debug address")
        p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        p.set_defaults(func=_client(name))

    p = sub.add_parser("routes", help="announced, received or kernel routes")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--advertised", action="store_true")
    which.add_argument("--received", action="store_true")
    which.add_argument("--kernel", action="store_true")
    p.set_defaults(func=_client("routes"))

    p = sub.add_parser("explain", help="why an IP or prefix is (not) announced")
    p.add_argument("target", metavar="IP_OR_PREFIX")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=_client("explain"))

    p = sub.add_parser("fleet", help="every node's BGPNodeStatus from the API: nodes not "
                                     "ready or stale, sessions down, held withdrawals, "
                                     "top rejection reasons")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config inside "
                                        "a pod, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_fleet)

    p = sub.add_parser("lab", help="realise a containerlab topology with network namespaces")
    p.add_argument("action", choices=("up", "down", "status", "exec"))
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return args.func(args)
