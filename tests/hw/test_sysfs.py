import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccgpu.hw.sysfs import PathEscapeError, Sysfs, _resolve_below


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sys/bus/pci/devices").mkdir(parents=True)
    (r / "sys/attr").write_text("0x10de\n")
    (tmp_path / "secret").write_text("outside")
    return r


def test_read_strips_the_trailing_newline_sysfs_adds(root):
    assert Sysfs(root).read("sys/attr") == "0x10de"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../secret", "sys/../../secret", "sys/\x00x"])
def test_paths_leaving_the_root_are_refused_before_any_access(root, bad):
    with pytest.raises(PathEscapeError):
        Sysfs(root).read(bad)
    assert not Sysfs(root).exists(bad)


def test_symlink_pointing_outside_the_root_is_refused(root, tmp_path):
    os.symlink(tmp_path / "secret", root / "sys/evil")
    os.symlink("../../secret", root / "sys/evil-rel")
    for link in ("sys/evil", "sys/evil-rel"):
        with pytest.raises(PathEscapeError, match="outside the root"):
            Sysfs(root).read(link)


def test_symlink_inside_the_root_resolves(root):
    (root / "sys/devices/pci0000:00/0000:00:06.0").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:06.0", root / "sys/bus/pci/devices/0000:00:06.0")
    fs = Sysfs(root)
    assert fs.realpath("sys/bus/pci/devices/0000:00:06.0") == "sys/devices/pci0000:00/0000:00:06.0"
    assert fs.readlink("sys/bus/pci/devices/0000:00:06.0").startswith("../")


def test_write_to_missing_attribute_is_enoent_like_the_kernel(root):
    with pytest.raises(OSError) as e:
        Sysfs(root).write("sys/nope", "1")
    assert e.value.errno == errno.ENOENT
    assert not (root / "sys/nope").exists()


def test_write_file_is_atomic_and_leaves_no_temp_files(root):
    fs = Sysfs(root)
    fs.write_file("run/nvidia/validations/workload-type", "vm-passthrough")
    fs.write_file("run/nvidia/validations/workload-type", "container")
    assert fs.read("run/nvidia/validations/workload-type") == "container"
    assert fs.listdir("run/nvidia/validations") == ["workload-type"]


def test_write_file_syncs_the_file_and_then_its_directory_so_the_rename_survives_a_power_cut(root, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    Sysfs(root).write_file("run/ccgpu/intent.json", "{}")
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(".intent.json.")  # the temp file's data, before the rename
    assert synced[1] == os.path.realpath(root / "run/ccgpu")  # then the directory holding the new name


def test_readlink_of_a_link_to_outside_returns_the_target_without_following_it(root):
    """/proc/<pid>/fd/<n> links point at /dev/vfio/<group>: readable as text, never opened."""
    (root / "proc/42/fd").mkdir(parents=True)
    os.symlink("/dev/vfio/12", root / "proc/42/fd/7")
    fs = Sysfs(root)
    assert fs.readlink("proc/42/fd/7") == "/dev/vfio/12"
    assert fs.exists("proc/42/fd/7") and fs.is_link("proc/42/fd/7")
    with pytest.raises(PathEscapeError):
        fs.read("proc/42/fd/7")


# --- the resolver: realpath's answer, looking only below the root -----------------------------------------

_NAMES = ("a", "b", "l1", "l2", "abs", "loop", "gone")


def _tree(base) -> str:
    """dirs a/, a/b/; links to siblings, to parents, to outside (absolute), a dangling one, a loop."""
    root = base / "root"
    (root / "a" / "b").mkdir(parents=True)
    (base / "outside").mkdir()
    (root / "a" / "b" / "f").write_text("x\n")
    os.symlink("a/b", root / "l1")
    os.symlink("../l1", root / "a" / "l2")
    os.symlink(str(base / "outside"), root / "abs")
    os.symlink("loop", root / "loop")
    os.symlink("nowhere", root / "gone")
    return os.path.realpath(root)


@given(st.lists(st.sampled_from((*_NAMES, "f")), min_size=1, max_size=5))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_resolving_below_the_root_gives_what_realpath_gives(tmp_path_factory, parts):
    root = _tree(tmp_path_factory.mktemp("t"))
    try:
        expected = os.path.realpath(os.path.join(root, *parts))
    except OSError:  # a loop: realpath (non-strict) stops too; both must agree there is no answer inside
        return
    try:
        got = _resolve_below(root, parts)
    except OSError as e:
        assert e.errno == errno.ELOOP
        return
    assert got == expected


def test_read_in_checks_a_link_in_place_of_an_attribute(root, tmp_path):
    fs = Sysfs(root)
    (root / "dev").mkdir()
    (root / "dev" / "vendor").write_text("0x10de\n")
    secret = tmp_path / "secret"
    secret.write_text("no\n")
    os.symlink(secret, root / "dev" / "class")
    assert fs.read_in("dev", "vendor") == b"0x10de\n"
    with pytest.raises(PathEscapeError):
        fs.read_in("dev", "class")
    with pytest.raises(PathEscapeError):
        fs.read_in("dev", "../dev/vendor")


def test_a_sibling_directory_whose_name_starts_with_the_roots_is_outside(root, tmp_path):
    """`/host` must not admit `/hostile`: the check is by path component, not by string prefix."""
    sibling = tmp_path / (root.name + "evil")
    sibling.mkdir()
    (sibling / "secret").write_text("outside")
    os.symlink(sibling / "secret", root / "sys/abs-sibling")
    os.symlink(f"../../{sibling.name}/secret", root / "sys/rel-sibling")
    fs = Sysfs(root)
    for link in ("sys/abs-sibling", "sys/rel-sibling"):
        with pytest.raises(PathEscapeError, match="outside the root"):
            fs.read(link)
    with pytest.raises(PathEscapeError, match="outside the root"):
        fs.relative(sibling / "secret")


def test_lstat_like_calls_still_resolve_the_parent_directory(root, tmp_path):
    """readlink/exists/remove do not follow the last component, but a link *above* it is followed and checked:
    `sys/out/secret` through a link `sys/out -> <outside>` is refused and the outside file is untouched."""
    os.symlink(tmp_path, root / "sys/out")
    fs = Sysfs(root)
    with pytest.raises(PathEscapeError, match="outside the root"):
        fs.remove("sys/out/secret")
    with pytest.raises(PathEscapeError, match="outside the root"):
        fs.readlink("sys/out/secret")
    assert not fs.exists("sys/out/secret") and not fs.is_link("sys/out/secret")
    assert (tmp_path / "secret").read_text() == "outside"
