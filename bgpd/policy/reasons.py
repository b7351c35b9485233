"""Reason codes: one string per outcome, shared by logs, metrics, Events and ``bgpd explain``.

A code is stable (dashboards and alerts key on it); ``detail`` text beside it may change.
"""

ANNOUNCED = "announced"

# Deliberate choices, not problems: no Event is raised for these.
DISABLED = "disabled"  # the config does not advertise this use
OPTED_OUT = "opted-out"  # the Service (or Node) annotation/label says no
NO_LOCAL_ENDPOINT = "no-local-endpoint"  # Local traffic policy, no ready endpoint here
NO_READY_ENDPOINT = "no-ready-endpoint"  # require_ready_endpoint, none ready anywhere
POD_NOT_READY = "pod-not-ready"
IGNORED_KIND = "ignored-kind"  # ExternalName / headless Services
NODE_NOT_SELECTED = "node-not-selected"
DRAINED = "drained"  # the node drains (drain.action withdraw) and another node serves it

# Rejections: bad or dangerous input. Each raises a Kubernetes Event on the object.
OUTSIDE_POOLS = "outside-pools"  # default deny (CVE-2020-8554)
POOL_FORBIDS_USE = "pool-forbids-use"
NAMESPACE_FORBIDDEN = "namespace-forbidden"  # the pool does not admit the object's namespace
BAD_ADDRESS = "bad-address"  # unparsable, /0, loopback, link-local, multicast ...
WRONG_FAMILY = "wrong-family"
CONFLICT = "conflict"  # another object won this address
BAD_ANNOTATION = "bad-annotation"

REJECTIONS = frozenset({OUTSIDE_POOLS, POOL_FORBIDS_USE, NAMESPACE_FORBIDDEN, BAD_ADDRESS,
                        WRONG_FAMILY, CONFLICT, BAD_ANNOTATION})

# Routes received from peers that were not kept (``bgpd routes --received``, metrics).
IMPORT_NOT_ALLOWED = "import-not-allowed"  # no import.allow rule matches
OVER_MAX_PREFIXES = "over-max-prefixes"  # the peer sent more than import.max_prefixes
BAD_NEXT_HOP = "bad-next-hop"  # loopback, unspecified or multicast: no route can use it
