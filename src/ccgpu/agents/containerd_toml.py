"""Pure decisions about containerd's TOML: which schema a main file uses, what ccgpu's drop-in says, and how
the main file's `imports` list gains or loses the drop-in. No file access here (see `agents/containerd.py`).

Two containerd facts shape the drop-in (reference/protocols.md §C):

- Version 2 files (containerd 1.6/1.7) put the CRI runtimes under `plugins."io.containerd.grpc.v1.cri"`,
  version 3 files (containerd 2.x) under `plugins."io.containerd.cri.v1.runtime"`.
- containerd before 2.0 merges an imported file **per plugin section**, not per key: a drop-in that names
  `plugins."io.containerd.grpc.v1.cri"` replaces the main file's whole CRI section, silently dropping its
  `SystemdCgroup`, `sandbox_image`, runc runtime and the rest (containerd#5837, #7982; fixed in 2.0 by #9982).
  So a version-2 drop-in carries the main file's CRI section plus ccgpu's runtimes, and a version-3 drop-in
  carries only ccgpu's keys.
"""

from __future__ import annotations

import copy
import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items

from ccgpu import labels

SUPPORTED_VERSIONS = (2, 3)
CRI_RUNTIME_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
DEFAULT_POD_ANNOTATIONS = ("io.katacontainers.*",)
# kata-deploy's layout: one shim binary under /opt/kata serves every handler (reference/protocols.md §C).
DEFAULT_SHIM_PATH = "/opt/kata/bin/containerd-shim-kata-v2"
CDI_SPEC_DIR = "/var/run/cdi"
DROPIN_MARKER = "# Written by ccgpu (kata-manager)."


class ContainerdConfigError(ValueError):
    """A containerd config ccgpu will not touch, with what was wrong and what is accepted."""


@dataclass(frozen=True)
class KataRuntime:
    """One containerd runtime entry for a Kata RuntimeClass handler."""

    name: str
    config_path: str
    pod_annotations: tuple[str, ...] = DEFAULT_POD_ANNOTATIONS
    privileged_without_host_devices: bool = True
    runtime_path: str | None = DEFAULT_SHIM_PATH

    @property
    def runtime_type(self) -> str:
        """`io.containerd.<handler>.v2`: without `runtime_path`, containerd runs `containerd-shim-<handler>-v2`
        from its PATH, which a kata-deploy install does not provide; `runtime_path` names the shim instead."""
        return f"io.containerd.{self.name}.v2"

    def table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"runtime_type": self.runtime_type}
        if self.runtime_path:
            table["runtime_path"] = self.runtime_path
        table.update(
            privileged_without_host_devices=self.privileged_without_host_devices,
            pod_annotations=list(self.pod_annotations),
            options={"ConfigPath": self.config_path},
        )
        return table


def kata_runtimes(
    runtime_classes: Iterable[str],
    kata_config_dir: str,
    pod_annotations: Iterable[str] = DEFAULT_POD_ANNOTATIONS,
    shim_path: str | None = DEFAULT_SHIM_PATH,
) -> list[KataRuntime]:
    """The runtime entries for the requested RuntimeClass handlers, in request order, duplicates dropped.

    Kata's shim config for handler `kata-<shim>` is `<kata_config_dir>/configuration-<shim>.toml` (kata-deploy's
    layout, e.g. `configuration-qemu-nvidia-gpu-snp.toml`). `shim_path` becomes each entry's `runtime_path`
    (kata-deploy's `/opt/kata/bin/containerd-shim-kata-v2` by default); None or "" leaves it out, for hosts
    whose `containerd-shim-<handler>-v2` binaries are on containerd's PATH.
    """
    names = list(dict.fromkeys(runtime_classes))
    if not names:
        raise ContainerdConfigError(
            f"no runtime classes requested; accepted: {', '.join(labels.RUNTIME_CLASSES)}"
        )
    unknown = [n for n in names if n not in labels.RUNTIME_CLASSES]
    if unknown:
        raise ContainerdConfigError(
            f"unknown runtime class(es) {', '.join(map(repr, unknown))}; accepted: {', '.join(labels.RUNTIME_CLASSES)}"
        )
    check_host_path(kata_config_dir, "kata config dir")
    if shim_path:
        check_host_path(shim_path, "kata shim path")
    annotations = tuple(pod_annotations)
    bad = [a for a in annotations if not a or any(c.isspace() for c in a)]
    if bad:
        raise ContainerdConfigError(f"pod annotation globs must be non-empty and without spaces, got {bad!r}")
    return [
        KataRuntime(
            name=n,
            config_path=posixpath.join(kata_config_dir, f"configuration-{n.removeprefix('kata-')}.toml"),
            pod_annotations=annotations,
            runtime_path=shim_path or None,
        )
        for n in names
    ]


