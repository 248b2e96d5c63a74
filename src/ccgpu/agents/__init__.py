"""Node agents: one module per operand DaemonSet, run as `ccgpu agent <name>`."""
