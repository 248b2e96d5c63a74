"""An emulator of NVIDIA's `nvidia_gpu_tools.py` (gpu-admin-tools) over a simulated host.

Same flags, same log-line shapes, same exit codes as the real CLI (reference/operands.md §3), so the production
`GpuAdminToolsBackend` runs unchanged against it: tests point the backend's `tool` at this file and set
`CCGPU_SIM_HOST_ROOT` to a `SimulatedHost` tree. Within one run the options are handled in the real tool's
order: `--reset-with-os` first, then set/query CC, then set/query PPCIe.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

VERSION = "v2025.10.20-ccgpu-sim"
HOST_ROOT_ENV = "CCGPU_SIM_HOST_ROOT"

log = logging.getLogger("nvidia_gpu_tools")


class GpuError(RuntimeError):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nvidia_gpu_tools.py")
    p.add_argument("--devices", help="gpus | nvswitches | BDF")
    p.add_argument("--gpu-bdf", help="select GPUs whose BDF contains this text")
    p.add_argument("--query-cc-mode", action="store_true")
    p.add_argument("--set-cc-mode", choices=["off", "on", "devtools"])
    p.add_argument("--reset-after-cc-mode-switch", action="store_true")
    p.add_argument("--query-ppcie-mode", action="store_true")
    p.add_argument("--set-ppcie-mode", choices=["off", "on"])
    p.add_argument("--reset-after-ppcie-mode-switch", action="store_true")
    p.add_argument("--reset-with-os", action="store_true")
    p.add_argument("--ignore-nvidia-driver", action="store_true")
    return p


def _label(dev) -> str:
    """The tool's device prefix: `GPU 0000:3a:00.0 H100-SXM5-80GB 0x2330 BAR0 0x...`."""
    model = dev.model
    if dev.kind == "nvswitch":
        return f"NvSwitch {dev.bdf} LS10 {model.device_id:#06x} BAR0 {dev.bar0:#x}"
    name = model.short_name.upper().replace(" ", "-")
    return f"GPU {dev.bdf} {name} {model.device_id:#06x} BAR0 {dev.bar0:#x}"


def _select(host, opts) -> list:
    from ccgpu.hw.pci import BDF, BDFError

    if opts.gpu_bdf:
        return [host.device(b) for b in host.gpus() if opts.gpu_bdf.lower() in b]
    sel = opts.devices or "gpus"
    if sel == "gpus":
        return [host.device(b) for b in host.gpus()]
    if sel == "nvswitches":
        return [host.device(b) for b in host.nvswitches()]
    try:
        bdf = str(BDF.parse(sel))
    except BDFError:
        raise GpuError(f"Invalid --devices {sel!r}") from None
    present = set(host.devices())
    return [host.device(bdf)] if bdf in present else []


