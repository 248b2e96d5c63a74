"""Cluster-in-a-box: simulated hosts, API server, kubelet. Production code never imports this package."""
