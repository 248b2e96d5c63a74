"""Rego policies (regopy): EAR appraisal policies per device class and the KBS resource policy.

regopy has no custom builtins, so Trustee's `query_reference_value("<id>")` is written
`data.reference["<id>"]`: the appraisal passes the RVPS snapshot as data (reference attestation.md §1.5).
A fresh interpreter per evaluation keeps evaluations independent and thread-safe (about 2 ms each).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import regopy

from ccgpu.attest.storage import atomic_write, check_segment

DEVICE_CLASSES = ("cpu", "gpu")
_POLICY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PolicyError(ValueError):
    """A policy that does not compile or does not produce what it must; says what is expected."""


def default_policy(name: str) -> str:
    return resources.files("ccgpu.attest").joinpath("policies", f"{name}.rego").read_text()


def evaluate(rego: str, input_: Any, data: dict[str, Any], query: str = "data.policy") -> Any:
    """Evaluate `query` against one policy module; returns the JSON value, or None when undefined."""
    interp = regopy.Interpreter()
    try:
        interp.add_module("policy.rego", rego)
        interp.add_data_json(json.dumps(data))
        interp.set_input_term(json.dumps(input_))
        out = interp.query(f"x = {query}")
    except regopy.RegoError as e:
        raise PolicyError(f"policy failed to evaluate: {_first_line(str(e))}") from e
    if not out.ok():
        raise PolicyError(f"policy failed to evaluate: {_first_line(str(out))}")
    binding = out.binding("x")
    return None if binding is None else json.loads(binding.json())


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("(")]
    return "; ".join(lines[:3]) or text[:200]


class PolicyStore:
    """Attestation policies `<policy_id>_<class>` and the resource policy, defaults from the package, overrides
    uploaded by the admin and kept on disk when a directory is given."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._attestation: dict[str, str] = {f"default_{c}": default_policy(f"default_{c}") for c in DEVICE_CLASSES}
        self._resource = default_policy("resource_affirming")
        if directory is not None:
            for f in sorted(directory.glob("*.rego")):
                if f.stem == "resource":
                    self._resource = f.read_text()
                else:
                    self._attestation[f.stem] = f.read_text()

    def attestation_policy(self, policy_id: str) -> str:
        try:
            return self._attestation[policy_id]
        except KeyError:
            raise PolicyError(f"no attestation policy {policy_id!r}; known: {', '.join(sorted(self._attestation))}") from None

    def set_attestation_policy(self, policy_id: str, rego: str) -> None:
        """Install a policy after checking it compiles and yields an object `trust_claims` on empty input."""
        if not _POLICY_ID.match(policy_id or ""):
            raise PolicyError("policy_id must be 1-64 letters, digits, '_' or '-' (e.g. default_cpu)")
        value = evaluate(rego, {}, {"reference": {}})
        if not isinstance(value, dict) or not isinstance(value.get("trust_claims", {}), dict):
            raise PolicyError("attestation policy must be `package policy` defining an object trust_claims")
        self._attestation[policy_id] = rego
        self._save(policy_id, rego)

    @property
    def resource_policy(self) -> str:
        return self._resource

    def set_resource_policy(self, rego: str) -> None:
        value = evaluate(rego, {"submods": {}}, {})
        if not isinstance(value, dict) or not isinstance(value.get("allow", False), bool):
            raise PolicyError("resource policy must be `package policy` defining a boolean allow")
        self._resource = rego
        self._save("resource", rego)

    def trust_vector(self, policy_id: str, claims: dict[str, Any], reference: dict[str, Any]) -> dict[str, int]:
        """Run an attestation policy on one submod's claims; at least one integer trust claim is required."""
        value = evaluate(self.attestation_policy(policy_id), claims, {"reference": reference})
        vector = (value or {}).get("trust_claims") if isinstance(value, dict) else None
        if not isinstance(vector, dict) or not vector:
            raise PolicyError(f"policy {policy_id} set no trust claims")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in vector.values()):
            raise PolicyError(f"policy {policy_id} trust claims must be integers, got {vector}")
        return vector

    def allow_resource(self, ear_claims: dict[str, Any], resource_path: list[str]) -> bool:
        data = {"plugin": "resource", "resource-path": resource_path, "query": {}}
        return evaluate(self.resource_policy, ear_claims, data, "data.policy.allow") is True

    def _save(self, name: str, rego: str) -> None:
        if self.directory is not None:
            check_segment("policy id", name)
            atomic_write(self.directory / f"{name}.rego", rego.encode())
