"""Pure containerd TOML decisions: version detection, drop-in rendering, imports editing."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccgpu.agents.containerd_toml import (
    ContainerdConfigError,
    add_import,
    config_version,
    conflicting_runtimes,
    cri_section,
    import_covering,
    import_entry,
    kata_runtimes,
    parse_config,
    parse_runtime_version,
    remove_import,
    render_dropin,
    runtime_version_findings,
)

KATA_DIR = "/opt/kata/share/defaults/kata-containers"


def _version_of(text: str) -> int:
    return config_version(parse_config(text, "main.toml"), "main.toml")


@pytest.mark.parametrize("text,version", [("version = 2\n", 2), ("# c\nversion = 3\n[plugins]\n", 3)])
def test_version_is_read_from_the_main_file(text: str, version: int) -> None:
    assert _version_of(text) == version


@pytest.mark.parametrize(
    "text,needle",
    [
        ("root = '/x'\n", "no `version` key"),
        ("version = 1\n", "version = 1"),
        ("version = 4\n", "version = 4"),
        ("version = '2'\n", "version = '2'"),
        ("version = true\n", "version = True"),
    ],
)
def test_unknown_or_missing_version_is_refused_naming_the_accepted_ones(text: str, needle: str) -> None:
    with pytest.raises(ContainerdConfigError) as e:
        _version_of(text)
    assert needle in str(e.value)
    assert "`version = 2` (containerd 1.6/1.7) or `version = 3` (containerd 2.x)" in str(e.value)


def test_non_toml_main_file_is_refused_with_the_parse_error() -> None:
    with pytest.raises(ContainerdConfigError, match=r"main.toml is not valid TOML"):
        parse_config("version = 2\n[plugins\n", "main.toml")


@pytest.mark.parametrize(
    "name,runtime_type,config",
    [
        (
            "kata-qemu-nvidia-gpu",
            "io.containerd.kata-qemu-nvidia-gpu.v2",
            "configuration-qemu-nvidia-gpu.toml",
        ),
        (
            "kata-qemu-nvidia-gpu-snp",
            "io.containerd.kata-qemu-nvidia-gpu-snp.v2",
            "configuration-qemu-nvidia-gpu-snp.toml",
        ),
        (
            "kata-qemu-nvidia-gpu-tdx",
            "io.containerd.kata-qemu-nvidia-gpu-tdx.v2",
            "configuration-qemu-nvidia-gpu-tdx.toml",
        ),
    ],
)
def test_each_runtime_class_maps_to_its_shim_and_kata_config(
    name: str, runtime_type: str, config: str
) -> None:
    (rt,) = kata_runtimes([name], KATA_DIR)
    assert rt.runtime_type == runtime_type
    assert rt.config_path == f"{KATA_DIR}/{config}"
    assert rt.table()["privileged_without_host_devices"] is True
    assert rt.table()["pod_annotations"] == ["io.katacontainers.*"]


@pytest.mark.parametrize(
    "classes,kata_dir,needle",
    [
        (
            ["kata-nvidia-gpu"],
            KATA_DIR,
            "unknown runtime class(es) 'kata-nvidia-gpu'; accepted: kata-qemu-nvidia-gpu",
        ),
        ([], KATA_DIR, "no runtime classes requested"),
        (["kata-qemu-nvidia-gpu"], "opt/kata", "must be an absolute host path"),
        (["kata-qemu-nvidia-gpu"], "/opt/../etc", "must be a normalised file path"),
    ],
)
def test_bad_runtime_requests_are_refused_with_what_is_accepted(
    classes: list[str], kata_dir: str, needle: str
) -> None:
    with pytest.raises(ContainerdConfigError) as e:
        kata_runtimes(classes, kata_dir)
    assert needle in str(e.value)


def test_runtime_entries_name_kata_deploys_shim_binary_by_default() -> None:
    """Reference §C: without `runtime_path`, containerd runs `containerd-shim-<handler>-v2` from its PATH;
    kata-deploy installs one shim under /opt/kata and sets `runtime_path` to it."""
    (rt,) = kata_runtimes(["kata-qemu-nvidia-gpu-snp"], KATA_DIR)
    assert rt.table()["runtime_path"] == "/opt/kata/bin/containerd-shim-kata-v2"
    (on_path,) = kata_runtimes(["kata-qemu-nvidia-gpu-snp"], KATA_DIR, shim_path="")
    assert "runtime_path" not in on_path.table()


@pytest.mark.parametrize("shim", ["containerd-shim-kata-v2", "/opt/kata/../bin/shim", "/opt/kata/bin/"])
def test_a_relative_or_unnormalised_shim_path_is_refused(shim: str) -> None:
    with pytest.raises(ContainerdConfigError, match="kata shim path"):
        kata_runtimes(["kata-qemu-nvidia-gpu"], KATA_DIR, shim_path=shim)


def test_version3_dropin_uses_the_cri_v1_runtime_plugin_and_only_ccgpu_keys() -> None:
    """Reference §C: v3 runtimes and enable_cdi live under plugins."io.containerd.cri.v1.runtime"."""
    main = parse_config(
        'version = 3\n[plugins."io.containerd.cri.v1.runtime"]\n  enable_selinux = true\n', "main.toml"
    )
    runtimes = kata_runtimes(["kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx"], KATA_DIR)
    dropin = tomllib.loads(render_dropin(3, runtimes, cri_section(main, 3)))
    assert dropin["version"] == 3
    assert list(dropin["plugins"]) == ["io.containerd.cri.v1.runtime"]
    cri = dropin["plugins"]["io.containerd.cri.v1.runtime"]
    assert cri["enable_cdi"] is True
    assert "enable_selinux" not in cri  # containerd 2.x merges imports key by key: no copy needed
    snp = cri["containerd"]["runtimes"]["kata-qemu-nvidia-gpu-snp"]
    assert snp == {
        "runtime_type": "io.containerd.kata-qemu-nvidia-gpu-snp.v2",
        "runtime_path": "/opt/kata/bin/containerd-shim-kata-v2",
        "privileged_without_host_devices": True,
        "pod_annotations": ["io.katacontainers.*"],
        "options": {"ConfigPath": f"{KATA_DIR}/configuration-qemu-nvidia-gpu-snp.toml"},
    }
    assert set(cri["containerd"]["runtimes"]) == {"kata-qemu-nvidia-gpu-snp", "kata-qemu-nvidia-gpu-tdx"}


def test_version2_dropin_carries_the_main_files_whole_cri_section() -> None:
    """containerd 1.x replaces a plugin section wholesale on import (containerd#5837): the drop-in must repeat
    the main file's CRI settings or the node silently loses SystemdCgroup, sandbox_image, runc."""
    main = parse_config(
        """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
""",
        "main.toml",
    )
    cri = tomllib.loads(
        render_dropin(2, kata_runtimes(["kata-qemu-nvidia-gpu"], KATA_DIR), cri_section(main, 2))
    )["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.example/pause:3.9"
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {"SystemdCgroup": True}
    assert cri["containerd"]["runtimes"]["kata-qemu-nvidia-gpu"]["runtime_type"] == (
        "io.containerd.kata-qemu-nvidia-gpu.v2"
    )
    assert cri["enable_cdi"] is True


GOLDEN_V3_DROPIN = """\
# Written by ccgpu (kata-manager).
# `ccgpu agent containerd-config cleanup` removes it and restores the main file.
version = 3

[plugins."io.containerd.cri.v1.runtime"]
enable_cdi = true

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu-snp]
runtime_type = "io.containerd.kata-qemu-nvidia-gpu-snp.v2"
runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"
privileged_without_host_devices = true
pod_annotations = ["io.katacontainers.*"]

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu-snp.options]
ConfigPath = "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu-snp.toml"
"""


def test_the_rendered_dropin_is_byte_for_byte_the_known_text() -> None:
    """An unchanged input must rewrite no byte, across tomlkit releases too (CI runs this with the oldest and
    the newest): a changed rendering would rewrite every node's drop-in and restart containerd."""
    runtimes = kata_runtimes(["kata-qemu-nvidia-gpu-snp"], KATA_DIR)
    assert render_dropin(3, runtimes, {}) == GOLDEN_V3_DROPIN


def test_existing_runtime_with_other_shim_is_a_conflict_and_an_identical_one_is_not() -> None:
    rt = kata_runtimes(["kata-qemu-nvidia-gpu"], KATA_DIR)
    other = {"containerd": {"runtimes": {"kata-qemu-nvidia-gpu": {"runtime_type": "io.containerd.kata.v2"}}}}
    (problem,) = conflicting_runtimes(other, rt)
    assert "runtime 'kata-qemu-nvidia-gpu' already has runtime_type='io.containerd.kata.v2'" in problem
    same = {"containerd": {"runtimes": {"kata-qemu-nvidia-gpu": rt[0].table()}}}
    assert conflicting_runtimes(same, rt) == []


@pytest.mark.parametrize(
    "main,dropin,entry",
    [
        ("/etc/containerd/config.toml", "/etc/containerd/conf.d/ccgpu-kata.toml", "conf.d/ccgpu-kata.toml"),
        ("/etc/containerd/config.toml", "/opt/ccgpu/containerd.toml", "/opt/ccgpu/containerd.toml"),
    ],
)
def test_import_entry_is_relative_to_the_main_file_when_beneath_it(
    main: str, dropin: str, entry: str
) -> None:
    assert import_entry(main, dropin) == entry


@pytest.mark.parametrize(
    "imports,covered",
    [
        ('["/etc/containerd/conf.d/*.toml"]', "/etc/containerd/conf.d/*.toml"),  # containerd 2.2's default
        ('["conf.d/*.toml"]', None),  # containerd 1.6 globs a relative pattern against its cwd
        ('["conf.d/ccgpu-kata.toml"]', "conf.d/ccgpu-kata.toml"),
        ('["/etc/containerd/conf.d/ccgpu-kata.tom?"]', None),  # only `*` makes a glob for containerd
        ('["/etc/containerd/conf.d/ccgpu-kata.toml"]', "/etc/containerd/conf.d/ccgpu-kata.toml"),
        ('["/etc/containerd/*.toml"]', None),  # `*` never crosses a `/` (Go filepath.Match)
        ('["/etc/containerd/conf.d/*.conf"]', None),
        ("[]", None),
    ],
)
def test_an_existing_import_that_loads_the_dropin_is_recognised(imports: str, covered: str | None) -> None:
    doc = parse_config(f"version = 3\nimports = {imports}\n", "main.toml")
    assert (
        import_covering(doc, "/etc/containerd/config.toml", "/etc/containerd/conf.d/ccgpu-kata.toml", "m")
        == covered
    )


def test_imports_that_are_not_a_list_of_strings_are_refused() -> None:
    with pytest.raises(ContainerdConfigError, match="`imports` must be a list of path strings"):
        add_import("version = 2\nimports = 'x.toml'\n", "conf.d/a.toml", "main.toml")


MAIN_WITH_COMMENTS = """# Managed by the node image; local changes below.
version = 2
root = "/var/lib/containerd"  # where images live

# CRI
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example/pause:3.9"   # pinned
"""


def test_adding_the_import_changes_one_line_and_keeps_comments_and_order() -> None:
    edited = add_import(MAIN_WITH_COMMENTS, "conf.d/ccgpu-kata.toml", "main.toml")
    before, after = MAIN_WITH_COMMENTS.splitlines(), edited.splitlines()
    assert after == before[:2] + ['imports = ["conf.d/ccgpu-kata.toml"]'] + before[2:]


@pytest.mark.parametrize(
    "text,edited",
    [
        ("version = 2\n", 'version = 2\nimports = ["conf.d/ccgpu-kata.toml"]\n'),  # version is the last line
        ("version = 3 # v\n[x]\n", 'version = 3 # v\nimports = ["conf.d/ccgpu-kata.toml"]\n[x]\n'),
    ],
)
def test_a_new_imports_key_goes_right_after_version(text: str, edited: str) -> None:
    assert add_import(text, "conf.d/ccgpu-kata.toml", "main.toml") == edited


def test_adding_to_an_existing_imports_list_appends_and_is_idempotent() -> None:
    text = 'version = 3\nimports = ["/etc/site/*.toml"] # site\n[x]\ny = 1\n'
    edited = add_import(text, "conf.d/ccgpu-kata.toml", "main.toml")
    assert (
        edited == 'version = 3\nimports = ["/etc/site/*.toml", "conf.d/ccgpu-kata.toml"] # site\n[x]\ny = 1\n'
    )
    assert add_import(edited, "conf.d/ccgpu-kata.toml", "main.toml") == edited


@given(
    others=st.lists(
        st.from_regex(r"/etc/[a-z]{1,8}/[a-z*]{1,8}\.toml", fullmatch=True), max_size=3, unique=True
    )
)
def test_remove_import_undoes_add_import(others: list[str]) -> None:
    text = MAIN_WITH_COMMENTS.replace(
        "version = 2\n", f"version = 2\nimports = {others!r}\n".replace("'", '"')
    )
    edited = add_import(text, "conf.d/ccgpu-kata.toml", "main.toml")
    assert tomllib.loads(edited)["imports"] == [*others, "conf.d/ccgpu-kata.toml"]
    assert remove_import(edited, "conf.d/ccgpu-kata.toml", "main.toml", drop_empty=False) == text


def test_remove_import_drops_the_key_ccgpu_created() -> None:
    edited = add_import(MAIN_WITH_COMMENTS, "conf.d/ccgpu-kata.toml", "main.toml")
    assert remove_import(edited, "conf.d/ccgpu-kata.toml", "main.toml", drop_empty=True) == MAIN_WITH_COMMENTS


@pytest.mark.parametrize(
    "text,parsed",
    [
        ("containerd://1.7.2", (1, 7)),
        ("containerd://2.1.5-k3s1", (2, 1)),
        ("1.6.20~ds1", (1, 6)),
        ("v2.0.0", (2, 0)),
    ],
)
def test_runtime_versions_from_node_info_are_understood(text: str, parsed: tuple[int, int]) -> None:
    assert parse_runtime_version(text) == parsed


@pytest.mark.parametrize("text", ["cri-o://1.30.0", "containerd", "latest", ""])
def test_unknown_runtime_version_text_is_refused(text: str) -> None:
    with pytest.raises(ContainerdConfigError, match="is not understood; accepted: 'containerd://1.7.2'"):
        parse_runtime_version(text)


def test_a_version3_file_for_containerd_1x_is_refused_because_1x_ignores_it() -> None:
    with pytest.raises(ContainerdConfigError, match="containerd 1.7 reads only versions 1 and 2"):
        runtime_version_findings(3, (1, 7), "main.toml")


def test_containerd_16_without_cdi_is_a_warning_and_17_is_not() -> None:
    assert "has no CDI support" in runtime_version_findings(2, (1, 6), "main.toml")[0]
    assert runtime_version_findings(2, (1, 7), "main.toml") == []
    assert runtime_version_findings(3, (2, 1), "main.toml") == []


def test_a_main_file_ccgpu_cannot_edit_in_place_is_refused_with_what_to_do() -> None:
    # the key is `version`, spelled with an escape: ccgpu does not guess where that line is
    with pytest.raises(ContainerdConfigError, match="add it to `imports` by hand, or import the drop-in's"):
        add_import('"vers\\u0069on" = 2\n', "conf.d/ccgpu-kata.toml", "main.toml")


def test_imports_goes_after_version_even_when_other_keys_come_first() -> None:
    text = 'root = "/r"\n\nversion = 2  # schema\n\n[plugins.x]\n'
    edited = add_import(text, "conf.d/ccgpu-kata.toml", "main.toml")
    assert edited == 'root = "/r"\n\nversion = 2  # schema\nimports = ["conf.d/ccgpu-kata.toml"]\n\n[plugins.x]\n'
    assert remove_import(edited, "conf.d/ccgpu-kata.toml", "main.toml", drop_empty=True) == text
