"""What the operator renders into a ccgpu agent's pod is what that agent reads: every environment variable of
the container is one the agent's command declares (a name nothing reads, like the old CONFIGURE_CONTAINERD, or a
typo, fails here), and each policy setting meant for an agent reaches it."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from ccgpu.agents import sandbox_cli
from ccgpu.cli import app
from ccgpu.operator import desired
from ccgpu.operator.desired import Images, Owner
from ccgpu.operator.policy import default_policy, parse_spec

IMAGES = Images(ccgpu="ccgpu:test", nvidia_repository="nvidia")
AGENT_COMMANDS = typer.main.get_command(app).commands["agent"].commands  # type: ignore[attr-defined]
# Read with os.environ rather than a declared option: the device plugin's aliases (empty means per-model names).
READ_DIRECTLY = {"device-plugin": {sandbox_cli.GPU_ALIAS_ENV, sandbox_cli.NVSWITCH_ALIAS_ENV}}


def _envvars(command: Any) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def reads(agent: str) -> set[str]:
    """The variables `ccgpu agent <agent>` as its DaemonSet runs it reads (vfio-manager: its `run`)."""
    command = AGENT_COMMANDS[agent]
    if getattr(command, "commands", None):  # a group (typer vendors its own click)
        command = command.commands["run"]
    return _envvars(command) | READ_DIRECTLY.get(agent, set())


def _agent_containers(spec: dict) -> dict[str, dict]:
    out = {}
    for ds in desired.daemonsets(parse_spec(spec), Owner("p", "u"), "ccgpu", IMAGES):
        container = ds["spec"]["template"]["spec"]["containers"][0]
        command = container.get("command") or []
        if command[:2] == ["ccgpu", "agent"]:
            out[command[2]] = container
    return out


def _all_agents_spec() -> dict:
    spec = default_policy()["spec"]
    spec["sandboxWorkloads"] = {**spec.get("sandboxWorkloads", {}), "enabled": True,
                                "defaultWorkload": "vm-passthrough"}
    return spec


def test_every_ccgpu_agent_is_rendered() -> None:
    assert set(_agent_containers(_all_agents_spec())) == {
        "validator", "vfio-manager", "cc-manager", "kata-manager", "device-plugin"}


@pytest.mark.parametrize("agent", ["validator", "vfio-manager", "cc-manager", "kata-manager", "device-plugin"])
def test_the_rendered_environment_is_only_what_the_agent_reads(agent: str) -> None:
    container = _agent_containers(_all_agents_spec())[agent]
    rendered = {e["name"] for e in container["env"]}
    assert rendered, "every agent gets at least its node name"
    assert rendered - reads(agent) == set(), f"{agent} is given variables it never reads"


def test_policy_settings_reach_their_agents() -> None:
    spec = _all_agents_spec()
    spec["ccManager"]["defaultMode"] = "devtools"
    spec["vfioManager"]["bindNvSwitches"] = True
    containers = _agent_containers(spec)

    def env(agent: str) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in containers[agent]["env"]}

    assert env("validator")["DEFAULT_GPU_WORKLOAD_CONFIG"] == "vm-passthrough"  # else unlabelled nodes say container
    assert env("cc-manager")["DEFAULT_CC_MODE"] == "devtools"
    assert env("vfio-manager")["BIND_NVSWITCHES"] == "true"
    assert env("device-plugin")["P_GPU_ALIAS"] == "pgpu"
    for agent in ("validator", "vfio-manager", "cc-manager"):
        assert env(agent)["HOST_ROOT"] == "/host"
    for agent in ("kata-manager", "device-plugin"):
        command = containers[agent]["command"]
        assert command[command.index("--host-root") + 1] == "/host"
