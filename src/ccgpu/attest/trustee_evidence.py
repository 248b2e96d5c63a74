"""Evidence as Trustee and the CoCo attestation-agent put it on the wire (reference/attestation.md §1.7, §1.8).

SNP: `{"attestation_report": <the sev crate's serde form>, "cert_chain": [{"cert_type", "data"}] | null}`;
the report is an object of ints, byte arrays as lists of ints, TCBs as `{fmc, bootloader, tee, snp,
microcode}` (fmc null before Turin), version triples as `{major, minor, build}` and the signature as
`{r: [72], s: [72]}` (little-endian). NVIDIA: `{"device_evidence_list": [{"arch", "uuid", "evidence":
base64 (hex accepted), "certificate": base64 of the PEM chain}]}`.
These converters let the KBS take a real attestation-agent's evidence and the guest client send evidence a
real Trustee reads; the verifiers themselves work on the raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass
from typing import Any

from ccgpu.attest.errors import EvidenceFormatError, VerificationError
from ccgpu.attest.snp import AttestationReport, Generation, SigningKey, TcbVersion
from ccgpu.attest.verify_gpu import verify_gpu_evidence
from ccgpu.attest.verify_snp import verify_snp_evidence

_BYTE_FIELDS = {
    "family_id": 16,
    "image_id": 16,
    "report_data": 64,
    "measurement": 48,
    "host_data": 32,
    "id_key_digest": 48,
    "author_key_digest": 48,
    "report_id": 32,
    "report_id_ma": 32,
    "chip_id": 64,
}
_INT_FIELDS = ("version", "guest_svn", "policy", "vmpl", "sig_algo", "plat_info", "key_info")
_TCB_FIELDS = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
CERT_TYPES = ("VCEK", "VLEK", "ASK", "ARK", "ASVK")


def _tcb_layout(report: AttestationReport) -> Generation:
    """Turin or the Milan/Genoa layout: CPUID on v3+; on v2 the sev crate's rule (chip_id past 8 bytes zero)."""
    generation = report.cpuid_generation()
    if generation is not None:
        return generation
    turin_like = any(report.chip_id[:8]) and not any(report.chip_id[8:])
    return Generation.TURIN if turin_like else Generation.MILAN


def snp_report_to_json(report: bytes) -> dict:
    """The sev crate's serde form of a raw report."""
    r = AttestationReport.parse(report)
    layout = _tcb_layout(r)

    def tcb(raw: bytes) -> dict:
        t = TcbVersion.from_raw(raw, layout)
        return {
            "fmc": t.fmc,
            "bootloader": t.bootloader,
            "tee": t.tee,
            "snp": t.snp,
            "microcode": t.microcode,
        }

    has_cpuid = r.version >= 3
    out: dict[str, Any] = {
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": r.policy,
        "family_id": list(r.family_id),
        "image_id": list(r.image_id),
        "vmpl": r.vmpl,
        "sig_algo": r.signature_algo,
        "current_tcb": tcb(r.current_tcb),
        "plat_info": r.platform_info,
        "key_info": r.key_info,
        "report_data": list(r.report_data),
        "measurement": list(r.measurement),
        "host_data": list(r.host_data),
        "id_key_digest": list(r.id_key_digest),
        "author_key_digest": list(r.author_key_digest),
        "report_id": list(r.report_id),
        "report_id_ma": list(r.report_id_ma),
        "reported_tcb": tcb(r.reported_tcb),
        "cpuid_fam_id": r.cpuid_fam_id if has_cpuid else None,
        "cpuid_mod_id": r.cpuid_mod_id if has_cpuid else None,
        "cpuid_step": r.cpuid_step if has_cpuid else None,
        "chip_id": list(r.chip_id),
        "committed_tcb": tcb(r.committed_tcb),
        "current": {"major": r.current_major, "minor": r.current_minor, "build": r.current_build},
        "committed": {"major": r.committed_major, "minor": r.committed_minor, "build": r.committed_build},
        "launch_tcb": tcb(r.launch_tcb),
        "signature": {"r": list(r.signature_r), "s": list(r.signature_s)},
    }
    if r.version >= 5:
        out["launch_mit_vector"] = r.launch_mit_vector
        out["current_mit_vector"] = r.current_mit_vector
    return out


def _field(obj: dict, name: str, what: str = "attestation_report") -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise EvidenceFormatError("snp.json", f"{what} has no field {name!r}")
    return obj[name]


