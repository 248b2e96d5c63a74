"""`ccgpu sim apiserver`: serve the simulator on 127.0.0.1 until interrupted, with a kubeconfig for kubectl."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from .server import ApiServer


async def serve(port: int, kubeconfig_out: Path | None, seed: int = 0,
                announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT/SIGTERM; announce the URL (and kubeconfig path) once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ApiServer(port=port, seed=seed) as api:
        if kubeconfig_out is not None:
            api.write_kubeconfig(kubeconfig_out)
            announce(f"Kubernetes API simulator at {api.url}; kubeconfig written to {kubeconfig_out} "
                     f"(kubectl --kubeconfig {kubeconfig_out} get nodes)")
        else:
            announce(f"Kubernetes API simulator at {api.url}")
        await stop.wait()


def run(port: int, kubeconfig_out: Path | None, seed: int = 0, announce: Callable[[str], None] = print) -> None:
    asyncio.run(serve(port, kubeconfig_out, seed, announce))
