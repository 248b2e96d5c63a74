"""Regenerate the committed kubelet device-plugin stubs from src/ccgpu/agents/device_plugin/api.proto.

Run from the repository root: `python scripts/gen_device_plugin_stubs.py`. Uses grpc_tools.protoc (the
grpcio-tools dev dependency); the proto is compiled with `src` as its include root so the generated grpc module
imports `ccgpu.agents.device_plugin.api_pb2` absolutely.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = "ccgpu/agents/device_plugin/api.proto"


def main() -> int:
    src = ROOT / "src"
    args = [
        "protoc",
        f"-I{src}",
        f"--python_out={src}",
        f"--pyi_out={src}",
        f"--grpc_python_out={src}",
        str(src / PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit status {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
