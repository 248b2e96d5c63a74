"""Simulated TEE evidence sources: an SEV-SNP platform and an H100 GPU that sign with test keys.

Both build key hierarchies with the vendors' algorithms and extensions (RSA-4096 ARK/ASK/ASVK with PSS
SHA-384 salt 48 and a P-384 VCEK/VLEK carrying TCB and hwID extensions; a five-certificate P-384 GPU chain
whose leaf carries a DICE TcbInfo FWID), so the production verifiers check their output through exactly the
code path real evidence takes, with the test root passed in as the trust anchor.
Knobs let tests make evidence that must be refused (debug policy, wrong TCB, other nonce, ...).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ccgpu.attest import amd_certs, der
from ccgpu.attest.nvidia_certs import OID_TCG_DICE_TCB_INFO
from ccgpu.attest.snp import AttestationReport, Generation, GuestPolicy, SigningKey, TcbVersion, build_report
from ccgpu.attest.spdm import (
    OPAQUE_TYPE,
    SPDM_VERSION_11,
    MeasurementBlock,
    MeasurementsRequest,
    MeasurementsResponse,
    OpaqueField,
)

_NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_SIM_ORG = "ccgpu simulated TEE (test keys, not trusted)"
_SHA384_OID = "2.16.840.1.101.3.4.2.2"


def _name(common_name: str, org: str = _SIM_ORG) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, *, ca: bool, not_after: datetime = _NOT_AFTER
):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# ---------------------------------------------------------------------------------------------- AMD SEV-SNP


@dataclass(frozen=True)
class _AmdTestRoots:
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate
    asvk_key: rsa.RSAPrivateKey
    asvk: x509.Certificate


def _pss_sign(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA384(), rsa_padding=amd_certs.amd_pss())


@functools.cache
def _rsa_keys() -> tuple[rsa.RSAPrivateKey, ...]:
    """Three RSA-4096 keys made once per process (each takes about a second) and shared by the generations."""
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=4096) for _ in range(3))


@functools.cache
def _amd_test_roots(generation: Generation) -> _AmdTestRoots:
    """Test ARK/ASK/ASVK certificates for one generation."""
    ark_key, ask_key, asvk_key = _rsa_keys()
    gen = generation.value
    ark_name = _name(f"ARK-{gen}")
    ark = _pss_sign(_builder(ark_name, ark_name, ark_key.public_key(), ca=True), ark_key)
    ask = _pss_sign(_builder(_name(f"SEV-{gen}"), ark_name, ask_key.public_key(), ca=True), ark_key)
    asvk = _pss_sign(_builder(_name(f"SEV-VLEK-{gen}"), ark_name, asvk_key.public_key(), ca=True), ark_key)
    return _AmdTestRoots(ark_key, ark, ask_key, ask, asvk_key, asvk)


def _vek_extensions(
    generation: Generation, tcb: TcbVersion, hwid: bytes | None
) -> list[x509.UnrecognizedExtension]:
    spl = {"3.1": tcb.bootloader, "3.2": tcb.tee, "3.3": tcb.snp, "3.4": 0, "3.5": 0, "3.6": 0, "3.7": 0}
    spl["3.8"] = tcb.microcode
    if generation is Generation.TURIN:
        spl["3.9"] = tcb.fmc or 0
    product = {Generation.MILAN: "Milan-B0", Generation.GENOA: "Genoa-B1", Generation.TURIN: "Turin-C1"}
    values = {"1": der.encode_integer(0), "2": der.encode(der.IA5_STRING, product[generation].encode())}
    values.update({k: der.encode_integer(v) for k, v in spl.items()})
    if hwid is not None:
        values["4"] = hwid
    return [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{amd_certs.AMD_OID}.{k}"), v)
        for k, v in values.items()
    ]


class SimulatedSnpPlatform:
    """An SEV-SNP host CPU with test AMD roots: issues its VCEK (or VLEK) and signs guest reports.

    `tcb` is what the platform runs (its reports' TCBs); `cert_tcb` what its VCEK certifies (default: same),
    so a test can make a VCEK that does not match the reported TCB.
    """

    def __init__(
        self,
        generation: Generation = Generation.MILAN,
        *,
        tcb: TcbVersion | None = None,
        cert_tcb: TcbVersion | None = None,
        chip_id: bytes | None = None,
        signing_key: SigningKey = SigningKey.VCEK,
        vek_not_after: datetime = _NOT_AFTER,
    ) -> None:
        self.generation = generation
        default_fmc = 1 if generation is Generation.TURIN else None
        self.tcb = tcb or TcbVersion(bootloader=3, tee=0, snp=8, microcode=115, fmc=default_fmc)
        self.chip_id = chip_id if chip_id is not None else os.urandom(64)
        self.signing_key = signing_key
        # The launch digest of "the" simulated guest: what an RVPS reference value for it would hold.
        self.measurement = hashlib.sha384(b"ccgpu simulated guest").digest()
        self._roots = _amd_test_roots(generation)
        self._vek_key = ec.generate_private_key(ec.SECP384R1())
        hwid = None
        if signing_key is SigningKey.VCEK:
            hwid = self.chip_id[:8] if generation is Generation.TURIN else self.chip_id
        builder = _builder(
            _name(f"SEV-{signing_key.value.upper()}"),
            (self._roots.asvk if signing_key is SigningKey.VLEK else self._roots.ask).subject,
            self._vek_key.public_key(),
            ca=False,
            not_after=vek_not_after,
        )
        for ext in _vek_extensions(generation, cert_tcb or self.tcb, hwid):
            builder = builder.add_extension(ext, critical=False)
        signer = self._roots.asvk_key if signing_key is SigningKey.VLEK else self._roots.ask_key
        self.vek = _pss_sign(builder, signer)

    @property
    def vek_der(self) -> bytes:
        """The VCEK (or VLEK) certificate, DER, as KDS serves it."""
        return self.vek.public_bytes(serialization.Encoding.DER)

    @property
    def chain_pem(self) -> bytes:
        """ASK, ARK and ASVK in one PEM bundle, the layout AMD's per-generation files use."""
        return _pem(self._roots.ask, self._roots.ark, self._roots.asvk)

    @property
    def ark_pem(self) -> bytes:
        return _pem(self._roots.ark)

    def unsigned_report(
        self,
        *,
        report_data: bytes = b"",
        measurement: bytes | None = None,
        host_data: bytes = b"",
        policy: GuestPolicy | None = None,
        vmpl: int = 0,
        version: int = 3,
        reported_tcb: TcbVersion | None = None,
    ) -> AttestationReport:
        report = build_report(
            generation=self.generation,
            report_data=report_data,
            measurement=measurement if measurement is not None else self.measurement,
            host_data=host_data,
            policy=policy,
            tcb=self.tcb,
            chip_id=self.chip_id,
            vmpl=vmpl,
            version=version,
            signing_key=self.signing_key,
            report_id=os.urandom(32),
        )
        if reported_tcb is not None:
            report = replace(report, reported_tcb=reported_tcb.to_raw(self.generation))
        return report

    def sign(self, report: AttestationReport) -> bytes:
        """The report with this platform's VCEK/VLEK signature filled in, as 1184 bytes."""
        der_sig = self._vek_key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der_sig)
        signed = replace(report, signature_r=r.to_bytes(72, "little"), signature_s=s.to_bytes(72, "little"))
        return signed.to_bytes()

    def report(self, **fields) -> bytes:
        """A signed report; keyword arguments as for `unsigned_report`."""
        return self.sign(self.unsigned_report(**fields))


