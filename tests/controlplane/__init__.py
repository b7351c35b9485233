"""Throwaway Kubernetes control plane for tests, benchmarks and the lab (see controlplane.py)."""
