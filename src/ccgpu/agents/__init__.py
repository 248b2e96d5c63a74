"""Node agents: one module per operand DaemonSet, plus the CDI identity module and the device plugin."""