# ---------------------------------------------------------------------------------------------- NVIDIA H100


def default_measurements(count: int = 64, seed: bytes = b"ccgpu simulated H100") -> dict[int, bytes]:
    """Deterministic SHA-384 measurement values for blocks 1..count."""
    return {i: hashlib.sha384(seed + i.to_bytes(2, "big")).digest() for i in range(1, count + 1)}


def _dice_tcb_info(public_key: ec.EllipticCurvePublicKey, fwid: bytes) -> bytes:
    """DICE TcbInfo shaped like an H100 leaf's: version, the key's SPKI, then (SHA-384, FWID) last."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = der.encode_sequence(der.encode_oid(_SHA384_OID), der.encode(der.OCTET_STRING, fwid))
    return der.encode_sequence(der.encode_integer(1), spki, digest)


class SimulatedGpu:
    """A Hopper GPU in CC mode with a test device identity chain, answering GET_MEASUREMENTS with a signature.

    `fwid` is the firmware id in the leaf certificate and (unless overridden per call) in the opaque data.
    """

    def __init__(
        self,
        *,
        uuid: str = "GPU-00000000-0000-0000-0000-000000000000",
        measurements: dict[int, bytes] | None = None,
        driver_version: str = "550.90.07",
        vbios_version: bytes = bytes.fromhex("009f009601000000"),
        fwid: bytes | None = None,
    ) -> None:
        self.uuid = uuid
        self.measurements = dict(measurements if measurements is not None else default_measurements())
        self.driver_version = driver_version
        self.vbios_version = vbios_version
        self.fwid = fwid if fwid is not None else os.urandom(48)
        keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(5)]
        root_key, identity_key, ica_key, brom_key, self._leaf_key = keys
        names = [
            _name("NVIDIA Device Identity CA"),
            _name("NVIDIA GH100 Identity"),
            _name("NVIDIA GH100 Provisioner ICA 1"),
            _name("GH100 A01 GSP BROM"),
            _name("GH100 A01 GSP FMC LF"),
        ]
        signers = [root_key, root_key, identity_key, ica_key, brom_key]
        certs = []
        for i, key in enumerate(keys):
            builder = _builder(names[i], names[max(i - 1, 0)], key.public_key(), ca=i < 4)
            if i == 4:
                ext = x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(OID_TCG_DICE_TCB_INFO), _dice_tcb_info(key.public_key(), self.fwid)
                )
                builder = builder.add_extension(ext, critical=False)
            certs.append(builder.sign(signers[i], hashes.SHA384()))
        self._certs = certs

    @property
    def cert_chain_pem(self) -> bytes:
        """Leaf first, root last, as NVML's attestation certificate chain comes."""
        return _pem(*reversed(self._certs))

    @property
    def root_pem(self) -> bytes:
        return _pem(self._certs[0])

    def opaque_fields(self, fwid: bytes) -> list[OpaqueField]:
        counts = struct.pack("<64I", *([1] * len(self.measurements) + [0] * (64 - len(self.measurements))))
        t = OPAQUE_TYPE
        return [
            OpaqueField(t["vbios_version"], self.vbios_version),
            OpaqueField(t["board_id"], bytes.fromhex("b1030000")),
            OpaqueField(t["chip_sku"], b"882".ljust(9, b"\0")),
            OpaqueField(t["chip_sku_mod"], b"0".ljust(5, b"\0")),
            OpaqueField(t["project"], b"1010\0"),
            OpaqueField(t["project_sku"], b"0200\0"),
            OpaqueField(t["project_sku_mod"], b"\0\0"),
            OpaqueField(t["driver_version"], self.driver_version.encode() + b"\0"),
            OpaqueField(t["gpu_info"], bytes.fromhex("8001000000000000")),
            OpaqueField(t["measurement_count"], counts),
            OpaqueField(t["cpr_info"], bytes.fromhex("00c00100")),
            OpaqueField(t["nvdec0_status"], b"U"),
            OpaqueField(t["fwid"], fwid),
            OpaqueField(t["protected_pcie_status"], b"U"),
        ]

    def evidence(
        self,
        nonce: bytes,
        *,
        measurements: dict[int, bytes] | None = None,
        report_fwid: bytes | None = None,
    ) -> bytes:
        """GET_MEASUREMENTS request || signed MEASUREMENTS response for the 32-byte `nonce`."""
        if len(nonce) != 32:
            raise ValueError(f"SPDM nonce is 32 bytes, got {len(nonce)}")
        values = measurements if measurements is not None else self.measurements
        request = MeasurementsRequest(SPDM_VERSION_11, 0x01, 0xFF, nonce, 0)
        response = MeasurementsResponse(
            version=SPDM_VERSION_11,
            param1=0,
            param2=0,
            blocks=tuple(MeasurementBlock(i, 0x01, v) for i, v in sorted(values.items())),
            nonce=os.urandom(32),
            opaque=tuple(self.opaque_fields(report_fwid if report_fwid is not None else self.fwid)),
            signature=b"",
        )
        signed = request.to_bytes() + response.to_bytes(with_signature=False)
        r, s = decode_dss_signature(self._leaf_key.sign(signed, ec.ECDSA(hashes.SHA384())))
        return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def evidence_list_entry(self, nonce: bytes) -> dict:
        """One `device_evidence_list` entry as the attestation-agent's NVIDIA attester sends it."""
        return {
            "arch": "HOPPER",
            "uuid": self.uuid,
            "evidence": base64.b64encode(self.evidence(nonce)).decode(),
            "certificate": base64.b64encode(self.cert_chain_pem).decode(),
        }
