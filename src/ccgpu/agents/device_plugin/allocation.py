"""Pure decisions of the device plugin: what Allocate returns and which devices GetPreferredAllocation picks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ccgpu.agents.cdi import DeviceIdentity, name_sort_key
from ccgpu.agents.device_plugin import api_pb2 as pb

DEVICE_PERMISSIONS = "mrw"


class UnknownDevicesError(ValueError):
    """Allocate or GetPreferredAllocation named device IDs this plugin does not advertise."""

    def __init__(self, resource: str, unknown: Iterable[str], known: Iterable[str]) -> None:
        self.unknown = list(dict.fromkeys(unknown))  # in the order the request named them
        known_list = sorted(known, key=name_sort_key)
        super().__init__(
            f"unknown device IDs for {resource}: {', '.join(self.unknown)}; "
            f"this plugin advertises: {', '.join(known_list) or '(none)'}"
        )


def pci_env_name(resource: str) -> str:
    """`nvidia.com/pgpu` -> `PCI_RESOURCE_NVIDIA_COM_PGPU` (KubeVirt's convention, which NVIDIA's tools read)."""
    return "PCI_RESOURCE_" + re.sub(r"[^A-Z0-9]", "_", resource.upper())


def check_known(resource: str, ids: Iterable[str], devices: Mapping[str, DeviceIdentity]) -> None:
    unknown = [i for i in ids if i not in devices]
    if unknown:
        raise UnknownDevicesError(resource, unknown, devices)


def container_allocation(
    resource: str, ids: Sequence[str], devices: Mapping[str, DeviceIdentity], pci_env: bool
) -> pb.ContainerAllocateResponse:
    """DeviceSpecs for every node of every requested device (each once), their CDI names, optional BDF env."""
    check_known(resource, ids, devices)
    resp = pb.ContainerAllocateResponse()
    seen_nodes: set[str] = set()
    for dev_id in ids:
        ident = devices[dev_id]
        for node in ident.nodes:
            if node not in seen_nodes:
                seen_nodes.add(node)
                resp.devices.append(pb.DeviceSpec(container_path=node, host_path=node, permissions=DEVICE_PERMISSIONS))
        resp.cdi_devices.append(pb.CDIDevice(name=ident.cdi_name))
    if pci_env:
        resp.envs[pci_env_name(resource)] = ",".join(str(b) for i in ids for b in devices[i].bdfs)
    return resp


def preferred_allocation(
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    devices: Mapping[str, DeviceIdentity],
) -> list[str]:
    """Pick `size` devices: the required ones, then NUMA-local to them, then in their NVSwitch domain.

    With nothing required, the anchor is the NUMA node (then switch domain) that can supply the most of the
    request, so a 4-GPU pod on a 2x4 machine lands on one socket. Ties break by device name, numerically.
    """
    chosen = list(dict.fromkeys(must_include))
    pool = [d for d in dict.fromkeys(available) if d not in chosen and d in devices]
    if len(chosen) >= size:
        return chosen[:size] if size > 0 else chosen

    def numa(d: str) -> int | None:
        return devices[d].numa_node if d in devices else None

    def domain(d: str) -> str | None:
        return devices[d].switch_domain if d in devices else None

    if chosen:
        anchor_numa = {numa(d) for d in chosen} - {None}
        anchor_domain = {domain(d) for d in chosen} - {None}
    else:
        counts: dict[int | None, int] = {}
        for d in pool:
            counts[numa(d)] = counts.get(numa(d), 0) + 1
        best = max(
            (n for n in counts if n is not None),
            key=lambda n: (counts[n] >= size, counts[n], -n),
            default=None,
        )
        anchor_numa = {best} if best is not None else set()
        dom_counts: dict[str | None, int] = {}
        for d in pool:
            if numa(d) in anchor_numa or not anchor_numa:
                dom_counts[domain(d)] = dom_counts.get(domain(d), 0) + 1
        best_dom = max((x for x in dom_counts if x is not None), key=lambda x: (dom_counts[x], x), default=None)
        anchor_domain = {best_dom} if best_dom is not None else set()

    def rank(d: str) -> tuple[int, int, tuple[int, str]]:
        return (0 if numa(d) in anchor_numa else 1, 0 if domain(d) in anchor_domain else 1, name_sort_key(d))

    chosen.extend(sorted(pool, key=rank)[: size - len(chosen)])
    return chosen
