import pytest

from ccgpu import labels
from ccgpu.agents.cc_switch import (
    Device,
    Intent,
    Step,
    cc_capable_label,
    decide_mode,
    pause_patch,
    plan_switch,
    restore_patch,
)
from ccgpu.labels import CCMode

H100 = [Device(f"0000:{b:02x}:00.0", "H100", False, True, True) for b in (0x18, 0x2A)]
SWITCHES = [Device(f"0000:{b:02x}:00.0", "H100 NVSwitch", True, False, True) for b in (0x05, 0x06)]
A100 = Device("0000:3a:00.0", "A100", False, False, False)
B200 = [Device("0000:1b:00.0", "B200", False, True, False)]


@pytest.mark.parametrize(
    "label,default,tee,devices,mode,error",
    [
        (None, "on", True, H100, CCMode.ON, None),
        ("devtools", "on", True, H100, CCMode.DEVTOOLS, None),
        ("off", "on", False, H100, CCMode.OFF, None),
        ("On", "on", True, H100, None, "accepted values: on, off, devtools, ppcie"),
        ("enabled", "off", True, H100, None, "'enabled' is not valid"),
        ("on", "off", False, H100, None, "neither SEV-SNP nor TDX"),
        ("on", "off", True, [*H100, A100], None, "not capable: 0000:3a:00.0 (A100)"),
        ("ppcie", "on", True, H100, None, "no NVSwitch"),
        ("ppcie", "on", True, H100 + SWITCHES, CCMode.PPCIE, None),
        ("ppcie", "on", True, B200 + SWITCHES, None, "not capable: 0000:1b:00.0 (B200)"),
        (None, "ppcie", True, H100 + SWITCHES, None, "DEFAULT_CC_MODE may not be ppcie"),
        (None, "bogus", True, H100, None, "DEFAULT_CC_MODE"),
    ],
)
def test_decide_mode_table(label, default, tee, devices, mode, error):
    d = decide_mode(label, default, host_tee=tee, devices=devices)
    assert d.mode == mode
    if error:
        assert error in d.error
    else:
        assert d.error is None


def test_default_on_without_tee_is_forced_off_with_a_warning():
    d = decide_mode(None, "on", host_tee=False, devices=H100)
    assert d.mode is CCMode.OFF and d.source == "default"
    assert "forced to 'off'" in d.warnings[0]


def test_h200_and_blackwell_are_not_refused_by_an_id_allowlist_gpu_operator_1851():
    h200 = [Device("0000:18:00.0", "H200", False, True, True)]
    assert decide_mode("on", "off", host_tee=True, devices=h200).mode is CCMode.ON
    assert decide_mode("on", "off", host_tee=True, devices=B200).mode is CCMode.ON


def test_cc_capable_label_needs_tee_and_all_gpus_capable():
    assert cc_capable_label(host_tee=True, devices=H100 + SWITCHES) == "true"
    assert cc_capable_label(host_tee=False, devices=H100) == "false"
    assert cc_capable_label(host_tee=True, devices=[*H100, A100]) == "false"
    assert cc_capable_label(host_tee=True, devices=[]) == "false"


def test_pause_rewrites_true_and_custom_values_and_leaves_false_alone():
    node = {
        "nvidia.com/gpu.deploy.vfio-manager": "true",
        "nvidia.com/gpu.deploy.sandbox-validator": "custom",
        "nvidia.com/gpu.deploy.kata-sandbox-device-plugin": "true",
        "nvidia.com/gpu.deploy.vgpu-manager": "false",
        "nvidia.com/gpu.deploy.cc-manager": "true",
    }
    patch, saved = pause_patch(node)
    assert patch == {
        "nvidia.com/gpu.deploy.vfio-manager": labels.PAUSED_FOR_CC,
        "nvidia.com/gpu.deploy.sandbox-validator": "custom_" + labels.PAUSED_FOR_CC,
        "nvidia.com/gpu.deploy.kata-sandbox-device-plugin": labels.PAUSED_FOR_CC,
    }
    assert saved == {k: node[k] for k in patch}
    assert restore_patch({**node, **patch}, saved) == saved


def test_pausing_again_after_a_crash_records_nothing_twice():
    node = {"nvidia.com/gpu.deploy.vfio-manager": labels.PAUSED_FOR_CC}
    assert pause_patch(node) == ({}, {})