def check_host_path(path: str, what: str) -> str:
    """A host path must be absolute and normalised (it is written into containerd's config verbatim)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise ContainerdConfigError(
            f"{what} {path!r} must be an absolute host path such as /etc/containerd/..."
        )
    if posixpath.normpath(path) != path or path == "/":
        raise ContainerdConfigError(
            f"{what} {path!r} must be a normalised file path (no '..', '//', trailing '/')"
        )
    return path


# --- the main file ---------------------------------------------------------------------------------------
def parse_config(text: str, where: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise ContainerdConfigError(
            f"{where} is not valid TOML ({e}); fix it before ccgpu adds its drop-in"
        ) from e


def config_version(doc: Mapping[str, Any], where: str) -> int:
    """The schema version the file declares: 2 (containerd 1.6/1.7, also read by 2.x) or 3 (containerd 2.x)."""
    accepted = "accepted: `version = 2` (containerd 1.6/1.7) or `version = 3` (containerd 2.x)"
    if "version" not in doc:
        raise ContainerdConfigError(
            f"{where} has no `version` key, which containerd reads as version 1 (removed in containerd 2.0); "
            f"{accepted}; `containerd config migrate` converts an old file"
        )
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        raise ContainerdConfigError(f"{where} declares version = {version!r}; {accepted}")
    return int(version)


_RUNTIME_VERSION = re.compile(r"^(?:containerd://)?v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+~][0-9A-Za-z.+~-]*)?$")


def parse_runtime_version(text: str) -> tuple[int, int]:
    """containerd's major.minor from `node.status.nodeInfo.containerRuntimeVersion` (`containerd://1.7.2`,
    `containerd://2.1.5-k3s1`) or `containerd --version`'s number (`1.6.20~ds1`)."""
    match = _RUNTIME_VERSION.match(text.strip())
    if not match:
        raise ContainerdConfigError(
            f"containerd version {text!r} is not understood; accepted: 'containerd://1.7.2', '2.1.5-k3s1', 'v2.0.0'"
        )
    return int(match.group(1)), int(match.group(2))


def runtime_version_findings(config_version: int, runtime: tuple[int, int], where: str) -> list[str]:
    """Warnings for a config/binary pairing; raises for one that cannot work."""
    if config_version == 3 and runtime < (2, 0):
        raise ContainerdConfigError(
            f"{where} is a version-3 file but containerd {runtime[0]}.{runtime[1]} reads only versions 1 and 2 "
            "(it would silently ignore ccgpu's drop-in); accepted: version 2 for containerd 1.x, 2 or 3 for 2.x"
        )
    if runtime < (1, 7):
        return [
            f"containerd {runtime[0]}.{runtime[1]} has no CDI support (enable_cdi arrived in 1.7): the host CDI "
            "spec is not applied; upgrade containerd for CDI-based GPU injection"
        ]
    return []


