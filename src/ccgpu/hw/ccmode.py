"""CC-mode backends: query, set and apply (reset) the confidential-computing mode of NVIDIA GPUs.

One interface, `CCBackend`; the production implementation runs NVIDIA's `nvidia_gpu_tools.py`
(gpu-admin-tools) as a subprocess and parses its log lines (reference/operands.md §3). The simulator ships an
emulator of that same CLI, so tests run this production backend end to end.

The tool's lines look like
    2024-03-29,05:28:52.880 INFO     GPU 0000:3a:00.0 H100-PCIE 0x2324 BAR0 0x66042000000 CC mode is on
and NVSwitch lines start with `NvSwitch`. Setting a mode only stages it; a reset applies it. The tool handles
`--reset-with-os` before `--set-cc-mode` within one invocation, so a switch uses `--set-cc-mode=X
--reset-after-cc-mode-switch --query-cc-mode` instead: set, reset, query, in one run per device (a tool start costs
more than a query). Several GPUs run as concurrent processes (a reset takes seconds; eight in a row take eight times).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ccgpu.hw.pci import BDF

CC_MODES = ("on", "off", "devtools")
PPCIE_MODES = ("on", "off")
# What the tool prints after an interrupted switch (gpu-admin-tools issue #7); only setting a mode fixes it.
CC_MODE_INVALID = "invalid-devtools-only-fix-by-setting-cc-mode"

_LINE_RE = re.compile(
    r"^(?P<ts>\S+)\s+(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+"
    r"(?:(?P<kind>GPU|NvSwitch) (?P<bdf>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]) "
    r"(?P<name>\S+) (?P<devid>0x[0-9a-fA-F]{4}) BAR0 (?P<bar0>0x[0-9a-fA-F]+) )?(?P<msg>.*)$"
)
_QUERY_RE = re.compile(r"^(?P<what>CC|PPCIe) mode is (?P<mode>[a-z-]+)$")


class CCBackendError(RuntimeError):
    """The CC tool failed for a device; the message carries the tool's own error lines."""

    def __init__(self, bdf: BDF | None, message: str) -> None:
        self.bdf = bdf
        super().__init__(f"{bdf}: {message}" if bdf else message)


@dataclass(frozen=True)
class ToolLine:
    """One parsed log line of nvidia_gpu_tools.py."""

    level: str
    message: str
    kind: str | None = None  # "GPU" or "NvSwitch" when the line is about a device
    bdf: BDF | None = None
    device_id: int | None = None


def parse_tool_output(text: str) -> list[ToolLine]:
    """Parse the tool's log lines; banner and topology lines (no level) are skipped."""
    lines: list[ToolLine] = []
    for raw in text.splitlines():
        m = _LINE_RE.match(raw.rstrip())
        if m is None:
            continue
        bdf = BDF.parse(m["bdf"]) if m["bdf"] else None
        devid = int(m["devid"], 16) if m["devid"] else None
        lines.append(ToolLine(m["level"], m["msg"], m["kind"], bdf, devid))
    return lines


def parse_query(text: str, what: str) -> dict[BDF, str]:
    """`CC mode is X` / `PPCIe mode is X` lines → {bdf: mode}. `what` is "CC" or "PPCIe"."""
    result: dict[BDF, str] = {}
    for line in parse_tool_output(text):
        m = _QUERY_RE.match(line.message)
        if line.bdf is not None and m is not None and m["what"] == what:
            result[line.bdf] = m["mode"]
    return result


def error_lines(text: str) -> list[str]:
    return [ln.message for ln in parse_tool_output(text) if ln.level in ("ERROR", "CRITICAL")]


class CCBackend(Protocol):
    """What cc-manager needs from the GPUs. All methods take validated BDFs and act on exactly those."""

    async def query_cc(self, bdf: BDF) -> str: ...

    async def set_cc(self, bdf: BDF, mode: str) -> None: ...

    async def query_ppcie(self, bdf: BDF) -> str: ...

    async def set_ppcie(self, bdf: BDF, mode: str) -> None: ...

    async def reset(self, bdf: BDF) -> None: ...

    async def apply_cc(self, bdf: BDF, mode: str) -> str:
        """Stage `mode`, reset the device to apply it, and return the CC mode it reports afterwards."""
        ...

    async def apply_ppcie(self, bdf: BDF, mode: str) -> str:
        """Stage a PPCIe mode, reset the device to apply it, and return the PPCIe mode it reports afterwards."""
        ...

    async def query_cc_all(self) -> dict[BDF, str]:
        """CC mode of every GPU that reports one (one tool run: querying is cheap, starting a process is not)."""
        ...

    async def query_ppcie_all(self) -> dict[BDF, str]:
        """PPCIe mode of every GPU and NVSwitch that reports one."""
        ...