def _per_device(dev, opts) -> bool:
    label = _label(dev)
    state = dev.query_cc()
    if opts.reset_with_os:
        dev.reset()
    if opts.set_cc_mode:
        if dev.kind != "gpu" or not state.cc_capable:
            log.error(f"Configuring CC not supported on {label}")
            return False
        dev.set_pending_cc(opts.set_cc_mode)
        log.info(f"{label} CC mode set to {opts.set_cc_mode}. It will be active after GPU reset.")
        if opts.reset_after_cc_mode_switch:
            dev.reset()
            new_mode = dev.query_cc().current
            if new_mode != opts.set_cc_mode:
                raise GpuError(f"{label} failed to switch to CC mode {opts.set_cc_mode}, current mode is {new_mode}.")
            log.info(f"{label} was reset to apply the new CC mode.")
    if opts.query_cc_mode:
        if dev.kind != "gpu" or not state.cc_capable:
            log.error(f"Querying CC mode is not supported on {label}")
            return False
        log.info(f"{label} CC mode is {dev.query_cc().current}")
    if opts.set_ppcie_mode:
        if not state.ppcie_capable:
            log.error(f"Configuring PPCIe not supported on {label}")
            return False
        dev.set_pending_ppcie(opts.set_ppcie_mode)
        log.info(f"{label} PPCIe mode set to {opts.set_ppcie_mode}. It will be active after GPU or switch reset.")
        if opts.reset_after_ppcie_mode_switch:
            dev.reset()
            new_mode = dev.query_cc().ppcie_current
            if new_mode != opts.set_ppcie_mode:
                raise GpuError(f"{label} failed to switch to PPCIe mode {opts.set_ppcie_mode}, current mode is {new_mode}.")
            log.info(f"{label} was reset to apply the new PPCIe mode.")
    if opts.query_ppcie_mode:
        if not state.ppcie_capable:
            log.error(f"Querying PPCIe mode is not supported on {label}")
            return False
        log.info(f"{label} PPCIe mode is {dev.query_cc().ppcie_current}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-8s %(message)s", datefmt="%Y-%m-%d,%H:%M:%S",
    )
    opts = _parser().parse_args(argv)
    root = os.environ.get(HOST_ROOT_ENV)
    if not root:
        print(f"{HOST_ROOT_ENV} is not set: the emulator needs a simulated host tree", file=sys.stderr)
        return 2
    from ccgpu.sim.host import SimulatedHost

    print(f"NVIDIA GPU Tools version {VERSION}")
    try:
        host = SimulatedHost.open(root)
        devices = _select(host, opts)
        if not devices:
            log.error("No devices found")
            return 1
        print("Topo:")
        for dev in devices:
            print(f"  {_label(dev)}")
        ok = True
        for dev in devices:
            ok = _per_device(dev, opts) and ok
        return 0 if ok else 1
    except (GpuError, OSError) as e:
        log.error(f"{e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())


class InProcessBackend:
    """A `CCBackend` doing what the emulator does, in this process (resets in threads, so they overlap).

    For tests that drive many switches (crash injection at every step): a tool run costs a Python start-up,
    this costs nothing. Tests of the production backend use the emulator CLI above instead."""

    _resetters = None  # one pool for every backend of the process (hundreds of simulated nodes share it)

    def __init__(self, host) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.host = host
        self.calls: list[tuple[str, str]] = []
        # A thread per concurrent reset (asyncio's default pool has cpu+4 threads: 8 GPUs would queue); the
        # pool is shared, so a cluster of 500 nodes does not keep a pool of idle threads per node.
        if InProcessBackend._resetters is None:
            InProcessBackend._resetters = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sim-gpu-reset")

    def _dev(self, bdf, what: str):
        from ccgpu.hw.ccmode import CCBackendError

        key = str(bdf)
        if key not in self.host.devices():
            raise CCBackendError(bdf, "No devices found")
        dev = self.host.gpu(key)
        state = dev.query_cc()
        capable = state.cc_capable and dev.kind == "gpu" if what == "CC" else state.ppcie_capable
        if not capable:
            raise CCBackendError(bdf, f"{what} not supported on {_label(dev)}")
        return dev

    async def query_cc(self, bdf) -> str:
        self.calls.append(("query_cc", str(bdf)))
        return self._dev(bdf, "CC").query_cc().current

    async def query_ppcie(self, bdf) -> str:
        self.calls.append(("query_ppcie", str(bdf)))
        return self._dev(bdf, "PPCIe").query_cc().ppcie_current

    async def query_cc_all(self) -> dict:
        """Every present CC-capable GPU, from one snapshot of the host state (as one tool run would)."""
        from ccgpu.hw.pci import BDF

        self.calls.append(("query_cc_all", ""))
        devs = self.host.state().devices.values()
        return {BDF.parse(d.bdf): d.cc_current for d in devs if d.present and d.kind == "gpu" and d.cc_capable}

    async def query_ppcie_all(self) -> dict:
        from ccgpu.hw.pci import BDF

        self.calls.append(("query_ppcie_all", ""))
        devs = self.host.state().devices.values()
        return {BDF.parse(d.bdf): d.ppcie_current for d in devs if d.present and d.ppcie_capable}

    async def set_cc(self, bdf, mode: str) -> None:
        self.calls.append(("set_cc", str(bdf)))
        self._dev(bdf, "CC").set_pending_cc(mode)

    async def set_ppcie(self, bdf, mode: str) -> None:
        self.calls.append(("set_ppcie", str(bdf)))
        self._dev(bdf, "PPCIe").set_pending_ppcie(mode)

    async def apply_cc(self, bdf, mode: str) -> str:
        self.calls.append(("apply_cc", str(bdf)))
        self._dev(bdf, "CC").set_pending_cc(mode)
        await self._reset(bdf)
        return self._dev(bdf, "CC").query_cc().current

    async def apply_ppcie(self, bdf, mode: str) -> str:
        self.calls.append(("apply_ppcie", str(bdf)))
        self._dev(bdf, "PPCIe").set_pending_ppcie(mode)
        await self._reset(bdf)
        return self._dev(bdf, "PPCIe").query_cc().ppcie_current

    async def reset(self, bdf) -> None:
        self.calls.append(("reset", str(bdf)))
        await self._reset(bdf)

    async def _reset(self, bdf) -> None:
        import asyncio

        from ccgpu.hw.ccmode import CCBackendError

        dev = self.host.gpu(str(bdf))
        try:
            await asyncio.get_running_loop().run_in_executor(self._resetters, dev.reset)
        except OSError as e:
            raise CCBackendError(bdf, f"reset failed: {e}") from None