def _uint(value: Any, name: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise EvidenceFormatError("snp.json", f"attestation_report.{name} must be an integer 0..2^{bits}-1")
    return value


def _byte_list(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise EvidenceFormatError("snp.json", f"attestation_report.{name} must be a list of {size} bytes")
    return bytes(_uint(v, name, 8) for v in value)


def snp_report_from_json(obj: dict) -> bytes:
    """Raw report bytes from the serde form; reserved areas are zero (they are zero in real reports)."""
    fields: dict[str, Any] = {
        name: _byte_list(_field(obj, name), name, n) for name, n in _BYTE_FIELDS.items()
    }
    ints = {name: _field(obj, name) for name in _INT_FIELDS if name != "key_info"}
    ints["key_info"] = obj.get("key_info", obj.get("_author_key_en", 0))
    sizes = {"policy": 64, "plat_info": 64}
    values = {name: _uint(v, name, sizes.get(name, 32)) for name, v in ints.items()}
    tcbs = {name: _field(obj, name) for name in _TCB_FIELDS}
    turin = any(isinstance(t, dict) and t.get("fmc") is not None for t in tcbs.values())
    layout = Generation.TURIN if turin else Generation.MILAN

    def tcb(name: str) -> bytes:
        t = tcbs[name]
        parts = {
            k: _uint(_field(t, k, name), f"{name}.{k}", 8) for k in ("bootloader", "tee", "snp", "microcode")
        }
        fmc = (
            _uint(t["fmc"], f"{name}.fmc", 8)
            if turin and t.get("fmc") is not None
            else (0 if turin else None)
        )
        return TcbVersion(fmc=fmc, **parts).to_raw(layout)

    def triple(name: str) -> tuple[int, int, int]:
        v = _field(obj, name)

        def part(k: str) -> int:
            return _uint(_field(v, k, name), f"{name}.{k}", 8)

        return part("major"), part("minor"), part("build")

    current, committed = triple("current"), triple("committed")
    signature = _field(obj, "signature")
    cpuid = [obj.get(k) for k in ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step")]
    report = AttestationReport(
        version=values["version"],
        guest_svn=values["guest_svn"],
        policy=values["policy"],
        family_id=fields["family_id"],
        image_id=fields["image_id"],
        vmpl=values["vmpl"],
        signature_algo=values["sig_algo"],
        current_tcb=tcb("current_tcb"),
        platform_info=values["plat_info"],
        key_info=values["key_info"],
        reserved_04c=bytes(4),
        report_data=fields["report_data"],
        measurement=fields["measurement"],
        host_data=fields["host_data"],
        id_key_digest=fields["id_key_digest"],
        author_key_digest=fields["author_key_digest"],
        report_id=fields["report_id"],
        report_id_ma=fields["report_id_ma"],
        reported_tcb=tcb("reported_tcb"),
        cpuid_fam_id=_uint(cpuid[0] or 0, "cpuid_fam_id", 8),
        cpuid_mod_id=_uint(cpuid[1] or 0, "cpuid_mod_id", 8),
        cpuid_step=_uint(cpuid[2] or 0, "cpuid_step", 8),
        reserved_18b=bytes(21),
        chip_id=fields["chip_id"],
        committed_tcb=tcb("committed_tcb"),
        current_build=current[2],
        current_minor=current[1],
        current_major=current[0],
        reserved_1eb=0,
        committed_build=committed[2],
        committed_minor=committed[1],
        committed_major=committed[0],
        reserved_1ef=0,
        launch_tcb=tcb("launch_tcb"),
        launch_mit_vector=_uint(obj.get("launch_mit_vector") or 0, "launch_mit_vector", 64),
        current_mit_vector=_uint(obj.get("current_mit_vector") or 0, "current_mit_vector", 64),
        reserved_208=bytes(152),
        signature_r=_byte_list(_field(signature, "r", "signature"), "signature.r", 72),
        signature_s=_byte_list(_field(signature, "s", "signature"), "signature.s", 72),
        signature_reserved=bytes(368),
    )
    return report.to_bytes()


@dataclass(frozen=True)
class SnpEvidence:
    """Trustee `snp` primary evidence: the raw report and the DER certificates sent along, by type."""

    report: bytes
    certs: dict[str, bytes]


def snp_evidence_to_json(report: bytes, certs: dict[str, bytes] | None = None) -> dict:
    chain = None
    if certs:
        chain = [{"cert_type": kind, "data": list(der)} for kind, der in certs.items()]
    return {"attestation_report": snp_report_to_json(report), "cert_chain": chain}


def snp_evidence_from_json(obj: Any) -> SnpEvidence:
    report = snp_report_from_json(_field(obj, "attestation_report", "SNP evidence"))
    chain = obj.get("cert_chain") or []
    if not isinstance(chain, list):
        raise EvidenceFormatError("snp.json", "cert_chain must be a list of {cert_type, data} or null")
    certs: dict[str, bytes] = {}
    for entry in chain:
        kind = _field(entry, "cert_type", "cert_chain entry")
        if kind not in CERT_TYPES:
            raise EvidenceFormatError(
                "snp.json", f"cert_type {kind!r} unknown; accepted: {', '.join(CERT_TYPES)}"
            )
        data = _field(entry, "data", "cert_chain entry")
        if not isinstance(data, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in data):
            raise EvidenceFormatError("snp.json", f"cert_chain {kind} data must be a list of bytes")
        certs[kind] = bytes(data)
    return SnpEvidence(report=report, certs=certs)


@dataclass(frozen=True)
class GpuEvidence:
    """One `device_evidence_list` entry, decoded."""

    arch: str
    uuid: str
    evidence: bytes
    certificate_pem: bytes


def _decode_blob(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise EvidenceFormatError("nvidia.json", f"{name} must be a non-empty base64 or hex string")
    if len(value) % 2 == 0 and all(c in string.hexdigits for c in value):
        return bytes.fromhex(value)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceFormatError("nvidia.json", f"{name} is neither hex nor base64") from exc


def nvidia_evidence_from_json(obj: Any) -> list[GpuEvidence]:
    items = obj.get("device_evidence_list") if isinstance(obj, dict) else None
    if not isinstance(items, list) or not items:
        raise EvidenceFormatError("nvidia.json", "NVIDIA evidence needs a non-empty device_evidence_list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise EvidenceFormatError("nvidia.json", f"device_evidence_list[{i}] must be an object")
        arch, uuid = item.get("arch"), item.get("uuid")
        if not isinstance(arch, str) or not isinstance(uuid, str):
            raise EvidenceFormatError("nvidia.json", f"device_evidence_list[{i}] needs string arch and uuid")
        evidence = _decode_blob(item.get("evidence"), f"device_evidence_list[{i}].evidence")
        certificate = _decode_blob(item.get("certificate"), f"device_evidence_list[{i}].certificate")
        out.append(GpuEvidence(arch=arch, uuid=uuid, evidence=evidence, certificate_pem=certificate))
    return out


def nvidia_evidence_to_json(items: list[GpuEvidence]) -> dict:
    return {
        "device_evidence_list": [
            {
                "arch": item.arch,
                "uuid": item.uuid,
                "evidence": base64.b64encode(item.evidence).decode(),
                "certificate": base64.b64encode(item.certificate_pem).decode(),
            }
            for item in items
        ]
    }


def verify_snp_json(
    obj: Any,
    *,
    chain_pem: bytes | None,
    expected_report_data: bytes | None,
    vcek_der: bytes | None = None,
    expected_host_data: bytes | None = None,
) -> dict:
    """Verify Trustee-shaped SNP evidence; the VCEK/VLEK comes from `cert_chain` unless `vcek_der` is given.

    Which of a sent VCEK/VLEK is used follows the report's key_info. An ASK/ARK sent by the guest is ignored:
    trust comes from `chain_pem` or AMD's built-in roots.
    """
    evidence = snp_evidence_from_json(obj)
    vlek_der = None
    if vcek_der is None:
        if AttestationReport.parse(evidence.report).keys.signing_key is SigningKey.VLEK:
            vlek_der = evidence.certs.get("VLEK")
        else:
            vcek_der = evidence.certs.get("VCEK")
        if vcek_der is None and vlek_der is None:
            raise VerificationError(
                "snp.endorsement", "SNP evidence carries no VCEK/VLEK in cert_chain and none was configured"
            )
    return verify_snp_evidence(
        evidence.report,
        vcek_der=vcek_der,
        vlek_der=vlek_der,
        chain_pem=chain_pem,
        expected_report_data=expected_report_data,
        expected_host_data=expected_host_data,
    )


def verify_nvidia_json(obj: Any, *, root_pem: bytes | None, expected_nonce: bytes | None) -> list[dict]:
    """Verify every GPU of a `device_evidence_list`; claims in list order (submods gpu0, gpu1, ...)."""
    return [
        verify_gpu_evidence(
            item.evidence,
            item.certificate_pem,
            root_pem=root_pem,
            expected_nonce=expected_nonce,
            uuid=item.uuid,
            arch=item.arch,
        )
        for item in nvidia_evidence_from_json(obj)
    ]
