"""ccgpu: confidential GPU workloads on Kubernetes (Kata confidential VMs + NVIDIA GPUs in CC mode)."""

__version__ = "0.1.0"
