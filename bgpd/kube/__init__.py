"""Kubernetes adapter: list/watch of the objects the policy reads, held as lean snapshots.

``ClusterCache`` (cache.py) runs one watcher per kind (watch.py) and hands out consistent
``bgpd.model.Snapshot`` values; ``convert.py`` turns raw JSON into the model types;
``events.py`` records Kubernetes Events. Only this package imports ``kubernetes``.
"""

from bgpd.kube.cache import ClusterCache
from bgpd.kube.errors import GoneError, KubeError

__all__ = ["ClusterCache", "GoneError", "KubeError"]
