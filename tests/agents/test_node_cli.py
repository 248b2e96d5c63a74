"""`ccgpu agent cc-manager | vfio-manager | validator`: flags and NVIDIA's env var names, exit codes, output,
structured logs, readiness files, and bad input that changes nothing. The agents run unmodified with a mounted
simulated host as their host root (`mounted_host`, a FUSE mount): nothing tells them it is simulated."""

from __future__ import annotations

import json

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from typer.testing import CliRunner

from ccgpu import labels
from ccgpu.cli import app
from ccgpu.kube.client import load_kubeconfig
from ccgpu.sim import gpu_admin_tools
from ccgpu.sim.apiserver import ApiServer
from tests.agents.simnode import DEPLOY_LABELS, NODE, mounted_host, nvidia_drivers
from tests.conftest import ccgpu_env

runner = CliRunner()


def test_help_lists_every_agent_command_with_a_one_line_help():
    out = runner.invoke(app, ["agent", "--help"], terminal_width=200).output
    for name in ("cc-manager", "vfio-manager", "validator"):
        assert name in out
    out = runner.invoke(app, ["agent", "vfio-manager", "--help"], terminal_width=200).output
    for name in ("bind", "unbind", "run"):
        assert name in out


def test_vfio_bind_all_then_unbind_all_through_the_cli_with_host_root_from_env():
    with mounted_host() as host:
        result = runner.invoke(app, ["agent", "vfio-manager", "bind", "--all"], env={"HOST_ROOT": str(host.root)})
        assert result.exit_code == 0, result.output
        assert all(f"{b} bound vfio-pci" in result.stdout for b in host.gpus())
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus())
        result = runner.invoke(app, ["agent", "vfio-manager", "unbind", "-a", "--unbind-nvswitches",
                                     "--host-root", str(host.root)])
        assert result.exit_code == 0, result.output
        assert set(nvidia_drivers(host).values()) == {None}


def test_vfio_bind_with_bind_nvswitches_env_binds_the_switches_too():
    with mounted_host() as host:
        env = {"HOST_ROOT": str(host.root), "BIND_NVSWITCHES": "true"}
        result = runner.invoke(app, ["agent", "vfio-manager", "bind", "--all"], env=env)
        assert result.exit_code == 0, result.output
        assert set(nvidia_drivers(host).values()) == {"vfio-pci"}


def test_vfio_bind_failures_exit_1_and_name_every_failed_device():
    with mounted_host(iommu=False) as host:
        result = runner.invoke(app, ["agent", "vfio-manager", "bind", "--all", "--host-root", str(host.root)])
        assert result.exit_code == 1
        assert "bind failed for 8 of 8 devices" in result.stderr
        assert all(b in result.stderr for b in host.gpus())


def test_vfio_unbind_of_a_gpu_a_vm_holds_exits_1_naming_it_and_leaves_it_bound():
    with mounted_host() as host:
        runner.invoke(app, ["agent", "vfio-manager", "bind", "--all", "--host-root", str(host.root)])
        busy = host.gpus()[4]
        host.gpu(busy).hold_busy()
        result = runner.invoke(app, ["agent", "vfio-manager", "unbind", "--all", "--host-root", str(host.root)])
        assert result.exit_code == 1 and f"{busy} (busy)" in result.stderr
        assert host.device(busy).driver == "vfio-pci"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device-id", "0000:zz:00.0"], "0000:zz:00.0"),
        (["--device-id", "../../../etc/passwd"], "passwd"),
        (["--all", "--device-id", "0000:18:00.0"], "exactly one of --all and --device-id"),
        ([], "exactly one of --all and --device-id"),
        (["--device-id", "0000:05:00.0"], "not a device the vfio-manager manages"),
    ],
)
def test_vfio_bad_device_selection_exits_2_saying_what_is_accepted_and_changes_nothing(args, message):
    with mounted_host() as host:
        before = nvidia_drivers(host)
        result = runner.invoke(app, ["agent", "vfio-manager", "bind", *args, "--host-root", str(host.root)])
        assert result.exit_code == 2, result.output
        assert message in result.stderr
        assert nvidia_drivers(host) == before


