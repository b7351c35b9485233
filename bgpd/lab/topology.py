"""Parse a containerlab topology file into what the namespace runner needs (pure, no I/O
beyond reading the file)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

K8S_ROLE_LABEL = "bgpd.dev/role"
K8S_ROLE = "k8s-node"
LABEL_POD_CIDR = "lab.bgpd.dev/pod-cidr"
LABEL_NODE_IP = "lab.bgpd.dev/node-ip"
LABEL_PEER = "lab.bgpd.dev/peer"
LABEL_PEER_ASN = "lab.bgpd.dev/peer-asn"
LABEL_ASN = "lab.bgpd.dev/asn"

FRR_CONF_TARGET = "/etc/frr/frr.conf"
FRR_DAEMONS_TARGET = "/etc/frr/daemons"
BIRD_CONF_TARGETS = ("/etc/bird/bird.conf", "/etc/bird.conf")

DEFAULT_MTU = 9500
IFNAME_MAX = 15
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-._]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class TopologyError(ValueError):
    """The topology file cannot be realised; the message names the field."""


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int = DEFAULT_MTU


@dataclass
class Node:
    name: str
    kind: str
    image: str = ""
    binds: list[tuple[Path, str]] = field(default_factory=list)  # (host path, target)
    exec: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def bind_source(self, *targets: str) -> Path | None:
        for source, target in self.binds:
            if target in targets:
                return source
        return None

    @property
    def frr_conf(self) -> Path | None:
        return self.bind_source(FRR_CONF_TARGET)

    @property
    def frr_daemons(self) -> Path | None:
        return self.bind_source(FRR_DAEMONS_TARGET)

    @property
    def bird_conf(self) -> Path | None:
        return self.bind_source(*BIRD_CONF_TARGETS)

    @property
    def is_frr(self) -> bool:
        return self.frr_conf is not None

    @property
    def is_k8s_node(self) -> bool:
        return self.labels.get(K8S_ROLE_LABEL) == K8S_ROLE


@dataclass
class Topology:
    name: str
    path: Path
    nodes: dict[str, Node]
    links: list[Link]

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def lab_dir(self) -> Path:
        return self.folder / f"clab-{self.name}"

    def netns(self, node: str) -> str:
        return f"clab-{self.name}-{node}"

    def node_dir(self, node: str) -> Path:
        return self.lab_dir / node

    def k8s_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_k8s_node]

    def routers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_frr or n.bird_conf is not None]

    def neighbours(self, node: str) -> list[tuple[str, str, str]]:
        """(local iface, remote node, remote iface) for each link of ``node``."""
        out = []
        for link in self.links:
            for near, far in ((link.a, link.b), (link.b, link.a)):
                if near.node == node:
                    out.append((near.iface, far.node, far.iface))
        return out

    def expand(self, text: str, node: str) -> str:
        """containerlab's magic variables in binds and exec."""
        return (text.replace("__clabNodeName__", node)
                .replace("__clabNodeDir__", str(self.node_dir(node)))
                .replace("__clabDir__", str(self.lab_dir))
                .replace("__clabLabName__", self.name))


def _str_map(raw, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}: must be a mapping")
    return {str(k): str(v) for k, v in raw.items()}


