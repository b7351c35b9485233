"""Real kubelets on this machine: Kubernetes nodes as network namespaces (see lab.py)."""