@pytest.mark.parametrize(
    "env,message",
    [
        ({"DEFAULT_CC_MODE": "On"}, "accepted values: on, off, devtools, ppcie"),
        ({"DEFAULT_CC_MODE": "ppcie"}, "may not be ppcie"),
        ({"NODE_NAME": ""}, "NODE_NAME"),
        ({"GPU_ADMIN_TOOLS": "/nonexistent/nvidia_gpu_tools.py"}, "nvidia_gpu_tools.py"),
        ({"HOST_ROOT": "/nonexistent-host"}, "--host-root"),
    ],
)
def test_cc_manager_bad_configuration_exits_2_before_touching_anything(env, message):
    base = {"NODE_NAME": NODE, "GPU_ADMIN_TOOLS": gpu_admin_tools.__file__, "HOST_ROOT": "/"}
    result = runner.invoke(app, ["agent", "cc-manager", "--once"], env={**base, **env})
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_cc_manager_once_switches_the_node_through_the_cli_and_logs_json_lines(tmp_path, monkeypatch):
    with mounted_host() as host, ApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        sync = Client(config=load_kubeconfig(str(kubeconfig)))
        sync.create(Node(metadata=ObjectMeta(name=NODE, labels={**DEPLOY_LABELS, labels.CC_MODE: "on"})))
        ready = tmp_path / "run" / ".cc-manager-ctr-ready"
        # the backend's tool runs inherit the environment: the emulator needs this checkout and the host tree
        for key, value in ccgpu_env(**{gpu_admin_tools.HOST_ROOT_ENV: str(host.host.root)}).items():
            monkeypatch.setenv(key, value)
        env = {"NODE_NAME": NODE, "HOST_ROOT": str(host.root), "KUBECONFIG": str(kubeconfig),
               "GPU_ADMIN_TOOLS": gpu_admin_tools.__file__, "CC_READINESS_FILE": str(ready),
               "DEFAULT_CC_MODE": "off", "EVICT_OPERATOR_COMPONENTS": "false"}
        result = runner.invoke(app, ["agent", "cc-manager", "--once"], env=env)
        assert result.exit_code == 0, result.output
        assert {host.gpu(b).query_cc().current for b in host.gpus()} == {"on"}
        node_labels = sync.get(Node, NODE).metadata.labels
        assert node_labels[labels.CC_MODE_STATE] == "on"
        assert node_labels[labels.deploy_label("vfio-manager")] == "true"  # never paused: eviction off
        assert ready.exists()
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert lines and {ln["component"] for ln in lines} == {"cc-manager"}
        assert any("applied" in ln["msg"] and ln["node"] == NODE for ln in lines)


def test_vfio_manager_without_subcommand_runs_like_the_daemonset_and_keeps_gpus_bound_on_sigterm():
    """The DaemonSet runs `ccgpu agent vfio-manager` with only env vars; SIGTERM (pod stop) must not unbind
    (the upstream rollout bug: operands.md §8, k8s-driver-manager#146)."""
    import signal
    import subprocess
    import time

    from tests.conftest import ccgpu_command

    with mounted_host() as host:
        ready = host.root / labels.VALIDATIONS_DIR / labels.READY_VFIO_PCI
        proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter running this checkout's CLI
            ccgpu_command("agent", "vfio-manager"), env=ccgpu_env(HOST_ROOT=str(host.root), NODE_NAME=""),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "no vfio-pci-ready in 30s"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert all(host.device(b).driver == "vfio-pci" for b in host.gpus())
        assert not ready.exists()
        assert any('"component":"vfio-manager"' in line for line in err.splitlines())


