"""Kubeconfig documents that point clients (kubectl, lightkube, kopf, the official client) at a simulator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

SIM_NAME = "ccgpu-sim"
SIM_TOKEN = "ccgpu-sim-token"  # the simulator accepts any bearer token; this one is fixed for convenience


def kubeconfig_dict(url: str, namespace: str = "default", name: str = SIM_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": SIM_TOKEN}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], url: str, namespace: str = "default") -> Path:
    """Write the kubeconfig (mode 0600, as kubectl expects of credentials files)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig_dict(url, namespace), f, sort_keys=False)
    return p
