"""Cluster-in-a-box: the Kubernetes API simulator and simulated node hardware, for tests and `ccgpu simulate`."""
