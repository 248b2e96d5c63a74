"""lightkube resource types the simulated cluster components use, and the CRD of NFD's NodeFeatureRule."""

from __future__ import annotations

from typing import Any

from lightkube.generic_resource import create_global_resource

NodeFeatureRule = create_global_resource("nfd.k8s-sigs.io", "v1alpha1", "NodeFeatureRule", "nodefeaturerules")

NFR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodefeaturerules.nfd.k8s-sigs.io"},
    "spec": {
        "group": "nfd.k8s-sigs.io",
        "scope": "Cluster",
        "names": {"kind": "NodeFeatureRule", "plural": "nodefeaturerules", "singular": "nodefeaturerule",
                  "listKind": "NodeFeatureRuleList", "shortNames": ["nfr"]},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}

# Marks the objects the simulated cluster's own controllers made, so the others leave them alone.
SIM_OWNER = "ccgpu.dev/simulated-by"
GPU_BDFS_ANNOTATION = "ccgpu.dev/gpu-bdfs"
CDI_DEVICES_ANNOTATION = "ccgpu.dev/cdi-devices"
