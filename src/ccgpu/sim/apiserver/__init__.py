"""A Kubernetes API simulator that real clients (kubectl, lightkube, kopf, the official client) accept.

    async with ApiServer() as api:          # 127.0.0.1, free port
        api.url, api.kubeconfig_dict(), api.write_kubeconfig(path), api.metrics, api.faults
"""

from .errors import ApiError
from .faults import Faults
from .metrics import Metrics
from .server import ApiServer

__all__ = ["ApiServer", "ApiError", "Faults", "Metrics"]
