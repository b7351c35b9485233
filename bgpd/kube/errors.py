"""The adapter's own exceptions: callers never see the client's or urllib3's types."""

from __future__ import annotations


class KubeError(Exception):
    """A Kubernetes API call failed. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GoneError(KubeError):
    """HTTP 410: the resourceVersion (or continue token) is too old; list again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=410)


def from_exception(exc: BaseException, what: str) -> KubeError:
    """A urllib3/socket/decoding failure of ``what`` ("GET /api/v1/nodes") as a KubeError
    (a KubeError passes through)."""
    if isinstance(exc, KubeError):
        return exc
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")
