"""Kubernetes plumbing shared by the operator and the agents (never imports the simulator)."""
