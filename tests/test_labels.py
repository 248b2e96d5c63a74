import pytest

from ccgpu import labels
from ccgpu.labels import CCMode, CCModeState, LabelValueError, Operand, WorkloadConfig


@pytest.mark.parametrize("value", ["on", "off", "devtools", "ppcie"])
def test_parse_cc_mode_accepts_nvidia_values(value):
    assert labels.parse_cc_mode(value) == CCMode(value)


@pytest.mark.parametrize("value", ["On", "ON", "enabled", "true", "", " on"])
def test_parse_cc_mode_rejects_and_names_accepted_values(value):
    with pytest.raises(LabelValueError) as e:
        labels.parse_cc_mode(value)
    assert "on, off, devtools, ppcie" in str(e.value)
    assert repr(value) in str(e.value)


def test_missing_cc_mode_says_missing():
    with pytest.raises(LabelValueError, match="missing"):
        labels.parse_cc_mode(None)


def test_workload_config_kata_is_rejected_gpu_operator_1871():
    """gpu-operator#1871: users label `kata`; we say which values exist instead of silently using container."""
    with pytest.raises(LabelValueError, match="container, vm-passthrough, vm-vgpu"):
        labels.parse_workload_config("kata")
    assert labels.parse_workload_config("vm-passthrough") is WorkloadConfig.VM_PASSTHROUGH


def test_deploy_label_keys_are_nvidias():
    assert labels.deploy_label(Operand.VFIO_MANAGER) == "nvidia.com/gpu.deploy.vfio-manager"
    assert labels.deploy_label("cc-manager") == "nvidia.com/gpu.deploy.cc-manager"
    with pytest.raises(ValueError):
        labels.deploy_label("not-an-operand")


def test_cc_switch_pauses_kata_device_plugin_which_nvidia_forgets():
    """operands.md §2: k8s-cc-manager's pause list lacks kata-sandbox-device-plugin."""
    assert Operand.KATA_SANDBOX_DEVICE_PLUGIN in labels.CC_SWITCH_PAUSED_OPERANDS
    assert Operand.CC_MANAGER not in labels.CC_SWITCH_PAUSED_OPERANDS


@pytest.mark.parametrize(
    "state,ready",
    [(CCModeState.ON, "true"), (CCModeState.PPCIE, "true"), (CCModeState.OFF, "false"),
     (CCModeState.DEVTOOLS, ""), (CCModeState.FAILED, "")],
)
def test_cc_ready_state_follows_k8s_cc_manager(state, ready):
    assert labels.cc_ready_state(state) == ready
