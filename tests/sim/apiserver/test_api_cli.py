"""`ccgpu sim apiserver` serves on 127.0.0.1 and writes a kubeconfig that clients can use."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request

import yaml

from tests.conftest import ccgpu_command, ccgpu_env


def test_sim_apiserver_serves_and_writes_a_working_kubeconfig(tmp_path):
    kc = tmp_path / "kubeconfig"
    proc = subprocess.Popen(ccgpu_command("sim", "apiserver", "--port", "0", "--kubeconfig-out", str(kc)),  # noqa: S603
                            env=ccgpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the server announces itself
        assert "Kubernetes API simulator at http://127.0.0.1:" in line, line + proc.stderr.read()
        server = yaml.safe_load(kc.read_text())["clusters"][0]["cluster"]["server"]
        assert server.startswith("http://127.0.0.1:") and server in line
        assert oct(kc.stat().st_mode & 0o777) == "0o600"
        with urllib.request.urlopen(server + "/version", timeout=5) as r:
            assert json.load(r)["major"] == "1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
