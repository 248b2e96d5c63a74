"""Host trees for the containerd-config tests: main files as nodes ship them, and a byte/mtime snapshot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MAIN = "/etc/containerd/config.toml"
DROPIN = "/etc/containerd/conf.d/ccgpu-kata.toml"
KATA_DIR = "/opt/kata/share/defaults/kata-containers"

# What kubeadm guides have users write: `containerd config default` trimmed, SystemdCgroup switched on.
KUBEADM_V2 = """# containerd config for kubeadm nodes (edited by hand)
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example/pause:3.9"  # pinned for air-gapped nodes
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
"""

# Debian's packaged /etc/containerd/config.toml.
DEBIAN_V2 = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""

# A v2 file that already imports a site drop-in.
WITH_IMPORTS_V2 = """version = 2
imports = ["/etc/containerd/site.d/*.toml"]

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
"""

# Hand-formatted imports: tomlkit's edit-and-undo is not byte-exact here (it leaves `[ "a", ]`), so a
# byte-for-byte cleanup must come from the backup.
SPACED_IMPORTS_V2 = """version = 2
imports = [ "/etc/containerd/site.d/registry.toml" ]
"""

# containerd 2.x style.
V3 = """version = 3
root = "/var/lib/containerd"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = true
"""

# containerd 2.2's default: conf.d already imported.
V3_CONF_D = """version = 3
imports = ['/etc/containerd/conf.d/*.toml']
"""


def make_host(root: Path, main_text: str, kata_configs: bool = True) -> Path:
    """A host tree with the main config (mode 0640, to check modes survive), Kata's shim configs and shim."""
    main = root / MAIN.lstrip("/")
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(main_text)
    main.chmod(0o640)
    if kata_configs:
        kata = root / KATA_DIR.lstrip("/")
        kata.mkdir(parents=True, exist_ok=True)
        for shim in ("qemu-nvidia-gpu", "qemu-nvidia-gpu-snp", "qemu-nvidia-gpu-tdx"):
            (kata / f"configuration-{shim}.toml").write_text("[hypervisor.qemu]\n")
        shim_binary = root / "opt/kata/bin/containerd-shim-kata-v2"
        shim_binary.parent.mkdir(parents=True, exist_ok=True)
        shim_binary.write_text("#!/bin/sh\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root: bytes, mtime_ns and mode, to prove a run changed nothing."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(root))] = (p.read_bytes(), st.st_mtime_ns, st.st_mode)
    return out


class RecordingRunner:
    """Stands in for subprocess.run in the systemd restart path: records argv, answers with a set status."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv: list[str], **_kwargs: object) -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def host_id(main_text: object) -> str | None:
    """Short test ids for the main files above."""
    names = {
        KUBEADM_V2: "kubeadm-v2",
        DEBIAN_V2: "debian-v2",
        WITH_IMPORTS_V2: "imports-v2",
        SPACED_IMPORTS_V2: "spaced-imports-v2",
        V3: "v3",
        V3_CONF_D: "v3-conf.d",
    }
    return names.get(main_text) if isinstance(main_text, str) else None
