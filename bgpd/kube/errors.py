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
