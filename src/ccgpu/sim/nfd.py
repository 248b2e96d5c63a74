"""A Node Feature Discovery emulator: NFD's built-in labels from a host tree, and every NodeFeatureRule evaluated.

nfd-worker reads the host (sysfs via the host mount); nfd-master turns features into labels. Both halves are
here, from reference/protocols.md §D:
- features: `pci.device` instances (vendor, device, class, subsystem ids: 4-hex strings), `cpu.security`
  attributes (`sev.snp.enabled` etc. present only when on, read from kvm_amd/kvm_intel module parameters, as NFD
  does, never CPUID), `kernel.loadedmodule` flags;
- built-in labels: `pci-<class>_<vendor>.present` for the whitelisted classes (03, 0b40, 12), `pci-10de.present`
  (the GPU Operator's NFD also labels by vendor alone), `cpu-security.<attr>` for the TEE flags;
- NodeFeatureRules in name order, rules in order, `matchFeatures` (all terms) and `matchAny` (any term set),
  ops In/NotIn/InRegexp/Exists/DoesNotExist/IsTrue/IsFalse/Gt/Lt/GtLt/Ge/Le, `rule.matched` seeing only earlier
  rules' labels. Unprefixed rule labels get `feature.node.kubernetes.io/`.
As nfd-master, the labels it owns are listed in the node annotation `nfd.node.kubernetes.io/feature-labels`, so a
label that stops being derived is removed, and a node is patched only when something changed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccgpu.hw import pci
from ccgpu.hw.platform import read_platform
from ccgpu.hw.sysfs import Sysfs

log = logging.getLogger(__name__)

PREFIX = "feature.node.kubernetes.io/"
OWNED_ANNOTATION = "nfd.node.kubernetes.io/feature-labels"
PCI_CLASS_WHITELIST = ("03", "0b40", "12")
NVIDIA_VENDOR = "10de"


class RuleError(ValueError):
    """A NodeFeatureRule expression NFD would reject; the message names the rule and what is accepted."""


@dataclass
class Features:
    """What nfd-worker found on one host."""

    pci_devices: list[dict[str, str]] = field(default_factory=list)
    cpu_security: dict[str, str] = field(default_factory=dict)
    loaded_modules: set[str] = field(default_factory=set)

    def domain(self, name: str) -> tuple[str, Any]:
        """(type, value) of a feature: `instance` → list of attribute dicts, `attribute` → dict, `flag` → set."""
        if name == "pci.device":
            return "instance", self.pci_devices
        if name == "cpu.security":
            return "attribute", self.cpu_security
        if name in ("kernel.loadedmodule", "kernel.enabledmodule"):
            return "flag", self.loaded_modules
        return "attribute", {}


def _hex4(value: int) -> str:
    return f"{value:04x}"


def discover(fs: Sysfs) -> Features:
    """nfd-worker's view of a host root (read-only)."""
    feats = Features()
    for dev in pci.scan_devices(fs).devices:
        feats.pci_devices.append({
            "vendor": _hex4(dev.vendor),
            "device": _hex4(dev.device),
            "class": _hex4(dev.class_code >> 8),
            "subsystem_vendor": _hex4(dev.subsystem_vendor),
            "subsystem_device": _hex4(dev.subsystem_device),
        })
    facts = read_platform(fs)
    for attr, on in (("sev.enabled", facts.sev), ("sev.es.enabled", facts.sev_es),
                     ("sev.snp.enabled", facts.sev_snp), ("tdx.enabled", facts.tdx)):
        if on:
            feats.cpu_security[attr] = "true"
    if facts.sev_asids is not None:
        feats.cpu_security["sev.asids"] = str(facts.sev_asids)
    if facts.sev_es_asids is not None:
        feats.cpu_security["sev.encrypted_state_ids"] = str(facts.sev_es_asids)
    if facts.tdx_keys is not None:
        feats.cpu_security["tdx.total_keys"] = str(facts.tdx_keys)
    feats.loaded_modules = set(facts.modules_loaded)
    return feats


