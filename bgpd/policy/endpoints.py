"""kube-proxy's endpoint rules, as one node's agent needs them to decide an announcement.

From kube-proxy (pkg/proxy/topology.go CategorizeEndpoints, endpointslicecache.go), per IP
family and per Service port:

* An endpoint's conditions: ``ready`` unset counts as ready, ``serving`` unset as serving,
  ``terminating`` unset as not terminating; the three are read independently (``ready`` and
  ``terminating`` both true is ready).
* Usable: ready, or serving while terminating.
* The cluster set is non-empty exactly when some endpoint anywhere is usable (the fallback
  to serving-and-terminating endpoints applies when none is ready). That is the same on
  every node, so ``require_ready_endpoint`` means "kube-proxy can deliver somewhere".
* The local set: the ready endpoints on this node, or, when none is ready here, those on
  this node that are serving while terminating (decided per node, even when other nodes
  have ready ones). An endpoint without ``nodeName`` is never local.
* Only slices whose ``addressType`` is the family of the address count (FQDN never), and a
  slice port joins the Service port of the same name and protocol; a port without a name
  (null) or number is ignored, and the endpoints of a slice count only for its ports.

One deliberate simplification: kube-proxy de-duplicates an ``IP:port`` listed in two
slices (v1.36 keeps the non-terminating copy); slices are summarised one by one here, so
two contradicting copies count as the more usable one. Only hand-made or moving slices
can do that, and only for a moment.
"""

from __future__ import annotations

from collections.abc import Iterable

from bgpd.model import EndpointInfo, EndpointSliceInfo

ADDRESS_TYPES = {4: "IPv4", 6: "IPv6"}


def conditions(ep: EndpointInfo) -> tuple[bool, bool, bool]:
    """(ready, serving, terminating) with kube-proxy's reading of unset values."""
    return ep.ready is not False, ep.serving is not False, ep.terminating is True


def summarize(endpoints: Iterable[EndpointInfo], node: str) -> tuple[int, int, bool]:
    """One slice as ``node`` sees it: (local ready, local serving-and-terminating and not
    ready, some endpoint anywhere usable). Local counts are of distinct addresses."""
    ready_here: set[str] = set()
    terminating_here: set[str] = set()
    usable = False
    for ep in endpoints:
        if not ep.addresses:
            continue  # kube-proxy ignores an endpoint without an address
        ready, serving, terminating = conditions(ep)
        fallback = serving and terminating
        usable = usable or ready or fallback
        if node and ep.node_name == node:
            if ready:
                ready_here.add(ep.addresses[0])
            elif fallback:
                terminating_here.add(ep.addresses[0])
    return len(ready_here), len(terminating_here - ready_here), usable


def local_and_anywhere(ports: tuple[tuple[str, str], ...],
                       slices: Iterable[EndpointSliceInfo], version: int) -> tuple[int, bool]:
    """For addresses of IP ``version``: (endpoints kube-proxy on this node uses for Local
    policy, best over the Service's ports; whether some port has a usable endpoint anywhere).

    0 local endpoints means kube-proxy would drop Local-policy traffic on this node; False
    anywhere means it rejects all traffic to the Service.
    """
    address_type = ADDRESS_TYPES[version]
    family = [sl for sl in slices if sl.address_type == address_type]
    best = 0
    anywhere = False
    for port in ports:
        ready = terminating = 0
        for sl in family:
            if port in sl.ports:
                ready += sl.local_ready
                terminating += sl.local_serving_terminating
                anywhere = anywhere or sl.usable
        best = max(best, ready or terminating)
    return best, anywhere
