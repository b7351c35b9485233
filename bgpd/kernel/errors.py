"""What the kernel adapter reports: its exception and the outcome of one sync."""

from __future__ import annotations

from dataclasses import dataclass

from bgpd.model import KernelRoute


class KernelError(Exception):
    """The kernel adapter could not talk to netlink at all (socket, namespace, dump).

    Problems with single routes are not exceptions: they come back as ``RouteFailure``
    entries of a ``SyncResult`` so one bad route never stops the others.
    """


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """One route the kernel refused (or that could not even be encoded)."""

    route: KernelRoute
    op: str  # "add" | "replace" | "delete"
    errno: int
    message: str


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one ``KernelTable.sync`` really did.

    ``conflicts`` are adds refused because a route that is not ours (another rtproto)
    holds the same prefix/metric in the table: reported, never fought.
    """

    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    failures: tuple[RouteFailure, ...] = ()
    conflicts: tuple[RouteFailure, ...] = ()
    writes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.conflicts

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.deleted)