async def reset_all(backend: CCBackend, bdfs: Iterable[BDF]) -> dict[BDF, Exception | None]:
    """Reset every device concurrently; returns each device's error (None on success)."""
    targets = list(bdfs)
    results = await asyncio.gather(*(backend.reset(b) for b in targets), return_exceptions=True)
    outcome: dict[BDF, Exception | None] = {}
    for bdf, res in zip(targets, results, strict=True):
        if isinstance(res, BaseException) and not isinstance(res, Exception):
            raise res
        outcome[bdf] = res if isinstance(res, Exception) else None
    return outcome


class GpuAdminToolsBackend:
    """Runs `nvidia_gpu_tools.py` once per operation and device (argv only, never a shell)."""

    def __init__(
        self,
        tool: str | os.PathLike[str],
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        self.tool = os.fspath(tool)
        self.python = python
        self.env = env
        self.timeout_s = timeout_s

    def argv(self, bdf: BDF, *options: str) -> list[str]:
        return [self.python, self.tool, f"--devices={bdf}", *options]

    async def _run(self, bdf: BDF, *options: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(bdf, *options),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CCBackendError(bdf, f"nvidia_gpu_tools.py {' '.join(options)} timed out after {self.timeout_s}s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            errors = error_lines(text) or text.strip().splitlines()[-3:]
            raise CCBackendError(bdf, f"nvidia_gpu_tools.py {' '.join(options)} exited {proc.returncode}: " + "; ".join(errors))
        return text

    async def _query_selection(self, selection: str, option: str, what: str) -> dict[BDF, str]:
        """Query every device of a selection (`gpus`, `nvswitches`) in one run. The tool exits non-zero when a
        device cannot answer (not CC/PPCIe capable); the lines of those that did answer are still returned,
        and a caller missing a device asks for it alone to get its error."""
        argv = [self.python, self.tool, f"--devices={selection}", option]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=self.env
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CCBackendError(None, f"nvidia_gpu_tools.py --devices={selection} {option} timed out") from None
        return parse_query(out.decode(errors="replace"), what)

    async def query_cc_all(self) -> dict[BDF, str]:
        return await self._query_selection("gpus", "--query-cc-mode", "CC")

    async def query_ppcie_all(self) -> dict[BDF, str]:
        gpus, switches = await asyncio.gather(
            self._query_selection("gpus", "--query-ppcie-mode", "PPCIe"),
            self._query_selection("nvswitches", "--query-ppcie-mode", "PPCIe"),
        )
        return {**gpus, **switches}

    async def _query(self, bdf: BDF, option: str, what: str) -> str:
        text = await self._run(bdf, option)
        modes = parse_query(text, what)
        if bdf not in modes:
            raise CCBackendError(bdf, f"nvidia_gpu_tools.py {option} printed no '{what} mode is' line for the device")
        return modes[bdf]

    async def query_cc(self, bdf: BDF) -> str:
        return await self._query(bdf, "--query-cc-mode", "CC")

    async def query_ppcie(self, bdf: BDF) -> str:
        return await self._query(bdf, "--query-ppcie-mode", "PPCIe")

    async def set_cc(self, bdf: BDF, mode: str) -> None:
        _check_mode(mode, CC_MODES, "CC")
        await self._run(bdf, f"--set-cc-mode={mode}")

    async def set_ppcie(self, bdf: BDF, mode: str) -> None:
        _check_mode(mode, PPCIE_MODES, "PPCIe")
        await self._run(bdf, f"--set-ppcie-mode={mode}")

    async def reset(self, bdf: BDF) -> None:
        await self._run(bdf, "--reset-with-os")

    async def apply_cc(self, bdf: BDF, mode: str) -> str:
        _check_mode(mode, CC_MODES, "CC")
        return await self._apply(bdf, mode, "cc", "CC")

    async def apply_ppcie(self, bdf: BDF, mode: str) -> str:
        _check_mode(mode, PPCIE_MODES, "PPCIe")
        return await self._apply(bdf, mode, "ppcie", "PPCIe")

    async def _apply(self, bdf: BDF, mode: str, knob: str, what: str) -> str:
        """One run: set, reset (`--reset-after-...-switch`, which makes the tool check the mode took), query."""
        options = (f"--set-{knob}-mode={mode}", f"--reset-after-{knob}-mode-switch", f"--query-{knob}-mode")
        text = await self._run(bdf, *options)
        modes = parse_query(text, what)
        if bdf not in modes:
            raise CCBackendError(bdf, f"nvidia_gpu_tools.py {options[0]} printed no '{what} mode is' line")
        return modes[bdf]


def _check_mode(mode: str, accepted: Sequence[str], what: str) -> None:
    if mode not in accepted:
        raise ValueError(f"{what} mode {mode!r} is not valid; accepted: {', '.join(accepted)}")
