"""``bgpd lab``: realise containerlab topologies with network namespaces, no Docker needed.

Each lab node becomes a network namespace ``clab-<lab>-<node>`` (exactly containerlab's
container name, so ``ip netns exec clab-<lab>-<node> ...`` works against both), links become
veth pairs renamed as in the file, FRR runs in the router namespaces, and the lab's
Kubernetes side (etcd, kube-apiserver, kube-controller-manager, a fake kubelet that realises
Pods as namespaces, one bgpd agent per node) runs as detached processes recorded in the lab
folder ``clab-<lab>/`` next to the topology file. See ``bgpd/lab/README.md``.
"""