def test_cc_manager_once_with_an_invalid_label_exits_1_naming_the_valid_values_and_touches_no_gpu(tmp_path):
    with mounted_host() as host, ApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        sync = Client(config=load_kubeconfig(str(kubeconfig)))
        sync.create(Node(metadata=ObjectMeta(name=NODE, labels={**DEPLOY_LABELS, labels.CC_MODE: "enabled"})))
        env = {"NODE_NAME": NODE, "HOST_ROOT": str(host.root), "KUBECONFIG": str(kubeconfig),
               "GPU_ADMIN_TOOLS": gpu_admin_tools.__file__, "CC_READINESS_FILE": str(tmp_path / "ready")}
        result = runner.invoke(app, ["agent", "cc-manager", "--once"], env=env)
        assert result.exit_code == 1
        assert "'enabled' is not valid; accepted values: on, off, devtools, ppcie" in result.stderr
        assert all(host.gpu(b).resets == 0 for b in host.gpus())
        assert sync.get(Node, NODE).metadata.labels[labels.CC_MODE_STATE] == "failed"


def test_validator_once_serves_metrics_and_prints_which_files_it_wrote(tmp_path):
    import socket
    import urllib.request

    with mounted_host() as host, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        result = runner.invoke(app, ["agent", "validator", "--once", "--default-workload", "vm-passthrough",
                                     "--metrics-port", str(port)], env={"HOST_ROOT": str(host.root), "NODE_NAME": ""})
        assert result.exit_code == 0, result.output
        assert "workload-type: written" in result.stdout and "vfio-pci-ready: absent" in result.stdout
        assert "not ready: 0000:18:00.0 is on nvidia, not a vfio driver" in result.stdout
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
        assert 'ccgpu_validation_ready{file="workload-type"} 1.0' in body
        assert 'ccgpu_validation_ready{file="vfio-pci-ready"} 0.0' in body


def test_cc_manager_killed_mid_switch_then_restarted_finishes_the_switch(tmp_path):
    """SIGKILL while the switch waits for an operand pod: the intent and the paused labels stay on the node;
    the restarted agent resumes, and ends with every GPU on, the labels restored and no intent."""
    import signal
    import subprocess
    import time

    from lightkube.models.core_v1 import Container, PodSpec
    from lightkube.resources.core_v1 import Pod

    from tests.conftest import ccgpu_command

    with mounted_host() as host, ApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        sync = Client(config=load_kubeconfig(str(kubeconfig)))
        sync.create(Node(metadata=ObjectMeta(name=NODE, labels={**DEPLOY_LABELS, labels.CC_MODE: "on"})))
        sync.create(Pod(metadata=ObjectMeta(name="vfio-x", namespace="default", labels={"app": "nvidia-vfio-manager"}),
                        spec=PodSpec(nodeName=NODE, containers=[Container(name="a", image="ccgpu")])))
        env = ccgpu_env(NODE_NAME=NODE, HOST_ROOT=str(host.root), KUBECONFIG=str(kubeconfig),
                        GPU_ADMIN_TOOLS=gpu_admin_tools.__file__, CC_READINESS_FILE=str(tmp_path / "ready"),
                        **{gpu_admin_tools.HOST_ROOT_ENV: str(host.host.root)})
        agent = subprocess.Popen(ccgpu_command("agent", "cc-manager"), env=env,  # noqa: S603 - fixed argv
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while labels.CC_SWITCH_INTENT not in (sync.get(Node, NODE).metadata.annotations or {}):
                assert agent.poll() is None and time.monotonic() < deadline, "no intent recorded within 30s"
                time.sleep(0.05)
        finally:
            agent.send_signal(signal.SIGKILL)
            agent.communicate(timeout=10)
        node = sync.get(Node, NODE)
        assert node.metadata.labels[labels.deploy_label("vfio-manager")] == labels.PAUSED_FOR_CC
        assert all(host.gpu(b).resets == 0 for b in host.gpus())

        sync.delete(Pod, "vfio-x", namespace="default")
        result = subprocess.run(ccgpu_command("agent", "cc-manager", "--once"), env=env,  # noqa: S603
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        node = sync.get(Node, NODE)
        assert labels.CC_SWITCH_INTENT not in (node.metadata.annotations or {})
        assert all(node.metadata.labels.get(k) == v for k, v in DEPLOY_LABELS.items())
        assert node.metadata.labels[labels.CC_MODE_STATE] == "on"
        assert {host.gpu(b).query_cc().current for b in host.gpus()} == {"on"}