def test_restore_leaves_labels_someone_else_changed_meanwhile():
    saved = {"nvidia.com/gpu.deploy.vfio-manager": "true", "nvidia.com/gpu.deploy.sandbox-validator": "true"}
    node = {"nvidia.com/gpu.deploy.vfio-manager": labels.PAUSED_FOR_CC}  # validator label removed by the operator
    assert restore_patch(node, saved) == {"nvidia.com/gpu.deploy.vfio-manager": "true"}


def test_intent_roundtrip_and_garbled_intent_names_the_expected_shape():
    i = Intent("on", {"nvidia.com/gpu.deploy.vfio-manager": "true"}, phase="applying")
    assert Intent.from_annotation(i.to_annotation()) == i
    with pytest.raises(ValueError, match="expected JSON"):
        Intent.from_annotation("{not json")
    with pytest.raises(ValueError, match="expected JSON"):
        Intent.from_annotation('{"phase": "applying"}')


def test_plan_touches_only_devices_not_in_the_target_mode():
    a, b = (d.bdf for d in H100)
    assert plan_switch(CCMode.ON, cc={a: "on", b: "off"}, ppcie={}, devices=H100) == [
        Step("apply-cc", (b,), "on"),
    ]
    assert plan_switch(CCMode.ON, cc={a: "on", b: "on"}, ppcie={a: "off", b: "off"}, devices=H100) == []


def test_plan_leaving_ppcie_turns_it_off_first_on_gpus_and_switches():
    devs = H100 + SWITCHES
    all_bdfs = tuple(d.bdf for d in devs)
    gpus = tuple(d.bdf for d in H100)
    steps = plan_switch(CCMode.ON, cc=dict.fromkeys(gpus, "off"), ppcie=dict.fromkeys(all_bdfs, "on"), devices=devs)
    assert steps == [
        Step("apply-ppcie", all_bdfs, "off"), Step("apply-cc", gpus, "on"),
    ]


def test_plan_entering_ppcie_turns_cc_off_first():
    devs = H100 + SWITCHES
    all_bdfs = tuple(d.bdf for d in devs)
    gpus = tuple(d.bdf for d in H100)
    steps = plan_switch(CCMode.PPCIE, cc=dict.fromkeys(gpus, "on"), ppcie=dict.fromkeys(all_bdfs, "off"), devices=devs)
    assert steps == [
        Step("apply-cc", gpus, "off"), Step("apply-ppcie", all_bdfs, "on"),
    ]


def test_paused_app_names_are_the_operand_daemonsets_pod_app_labels():
    """The kata device plugin is among them (k8s-cc-manager forgets it: operands.md §2 defects)."""
    from ccgpu.agents.cc_switch import paused_app_names

    names = paused_app_names()
    assert "nvidia-kata-sandbox-device-plugin-daemonset" in names
    assert "nvidia-sandbox-device-plugin-daemonset" in names
    assert "nvidia-vfio-manager" in names and len(names) == len(set(names)) == 7


def test_plan_entering_ppcie_turns_off_gpus_in_devtools_too():
    """PPCIe needs CC fully off: a GPU in `devtools` (a CC mode) is switched off first, like one in `on`."""
    devs = H100 + SWITCHES
    a, b = (d.bdf for d in H100)
    all_bdfs = tuple(d.bdf for d in devs)
    steps = plan_switch(
        CCMode.PPCIE, cc={a: "devtools", b: "off"}, ppcie=dict.fromkeys(all_bdfs, "off"), devices=devs
    )
    assert steps == [Step("apply-cc", (a,), "off"), Step("apply-ppcie", all_bdfs, "on")]


def test_ppcie_is_refused_when_an_nvswitch_is_not_ppcie_capable():
    """Every device must be PPCIe-capable, switches included, not only the GPUs."""
    old_switch = Device("0000:07:00.0", "A100 NVSwitch", True, False, False)
    d = decide_mode("ppcie", "on", host_tee=True, devices=[*H100, *SWITCHES, old_switch])
    assert d.mode is None
    assert "not capable: 0000:07:00.0 (A100 NVSwitch)" in d.error


def test_restore_leaves_a_label_someone_set_to_another_value():
    saved = {"nvidia.com/gpu.deploy.vfio-manager": "true", "nvidia.com/gpu.deploy.sandbox-validator": "custom"}
    node = {
        "nvidia.com/gpu.deploy.vfio-manager": "false",  # an admin turned it off during the switch
        "nvidia.com/gpu.deploy.sandbox-validator": "custom_" + labels.PAUSED_FOR_CC,
    }
    assert restore_patch(node, saved) == {"nvidia.com/gpu.deploy.sandbox-validator": "custom"}