def parse_endpoint(text, path: str) -> Endpoint:
    """``node:iface`` (the schema cannot check the brief form under draft-07: we do)."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise TopologyError(f"{path}: {text!r} must be NODE:IFACE")
    node, iface = text.split(":")
    if not node or not _IFNAME_RE.match(iface):
        raise TopologyError(f"{path}: {text!r} must be NODE:IFACE with an interface name of "
                            f"at most {IFNAME_MAX} characters")
    return Endpoint(node, iface)


def parse_topology(path: str | Path) -> Topology:
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}: must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TopologyError(f"name: {name!r} must match {_NAME_RE.pattern}")
    if raw.get("prefix") not in (None, "clab"):
        raise TopologyError("prefix: only the default prefix 'clab' is supported")
    topo = raw.get("topology") or {}
    defaults = topo.get("defaults") or {}
    kinds = topo.get("kinds") or {}
    folder = path.parent
    nodes: dict[str, Node] = {}
    for node_name, spec in (topo.get("nodes") or {}).items():
        spec = spec or {}
        where = f"topology.nodes.{node_name}"
        if not _NAME_RE.match(str(node_name)):
            raise TopologyError(f"{where}: bad node name")
        kind = spec.get("kind", defaults.get("kind", "linux"))
        if kind != "linux":
            raise TopologyError(f"{where}.kind: {kind!r}: only 'linux' nodes can be realised "
                                f"without containers")
        layers = [defaults, kinds.get(kind) or {}, spec]

        def merged(key: str, layers=layers) -> dict:
            out: dict = {}
            for layer in layers:
                out.update(layer.get(key) or {})
            return out

        def last(key: str, layers=layers):
            for layer in reversed(layers):
                if key in layer:
                    return layer[key]
            return None

        node = Node(name=str(node_name), kind=kind, image=str(last("image") or ""))
        node.labels = _str_map(merged("labels"), f"{where}.labels")
        node.sysctls = _str_map(merged("sysctls"), f"{where}.sysctls")
        node.exec = [str(x) for x in (last("exec") or [])]
        for i, bind in enumerate(last("binds") or []):
            parts = str(bind).split(":")
            if len(parts) < 2:
                raise TopologyError(f"{where}.binds[{i}]: {bind!r} must be SOURCE:TARGET")
            source = Path(parts[0])
            nodes_tmp = source if source.is_absolute() else folder / source
            node.binds.append((nodes_tmp, parts[1]))
        nodes[node.name] = node
    if not nodes:
        raise TopologyError("topology.nodes: no nodes")
    links: list[Link] = []
    used: set[tuple[str, str]] = set()
    for i, link in enumerate(topo.get("links") or []):
        where = f"topology.links[{i}]"
        if not isinstance(link, dict) or "endpoints" not in link:
            raise TopologyError(f"{where}: only brief links (endpoints: [a:x, b:y]) are supported")
        eps = link["endpoints"]
        if not isinstance(eps, list) or len(eps) != 2:
            raise TopologyError(f"{where}.endpoints: must list two NODE:IFACE endpoints")
        a, b = (parse_endpoint(e, f"{where}.endpoints[{j}]") for j, e in enumerate(eps))
        for ep in (a, b):
            if ep.node not in nodes:
                raise TopologyError(f"{where}: unknown node {ep.node!r}")
            if (ep.node, ep.iface) in used:
                raise TopologyError(f"{where}: {ep} is used by another link")
            if ep.iface in ("eth0", "lo"):
                raise TopologyError(f"{where}: {ep}: eth0 is reserved for management")
            used.add((ep.node, ep.iface))
        links.append(Link(a, b, int(link.get("mtu", DEFAULT_MTU))))
    result = Topology(name=name, path=path, nodes=nodes, links=links)
    for node in result.k8s_nodes():
        _check_k8s_node(node)
    return result


def _check_k8s_node(node: Node) -> None:
    where = f"topology.nodes.{node.name}.labels"
    for label in (LABEL_POD_CIDR, LABEL_NODE_IP, LABEL_PEER, LABEL_PEER_ASN, LABEL_ASN):
        if label not in node.labels:
            raise TopologyError(f"{where}: a {K8S_ROLE} node needs {label}")
    try:
        ipaddress.ip_network(node.labels[LABEL_POD_CIDR])
        ipaddress.ip_address(node.labels[LABEL_NODE_IP])
        ipaddress.ip_address(node.labels[LABEL_PEER])
        int(node.labels[LABEL_PEER_ASN])
        int(node.labels[LABEL_ASN])
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc}") from exc
