"""Property tests: garbled sysfs values, bad addresses and escaping links give clear errors, never outside access.

File access is watched with a Python audit hook (`open`, `os.listdir`, `os.scandir` events), so a test fails if
any code path opens or lists a file outside the root, whatever API it went through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ccgpu.hw.pci import BDF, BDFError, SysfsFormatError, read_device, scan_devices
from ccgpu.hw.sysfs import PathEscapeError, Sysfs

_recorded: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _recorded is not None and event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            _recorded.append(os.fsdecode(path))


sys.addaudithook(_audit)


@contextlib.contextmanager
def accesses():
    """Collect every path opened or listed inside the block."""
    global _recorded
    _recorded = []
    try:
        yield _recorded
    finally:
        _recorded = None


def assert_all_inside(paths: list[str], root: Path) -> None:
    real_root = os.path.realpath(root)
    for p in paths:
        resolved = os.path.realpath(p)
        assert resolved == real_root or resolved.startswith(real_root + os.sep), f"accessed {p} outside {root}"


@contextlib.contextmanager
def host_tree(factory):
    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: small files ~20x faster than ext4
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        outside = Path(d) / "outside"
        (outside / "sys").mkdir(parents=True)
        (outside / "vendor").write_text("0x10de\n")
        yield factory(Path(d) / "root"), outside


STRICT = {
    "vendor": r"0x[0-9a-fA-F]{4}",
    "device": r"0x[0-9a-fA-F]{4}",
    "subsystem_device": r"0x[0-9a-fA-F]{4}",
    "class": r"0x[0-9a-fA-F]{6}",
    "revision": r"0x[0-9a-fA-F]{2}",
    "numa_node": r"-1|0|[1-9][0-9]{0,5}",
}

_attr_text = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"0x[0-9a-fA-F]{0,8}", fullmatch=True),
    st.sampled_from(["", "0x", "0x10de", "0x030200", "0xa1", "-1", "1", "0x10de\n", "\x00"]),
)


@settings(max_examples=100, deadline=None)
@given(attr=st.sampled_from(sorted(STRICT)), value=_attr_text)
def test_any_attribute_value_either_parses_strictly_or_raises_a_named_format_error(host_tree_factory, attr, value):
    with host_tree(host_tree_factory) as (host, _):
        b = host.device("0000:01:00.0")
        (host.root / f"sys/devices/pci0000:01/{b}/{attr}").write_bytes((value + "\n").encode("utf-8", "surrogatepass"))
        valid = re.fullmatch(STRICT[attr], value) is not None
        try:
            read_device(Sysfs(host.root), b)
        except SysfsFormatError as e:
            assert not valid, f"{value!r} is what the kernel writes to {attr}, yet was refused: {e}"
            assert "0000:01:00.0" in str(e) and attr in str(e)
        else:
            assert valid, f"{value!r} in {attr} was accepted"


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=24), st.sampled_from(["../../etc/passwd", "/etc", "0000:01:00.0/../../..",
                                                             "0000:01:00.0\x00", "..", "."])))
def test_any_address_text_is_parsed_or_refused_and_nothing_outside_the_root_is_touched(host_tree_factory, text):
    with host_tree(host_tree_factory) as (host, _):
        host.device("0000:01:00.0")
        fs = Sysfs(host.root)
        with accesses() as seen:
            try:
                dev = read_device(fs, text)
            except (BDFError, FileNotFoundError):
                pass
            else:
                assert dev.bdf == BDF.parse(text)
        assert_all_inside(seen, host.root)


_entry_name = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda n: n not in (".", ".."))
_link_target = st.one_of(
    st.builds(lambda n, tail: ("../" * n + tail) or ".", st.integers(0, 9), st.sampled_from(["", "outside", "etc", "sys"])),
    st.just("/"),
    st.sampled_from(["/etc", "/proc/self", "../../../devices/pci0000:00/0000:00:06.0"]),
)


@settings(max_examples=100, deadline=None)
@given(name=_entry_name, target=_link_target, as_bdf=st.booleans())
def test_hostile_pci_directory_entries_are_reported_and_never_followed_outside(host_tree_factory, name, target, as_bdf):
    with host_tree(host_tree_factory) as (host, outside):
        host.device("0000:01:00.0")
        entry = "0000:02:00.0" if as_bdf else name
        link = host.root / "sys/bus/pci/devices" / entry
        if not link.exists() and not link.is_symlink():
            os.symlink(target if target != "outside" else str(outside), link)
        with accesses() as seen:
            scan = scan_devices(Sysfs(host.root))
        assert_all_inside(seen, host.root)
        assert BDF.parse("0000:01:00.0") in [d.bdf for d in scan.devices]
        if not as_bdf:
            try:
                BDF.parse(entry)
            except BDFError:
                assert any(repr(entry) in e for e in scan.errors)


def test_escape_through_a_device_attribute_link_is_refused(host_tree_factory):
    with host_tree(host_tree_factory) as (host, outside):
        b = host.device("0000:01:00.0")
        attr = host.root / f"sys/devices/pci0000:01/{b}/vendor"
        attr.unlink()
        os.symlink(outside / "vendor", attr)
        with accesses() as seen:
            try:
                read_device(Sysfs(host.root), b)
            except PathEscapeError as e:
                assert "outside the root" in str(e)
            else:
                raise AssertionError("a vendor attribute linking outside the root was read")
        assert_all_inside(seen, host.root)


@settings(max_examples=100, deadline=None)
@given(release=st.one_of(st.text(max_size=20), st.sampled_from(["../../..", "6.8/../../../etc", "..", "/etc"])))
def test_any_kernel_release_text_is_refused_or_read_without_leaving_the_root(host_tree_factory, release):
    from ccgpu.hw.platform import read_platform

    with host_tree(host_tree_factory) as (host, _):
        rel = host.root / "proc/sys/kernel/osrelease"
        rel.parent.mkdir(parents=True, exist_ok=True)
        rel.write_bytes((release + "\n").encode("utf-8", "surrogatepass"))
        with accesses() as seen:
            try:
                facts = read_platform(Sysfs(host.root))
            except SysfsFormatError as e:
                assert "osrelease" in str(e)
            else:
                assert facts.kernel_release in (None, release.strip("\n") or None)
        assert_all_inside(seen, host.root)