def cri_section(doc: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The main file's CRI runtime plugin table as plain data (empty when the file has none)."""
    plugins = doc.get("plugins", {})
    section = plugins.get(CRI_RUNTIME_PLUGIN[version], {}) if isinstance(plugins, Mapping) else {}
    return _plain(section) if isinstance(section, Mapping) else {}


def conflicting_runtimes(cri: Mapping[str, Any], runtimes: Iterable[KataRuntime]) -> list[str]:
    """Existing runtime entries with one of ccgpu's names but another shim or Kata config: one line each."""
    existing = cri.get("containerd", {}).get("runtimes", {})
    problems = []
    for rt in runtimes:
        entry = existing.get(rt.name)
        if not isinstance(entry, Mapping):
            continue
        have_type = entry.get("runtime_type")
        have_path = (
            entry.get("options", {}).get("ConfigPath") if isinstance(entry.get("options"), Mapping) else None
        )
        if have_type != rt.runtime_type or have_path not in (None, rt.config_path):
            problems.append(
                f"runtime {rt.name!r} already has runtime_type={have_type!r} ConfigPath={have_path!r}; "
                f"ccgpu needs runtime_type={rt.runtime_type!r} ConfigPath={rt.config_path!r}"
            )
    return problems


def cdi_warnings(cri: Mapping[str, Any]) -> list[str]:
    """Settings in the main file that would keep the host CDI spec from reaching the runtime."""
    warnings = []
    if cri.get("enable_cdi") is False:
        warnings.append("the main file sets enable_cdi = false; ccgpu's drop-in turns it on")
    dirs = cri.get("cdi_spec_dirs")
    if isinstance(dirs, list) and CDI_SPEC_DIR not in dirs:
        warnings.append(
            f"cdi_spec_dirs {dirs!r} lacks {CDI_SPEC_DIR}, where the kata-manager writes the GPU spec"
        )
    return warnings


# --- the drop-in -----------------------------------------------------------------------------------------
def render_dropin(version: int, runtimes: Iterable[KataRuntime], main_cri: Mapping[str, Any]) -> str:
    """The drop-in's text: deterministic, so an unchanged input rewrites no byte."""
    runtimes = list(runtimes)
    if version == 2:
        # containerd 1.x replaces the whole plugin section on import: carry the main file's copy along.
        cri: dict[str, Any] = copy.deepcopy(dict(main_cri))
        note = (
            "# containerd 1.x replaces a whole plugin section on import (containerd#5837), so this file repeats\n"
            "# the main file's CRI section; ccgpu rewrites it whenever the main file changes.\n"
        )
    else:
        cri = {}
        note = ""
    cri["enable_cdi"] = True
    runtime_tables = cri.setdefault("containerd", {}).setdefault("runtimes", {})
    for rt in runtimes:
        runtime_tables[rt.name] = rt.table()
    doc = tomlkit.document()
    doc.add(tomlkit.comment(DROPIN_MARKER.removeprefix("# ")))
    doc.add(tomlkit.comment("`ccgpu agent containerd-config cleanup` removes it and restores the main file."))
    doc["version"] = version
    doc["plugins"] = {CRI_RUNTIME_PLUGIN[version]: cri}
    return (note + tomlkit.dumps(doc)) if note else tomlkit.dumps(doc)


def is_ccgpu_dropin(text: str) -> bool:
    """Whether a file carries the marker line ccgpu's drop-ins start with (near the top)."""
    return any(line.strip() == DROPIN_MARKER for line in text.splitlines()[:6])


# --- imports ---------------------------------------------------------------------------------------------
def import_entry(main_path: str, dropin_path: str) -> str:
    """The `imports` entry for the drop-in: relative to the main file's directory when the drop-in lies under it.

    containerd resolves a relative import against the main file's directory, so the entry means the same file
    whether the config is read on the host or under a host mount (`/host/etc/containerd/...`).
    """
    main_dir = posixpath.dirname(main_path)
    rel = posixpath.relpath(dropin_path, main_dir)
    return rel if not rel.startswith("../") else dropin_path


def _imports(doc: Mapping[str, Any], where: str) -> list[str]:
    imports = doc.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ContainerdConfigError(f"{where}: `imports` must be a list of path strings, got {imports!r}")
    return [str(i) for i in imports]


def _glob_match(pattern: str, path: str) -> bool:
    """Go's filepath.Match (what containerd globs imports with): `*` never crosses a `/`."""
    pattern_parts, path_parts = pattern.split("/"), path.split("/")
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(name, pat) for pat, name in zip(pattern_parts, path_parts, strict=True)
    )


