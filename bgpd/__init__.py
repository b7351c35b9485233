"""bgpd: a Kubernetes node agent that announces pod and service prefixes over BGP."""

__version__ = "0.1.0"