def builtin_labels(feats: Features) -> dict[str, str]:
    """NFD's own labels: whitelisted PCI classes by class_vendor, NVIDIA by vendor alone, CPU TEE flags."""
    out: dict[str, str] = {}
    for d in feats.pci_devices:
        if any(d["class"].startswith(w) for w in PCI_CLASS_WHITELIST):
            out[f"{PREFIX}pci-{d['class']}_{d['vendor']}.present"] = "true"
            if d["vendor"] == NVIDIA_VENDOR:
                out[f"{PREFIX}pci-{d['vendor']}.present"] = "true"
    for attr in ("sev.enabled", "sev.es.enabled", "sev.snp.enabled", "tdx.enabled"):
        if feats.cpu_security.get(attr) == "true":
            out[f"{PREFIX}cpu-security.{attr}"] = "true"
    return out


# --- expressions -----------------------------------------------------------------------------------

OPS_NO_VALUE = ("Exists", "DoesNotExist", "IsTrue", "IsFalse")
OPS = ("In", "NotIn", "InRegexp", "Gt", "Lt", "GtLt", "Ge", "Le", "GeLe", *OPS_NO_VALUE)


def _int(text: str, rule: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise RuleError(f"rule {rule!r}: {text!r} is not an integer (Gt/Lt/GtLt/Ge/Le take integers)") from None


def match_expression(expr: Mapping[str, Any], present: bool, value: str | None, rule: str = "") -> bool:
    """One `{op, value}` against an attribute that is `present` with `value` (NFD's MatchExpression.Match)."""
    op = expr.get("op")
    values = [str(v) for v in (expr.get("value") or [])]
    if op not in OPS:
        raise RuleError(f"rule {rule!r}: op {op!r} is not valid; accepted: {', '.join(OPS)}")
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if not present:
        return False
    v = value or ""
    if op == "In":
        return v in values
    if op == "NotIn":
        return v not in values
    if op == "InRegexp":
        return any(re.search(p, v) for p in values)
    if op == "IsTrue":
        return v == "true"
    if op == "IsFalse":
        return v == "false"
    try:
        n = int(v)
    except ValueError:
        return False
    bounds = [_int(x, rule) for x in values]
    need = 2 if op in ("GtLt", "GeLe") else 1
    if len(bounds) != need:
        raise RuleError(f"rule {rule!r}: op {op} takes {need} value(s), got {len(bounds)}")
    return {
        "Gt": lambda: n > bounds[0], "Lt": lambda: n < bounds[0], "Ge": lambda: n >= bounds[0],
        "Le": lambda: n <= bounds[0], "GtLt": lambda: bounds[0] < n < bounds[1],
        "GeLe": lambda: bounds[0] <= n <= bounds[1],
    }[op]()


def _match_attrs(exprs: Mapping[str, Any], attrs: Mapping[str, str], rule: str) -> bool:
    return all(match_expression(e or {}, k in attrs, attrs.get(k), rule) for k, e in exprs.items())


def match_term(term: Mapping[str, Any], feats: Features, matched: Mapping[str, str], rule: str = "") -> bool:
    """One matchFeatures term: every expression holds (for an instance feature: on one and the same instance)."""
    name = term.get("feature")
    exprs = term.get("matchExpressions") or {}
    if name == "rule.matched":
        return _match_attrs(exprs, matched, rule)
    kind, value = feats.domain(str(name))
    if kind == "instance":
        return any(_match_attrs(exprs, inst, rule) for inst in value)
    if kind == "flag":
        return _match_attrs(exprs, {m: "" for m in value}, rule)
    return _match_attrs(exprs, value, rule)


def rule_matches(rule: Mapping[str, Any], feats: Features, matched: Mapping[str, str]) -> bool:
    name = str(rule.get("name", ""))
    terms = rule.get("matchFeatures") or []
    if not all(match_term(t, feats, matched, name) for t in terms):
        return False
    any_of = rule.get("matchAny")
    if any_of:
        return any(all(match_term(t, feats, matched, name) for t in (a.get("matchFeatures") or [])) for a in any_of)
    return True


def _prefixed(key: str) -> str:
    return key if "/" in key else PREFIX + key


def rule_labels(rules_objects: Iterable[Mapping[str, Any]], feats: Features) -> dict[str, str]:
    """Labels from every NodeFeatureRule (objects in name order, rules in order). A broken rule is skipped with
    a log line, as nfd-master does, so one bad object does not take the others' labels away."""
    out: dict[str, str] = {}
    matched: dict[str, str] = {}
    for obj in sorted(rules_objects, key=lambda o: o.get("metadata", {}).get("name", "")):
        for rule in (obj.get("spec") or {}).get("rules") or []:
            try:
                ok = rule_matches(rule, feats, matched)
            except RuleError as e:
                log.warning("NodeFeatureRule %s: %s", obj.get("metadata", {}).get("name"), e)
                continue
            if not ok:
                continue
            for k, v in (rule.get("labels") or {}).items():
                matched[k] = str(v)
                out[_prefixed(k)] = str(v)
            for k, v in (rule.get("vars") or {}).items():
                matched[k] = str(v)
    return out


def node_patch(current_labels: Mapping[str, str], current_annotations: Mapping[str, str],
               wanted: Mapping[str, str]) -> dict[str, Any] | None:
    """The merge patch that makes NFD's labels on a node equal `wanted` (None when nothing changes)."""
    owned = {k for k in (current_annotations.get(OWNED_ANNOTATION) or "").split(",") if k}
    labels: dict[str, str | None] = {k: v for k, v in wanted.items() if current_labels.get(k) != v}
    for k in owned - wanted.keys():
        if k in current_labels:
            labels[k] = None
    owned_text = ",".join(sorted(wanted))
    annotations = {} if current_annotations.get(OWNED_ANNOTATION) == owned_text else {OWNED_ANNOTATION: owned_text}
    if not labels and not annotations:
        return None
    meta: dict[str, Any] = {}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta}