def resolved_imports(doc: Mapping[str, Any], main_path: str, where: str) -> list[str]:
    """The main file's `imports` as absolute host paths or patterns, in order (relative entries are resolved
    against the main file's directory, as containerd 2.x does for all and 1.6 for those without `*`)."""
    main_dir = posixpath.dirname(main_path)
    return [posixpath.normpath(posixpath.join(main_dir, entry)) for entry in _imports(doc, where)]


def last_cri_section(sections: Iterable[Mapping[str, Any]], main_cri: Mapping[str, Any]) -> dict[str, Any]:
    """The CRI section containerd 1.x ends up with: imports are applied in order and each one that has the
    section replaces it whole (containerd#5837), so the last non-empty one wins, else the main file's."""
    effective = dict(main_cri)
    for section in sections:
        if section:
            effective = dict(section)
    return effective


def import_covering(doc: Mapping[str, Any], main_path: str, dropin_path: str, where: str) -> str | None:
    """The existing `imports` entry (exact or glob, e.g. containerd 2.2's `/etc/containerd/conf.d/*.toml`)
    that already loads the drop-in, or None.

    containerd treats an entry as a glob only when it contains `*`, and containerd 1.6 globs a *relative*
    pattern against its working directory rather than the main file's (2.x fixed that), so a relative glob
    never counts as covering: ccgpu then adds its own exact entry, which every version resolves alike.
    """
    main_dir = posixpath.dirname(main_path)
    for entry in _imports(doc, where):
        resolved = posixpath.normpath(posixpath.join(main_dir, entry))
        if resolved == dropin_path:
            return entry
        if "*" in entry and entry.startswith("/") and _glob_match(resolved, dropin_path):
            return entry
    return None


def add_import(text: str, entry: str, where: str) -> str:
    """The main file's text with `entry` appended to `imports` (created right after `version` when absent);
    comments, order and formatting elsewhere are kept."""
    doc = parse_config(text, where)
    imports = _imports(doc, where)
    if entry in imports:
        return text
    if "imports" in doc:
        doc["imports"].append(entry)
    else:
        array = tomlkit.array()
        array.append(entry)
        # Keep `imports` beside `version` at the top, where containerd's own files have it. tomlkit has no
        # public insert; its typed `_insert_at` is the one way (its `_insert_after` is gone, which mypy caught).
        at = next((i for i, (key, _) in enumerate(doc.body) if key is not None and key.key == "version"), None)
        if at is not None and at + 1 < len(doc.body):
            doc._insert_at(at + 1, "imports", array)
        else:  # no `version`, or it is the last line: appending puts `imports` at the end of the top keys
            doc["imports"] = array
    return tomlkit.dumps(doc)


def remove_import(text: str, entry: str, where: str, drop_empty: bool) -> str:
    """The main file's text without `entry` in `imports` (the key removed when it empties and `drop_empty`)."""
    doc = parse_config(text, where)
    imports = _imports(doc, where)
    if entry not in imports:
        return text
    if drop_empty and imports == [entry]:
        del doc["imports"]
    else:
        doc["imports"].remove(entry)
    return tomlkit.dumps(doc)


def _plain(value: Any) -> Any:
    """tomlkit containers to plain dicts/lists (so a copied section carries no formatting of the source)."""
    if isinstance(value, tomlkit.items.Item) or hasattr(value, "unwrap"):
        return value.unwrap()
    return value
