"""The SNP report as Trustee's guest sends it: the `sev` crate's serde JSON (field names as that crate spells them,
byte arrays as JSON lists, TCBs as {fmc, bootloader, tee, snp, microcode}, signature {r, s}).

Converting to and from the 1184 raw bytes keeps one verifier for both forms. The conversion is self-checking:
the report signature covers bytes 0x000-0x29F, so a field placed wrongly can only make verification fail.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ccgpu.attest.errors import EvidenceFormatError
from ccgpu.attest.snp import AttestationReport, Generation, TcbVersion, generation_from_cpuid

_BYTES = {"family_id": 16, "image_id": 16, "report_data": 64, "measurement": 48, "host_data": 32,
          "id_key_digest": 48, "author_key_digest": 48, "report_id": 32, "report_id_ma": 32, "chip_id": 64}
_INTS = {"version": "version", "guest_svn": "guest_svn", "policy": "policy", "vmpl": "vmpl",
         "sig_algo": "signature_algo", "plat_info": "platform_info", "key_info": "key_info"}
_TCBS = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_OPTIONAL_U8 = ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")
_OPTIONAL_U64 = ("launch_mit_vector", "current_mit_vector")


def _generation(report: AttestationReport | dict) -> Generation:
    get = report.get if isinstance(report, dict) else lambda k, d=None: getattr(report, k, d)
    if (get("version") or 0) >= 3:
        gen = generation_from_cpuid(get("cpuid_fam_id") or 0, get("cpuid_mod_id") or 0)
        if gen is not None:
            return gen
    return Generation.MILAN  # Milan and Genoa share the TCB layout; Turin reports always carry CPUID (v3+)


def to_serde(raw: bytes) -> dict[str, Any]:
    """Raw report → the sev crate's serde JSON object."""
    report = AttestationReport.parse(raw)
    gen = _generation(report)
    out: dict[str, Any] = {wire: getattr(report, attr) for wire, attr in _INTS.items()}
    for name in _BYTES:
        out[name] = list(getattr(report, name))
    for name in _TCBS:
        out[name] = dataclasses.asdict(TcbVersion.from_raw(getattr(report, name), gen))
    for name in _OPTIONAL_U8:
        out[name] = getattr(report, name) if report.version >= 3 else None
    for name in _OPTIONAL_U64:
        out[name] = getattr(report, name) if report.version >= 5 else None
    out["current"] = {"major": report.current_major, "minor": report.current_minor, "build": report.current_build}
    out["committed"] = {"major": report.committed_major, "minor": report.committed_minor,
                        "build": report.committed_build}
    out["signature"] = {"r": list(report.signature_r), "s": list(report.signature_s)}
    return out


def _byte_list(obj: dict, name: str, size: int) -> bytes:
    value = obj.get(name)
    if not isinstance(value, list) or len(value) != size or not all(
            isinstance(b, int) and 0 <= b <= 255 for b in value):
        raise EvidenceFormatError("snp.serde", f"attestation_report.{name} must be a list of {size} byte values")
    return bytes(value)


def _int(obj: dict, name: str, default: int | None = None) -> int:
    value = obj.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EvidenceFormatError("snp.serde", f"attestation_report.{name} must be a non-negative integer")
    return value


def _tcb(obj: dict, name: str, gen: Generation) -> bytes:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise EvidenceFormatError("snp.serde", f"attestation_report.{name} must be a TCB object")
    fields = {k: _int(value, k) for k in ("bootloader", "tee", "snp", "microcode")}
    fmc = value.get("fmc")
    try:
        return TcbVersion(**fields, fmc=_int(value, "fmc") if fmc is not None else None).to_raw(gen)
    except (ValueError, OverflowError) as e:
        raise EvidenceFormatError("snp.serde", f"attestation_report.{name}: {e}") from e


def _version(obj: dict, name: str) -> tuple[int, int, int]:
    nested = obj.get(name)
    if isinstance(nested, dict):
        return _int(nested, "build", 0), _int(nested, "minor", 0), _int(nested, "major", 0)
    return _int(obj, f"{name}_build", 0), _int(obj, f"{name}_minor", 0), _int(obj, f"{name}_major", 0)


def from_serde(obj: Any) -> bytes:
    """The sev crate's serde JSON object → raw 1184-byte report (EvidenceFormatError naming a bad field)."""
    if not isinstance(obj, dict):
        raise EvidenceFormatError("snp.serde", "attestation_report must be an object or a base64/hex string")
    gen = _generation(obj)
    sig = obj.get("signature")
    if not isinstance(sig, dict):
        raise EvidenceFormatError("snp.serde", "attestation_report.signature must be {r, s}")
    cur, com = _version(obj, "current"), _version(obj, "committed")
    fields = dict(
        **{attr: _int(obj, wire, 0 if wire == "key_info" else None) for wire, attr in _INTS.items()},
        **{name: _byte_list(obj, name, size) for name, size in _BYTES.items()},
        **{name: _tcb(obj, name, gen) for name in _TCBS},
        **{name: _int(obj, name, 0) for name in _OPTIONAL_U8 + _OPTIONAL_U64},
        current_build=cur[0], current_minor=cur[1], current_major=cur[2],
        committed_build=com[0], committed_minor=com[1], committed_major=com[2],
        reserved_04c=bytes(4), reserved_18b=bytes(21), reserved_1eb=0, reserved_1ef=0, reserved_208=bytes(152),
        signature_r=_byte_list(sig, "r", 72), signature_s=_byte_list(sig, "s", 72), signature_reserved=bytes(368),
    )
    try:
        return AttestationReport(**fields).to_bytes()
    except Exception as e:  # struct.error for out-of-range integers
        raise EvidenceFormatError("snp.serde", f"attestation_report does not pack: {e}") from e
