"""Kernel adapter: programs owned routes over netlink (pyroute2) and keeps them there.

``KernelTable`` syncs a full desired set of ``KernelRoute`` into one table of one network
namespace; ``KernelMonitor`` watches netlink and repairs drift. Only routes carrying our
rtproto number are ever changed or deleted.
"""

from bgpd.kernel.errors import KernelError, RouteFailure, SyncResult
from bgpd.kernel.monitor import KernelMonitor
from bgpd.kernel.table import DEFAULT_PROTO, KernelTable

__all__ = [
    "DEFAULT_PROTO",
    "KernelError",
    "KernelMonitor",
    "KernelTable",
    "RouteFailure",
    "SyncResult",
]