def node_labels(fs: Sysfs, rules_objects: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every label NFD puts on the node whose host root `fs` reads."""
    feats = discover(fs)
    return {**builtin_labels(feats), **rule_labels(rules_objects, feats)}


# --- the running emulator --------------------------------------------------------------------------


class NfdEmulator:
    """nfd-worker + nfd-master for the simulated nodes: `hosts` maps node name → host root. Node labels come
    from the cluster's node informer; a host is discovered again only when its device state changed (its
    `state_generation(node)`) or the rules did, so a pass over 500 unchanged nodes reads no host tree."""

    def __init__(self, client: Any, hosts: Mapping[str, str], informers: Any, interval_s: float = 0.5,
                 state_generation: Any = None) -> None:
        self.client = client
        self.hosts = hosts
        self.informers = informers
        self.interval_s = interval_s
        self.state_generation = state_generation or (lambda node: None)
        self._wanted: dict[str, tuple[Any, str, dict[str, str]]] = {}  # node → (generation, rules, labels)
        self.passes = 0

    async def _rules(self) -> list[dict[str, Any]]:
        from lightkube.core.exceptions import ApiError

        from ccgpu.sim.resources import NodeFeatureRule

        try:
            return [o.to_dict() if hasattr(o, "to_dict") else dict(o) async for o in self.client.list(NodeFeatureRule)]
        except ApiError as e:
            if e.status.code == 404:  # NFD's CRD is not installed: built-in labels only
                return []
            raise

    async def sync_once(self) -> int:
        """Label every simulated node; returns how many nodes were patched."""
        import json

        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        rules = await self._rules()
        fingerprint = json.dumps([r.get("spec") for r in rules], sort_keys=True)
        gate = asyncio.Semaphore(16)  # nodes in parallel: one at a time waits out every round trip in turn

        async def one(name: str, root: str) -> bool:
            node = self.informers.nodes.get(name)
            if node is None:
                return False
            generation = self.state_generation(name)
            cached = self._wanted.get(name)
            async with gate:
                if cached is None or cached[0] != generation or cached[1] != fingerprint or generation is None:
                    wanted = await asyncio.to_thread(node_labels, Sysfs(root), rules)  # sysfs reads off the loop
                    self._wanted[name] = cached = (generation, fingerprint, wanted)
                meta = node.get("metadata") or {}
                patch = node_patch(meta.get("labels") or {}, meta.get("annotations") or {}, cached[2])
                if patch is None:
                    return False
                done = await self.client.patch(Node, name, patch, patch_type=PatchType.MERGE)
                self.informers.nodes.apply(done.to_dict())
                return True

        results = await asyncio.gather(*(one(n, r) for n, r in self.hosts.items()), return_exceptions=True)
        self.passes += 1
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(1 for r in results if r is True)

    async def run(self, stop: Any) -> None:
        from ccgpu.sim.loop import every

        await every(self.interval_s, stop, self.sync_once, "nfd")
