"""One way to get a Kubernetes client: a lightkube AsyncClient from a kubeconfig file, a kubeconfig dict
(such as the API simulator's `kubeconfig_dict()`), or the pod's in-cluster service account."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

FIELD_MANAGER = "ccgpu"


def load_kubeconfig(kubeconfig: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> KubeConfig:
    """Resolve a KubeConfig: a dict, a file path, else in-cluster, else $KUBECONFIG / ~/.kube/config."""
    if isinstance(kubeconfig, Mapping):
        return KubeConfig.from_dict(dict(kubeconfig))
    if kubeconfig is not None:
        path = Path(kubeconfig)
        if not path.is_file():
            raise FileNotFoundError(f"kubeconfig {str(path)!r} does not exist; pass an existing kubeconfig "
                                    "file, a kubeconfig dict, or None for in-cluster/default")
        return KubeConfig.from_file(path)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubeConfig.from_service_account()
    return KubeConfig.from_env()


def make_async_client(kubeconfig: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
                      namespace: str | None = None, field_manager: str = FIELD_MANAGER) -> AsyncClient:
    """A lightkube AsyncClient for a real cluster or the simulator (see `load_kubeconfig` for the lookup)."""
    config = load_kubeconfig(kubeconfig)
    kwargs: dict[str, Any] = {"field_manager": field_manager}
    if namespace is not None:
        kwargs["namespace"] = namespace
    return AsyncClient(config=config, **kwargs)
