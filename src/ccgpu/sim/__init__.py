"""Cluster-in-a-box: simulated hosts, the Kubernetes API simulator, kubelet. Production code never imports this package."""
