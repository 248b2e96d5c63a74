"""AMD SEV-SNP attestation report: the 1184-byte layout, parsed and serialised field by field.

Parsing is lossless (reserved bytes are kept), so ``AttestationReport.parse(b).to_bytes() == b`` for any
1184 bytes; meaning is given by small views (`GuestPolicy`, `PlatformInfo`, `KeyInfo`, `TcbVersion`) so a
report can be read without knowing the processor generation, which only the TCB layout depends on.
Layout: SEV-SNP ABI spec, reference/attestation.md §3.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccgpu.attest.errors import EvidenceFormatError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72  # r and s: little-endian, zero-extended from P-384's 48 bytes
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

# (field name, struct code) in report order; codes are little-endian.
_LAYOUT: tuple[tuple[str, str], ...] = (
    ("version", "I"),
    ("guest_svn", "I"),
    ("policy", "Q"),
    ("family_id", "16s"),
    ("image_id", "16s"),
    ("vmpl", "I"),
    ("signature_algo", "I"),
    ("current_tcb", "8s"),
    ("platform_info", "Q"),
    ("key_info", "I"),
    ("reserved_04c", "4s"),
    ("report_data", "64s"),
    ("measurement", "48s"),
    ("host_data", "32s"),
    ("id_key_digest", "48s"),
    ("author_key_digest", "48s"),
    ("report_id", "32s"),
    ("report_id_ma", "32s"),
    ("reported_tcb", "8s"),
    ("cpuid_fam_id", "B"),
    ("cpuid_mod_id", "B"),
    ("cpuid_step", "B"),
    ("reserved_18b", "21s"),
    ("chip_id", "64s"),
    ("committed_tcb", "8s"),
    ("current_build", "B"),
    ("current_minor", "B"),
    ("current_major", "B"),
    ("reserved_1eb", "B"),
    ("committed_build", "B"),
    ("committed_minor", "B"),
    ("committed_major", "B"),
    ("reserved_1ef", "B"),
    ("launch_tcb", "8s"),
    ("launch_mit_vector", "Q"),
    ("current_mit_vector", "Q"),
    ("reserved_208", "152s"),
    ("signature_r", "72s"),
    ("signature_s", "72s"),
    ("signature_reserved", "368s"),
)
_STRUCT = struct.Struct("<" + "".join(code for _, code in _LAYOUT))
assert _STRUCT.size == REPORT_SIZE


class Generation(StrEnum):
    """EPYC generations with their own SNP root keys and TCB layout (KDS product names)."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


def generation_from_cpuid(family: int, model: int) -> Generation | None:
    """The generation named by a report's CPUID family/model (v3+ reports), or None if not recognised."""
    if family == 0x19 and model <= 0x0F:
        return Generation.MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return Generation.GENOA
    if family == 0x1A and model <= 0x11:
        return Generation.TURIN
    return None


def generation_from_product_name(name: str) -> Generation | None:
    """The generation named by a VCEK's product-name extension ("Milan-B0", "Genoa", ...), or None."""
    base = name.split("-", 1)[0].strip().lower()
    for gen in Generation:
        if gen.value.lower() == base:
            return gen
    return None


@dataclass(frozen=True)
class TcbVersion:
    """Security patch levels of the firmware components; fmc exists on Turin only."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def from_raw(cls, raw: bytes, generation: Generation) -> TcbVersion:
        if len(raw) != 8:
            raise EvidenceFormatError("snp.parse", f"TCB_VERSION is 8 bytes, got {len(raw)}")
        if generation is Generation.TURIN:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def to_raw(self, generation: Generation) -> bytes:
        out = bytearray(8)
        if generation is Generation.TURIN:
            out[0], out[1], out[2], out[3], out[7] = (
                (self.fmc or 0),
                self.bootloader,
                self.tee,
                self.snp,
                self.microcode,
            )
        else:
            if self.fmc is not None:
                raise ValueError(f"{generation.value} TCB has no fmc field")
            out[0], out[1], out[6], out[7] = self.bootloader, self.tee, self.snp, self.microcode
        return bytes(out)


def _bit(value: int, n: int) -> bool:
    return bool((value >> n) & 1)


@dataclass(frozen=True)
class GuestPolicy:
    """The guest policy the owner launched the VM with (report offset 0x008)."""

    raw: int

    abi_minor = property(lambda self: self.raw & 0xFF)
    abi_major = property(lambda self: (self.raw >> 8) & 0xFF)
    smt_allowed = property(lambda self: _bit(self.raw, 16))
    migrate_ma = property(lambda self: _bit(self.raw, 18))
    debug_allowed = property(lambda self: _bit(self.raw, 19))
    single_socket = property(lambda self: _bit(self.raw, 20))
    cxl_allowed = property(lambda self: _bit(self.raw, 21))
    mem_aes_256_xts = property(lambda self: _bit(self.raw, 22))
    rapl_disabled = property(lambda self: _bit(self.raw, 23))
    ciphertext_hiding = property(lambda self: _bit(self.raw, 24))
    page_swap_disabled = property(lambda self: _bit(self.raw, 25))

    @staticmethod
    def build(
        *,
        abi_major: int = 0,
        abi_minor: int = 0,
        smt_allowed: bool = True,
        migrate_ma: bool = False,
        debug_allowed: bool = False,
        single_socket: bool = False,
    ) -> GuestPolicy:
        """A policy value with bit 17 (reserved, must be one) set."""
        raw = (abi_minor & 0xFF) | ((abi_major & 0xFF) << 8) | (1 << 17)
        raw |= smt_allowed << 16 | migrate_ma << 18 | debug_allowed << 19 | single_socket << 20
        return GuestPolicy(raw)


@dataclass(frozen=True)
class PlatformInfo:
    """Platform state at report time (report offset 0x040)."""

    raw: int

    smt_enabled = property(lambda self: _bit(self.raw, 0))
    tsme_enabled = property(lambda self: _bit(self.raw, 1))
    ecc_enabled = property(lambda self: _bit(self.raw, 2))
    rapl_disabled = property(lambda self: _bit(self.raw, 3))
    ciphertext_hiding_enabled = property(lambda self: _bit(self.raw, 4))
    alias_check_complete = property(lambda self: _bit(self.raw, 5))
    sev_tio_enabled = property(lambda self: _bit(self.raw, 7))


class SigningKey(StrEnum):
    VCEK = "vcek"
    VLEK = "vlek"
    NONE = "none"


@dataclass(frozen=True)
class KeyInfo:
    """Which key signed the report and whether the chip id is masked (report offset 0x048)."""

    raw: int

    author_key_en = property(lambda self: _bit(self.raw, 0))
    mask_chip_key = property(lambda self: _bit(self.raw, 1))

    @property
    def signing_key_code(self) -> int:
        return (self.raw >> 2) & 0x7

    @property
    def signing_key(self) -> SigningKey | None:
        """VCEK, VLEK or none; None for the reserved codes 2..6."""
        return {0: SigningKey.VCEK, 1: SigningKey.VLEK, 7: SigningKey.NONE}.get(self.signing_key_code)


@dataclass(frozen=True)
class AttestationReport:
    """Every field of the report, in layout order; TCBs stay raw because their layout depends on the CPU."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    key_info: int
    reserved_04c: bytes
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    reserved_18b: bytes
    chip_id: bytes
    committed_tcb: bytes
    current_build: int
    current_minor: int
    current_major: int
    reserved_1eb: int
    committed_build: int
    committed_minor: int
    committed_major: int
    reserved_1ef: int
    launch_tcb: bytes
    launch_mit_vector: int
    current_mit_vector: int
    reserved_208: bytes
    signature_r: bytes
    signature_s: bytes
    signature_reserved: bytes

    @classmethod
    def parse(cls, data: bytes) -> AttestationReport:
        """Parse exactly 1184 bytes; anything else is refused with the length found."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EvidenceFormatError("snp.parse", f"SNP report must be bytes, got {type(data).__name__}")
        if len(data) != REPORT_SIZE:
            raise EvidenceFormatError(
                "snp.parse", f"SNP report must be exactly {REPORT_SIZE} bytes (0x4A0), got {len(data)}"
            )
        return cls(*_STRUCT.unpack(bytes(data)))

    def to_bytes(self) -> bytes:
        return _STRUCT.pack(*(getattr(self, f.name) for f in fields(self)))

    def signed_bytes(self) -> bytes:
        """The region the signature covers: bytes 0x000-0x29F."""
        return self.to_bytes()[:SIGNED_SIZE]

    def der_signature(self) -> bytes:
        """The (r, s) pair as a DER ECDSA-Sig-Value, for cryptography's verify()."""
        r = int.from_bytes(self.signature_r, "little")
        s = int.from_bytes(self.signature_s, "little")
        return encode_dss_signature(r, s)

    # Views --------------------------------------------------------------------------------------------
    @property
    def guest_policy(self) -> GuestPolicy:
        return GuestPolicy(self.policy)

    @property
    def platform(self) -> PlatformInfo:
        return PlatformInfo(self.platform_info)

    @property
    def keys(self) -> KeyInfo:
        return KeyInfo(self.key_info)

    def cpuid_generation(self) -> Generation | None:
        """The generation from CPUID bytes; v2 reports carry none (the bytes are reserved zero there)."""
        if self.version < 3:
            return None
        return generation_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def tcb(self, which: str, generation: Generation) -> TcbVersion:
        """One of current/reported/committed/launch TCB, decoded for `generation`."""
        if which not in ("current", "reported", "committed", "launch"):
            raise ValueError(f"unknown TCB {which!r}; accepted: current, reported, committed, launch")
        return TcbVersion.from_raw(getattr(self, f"{which}_tcb"), generation)


def _padded(value: bytes, size: int, name: str) -> bytes:
    if len(value) > size:
        raise ValueError(f"{name} is at most {size} bytes, got {len(value)}")
    return value + bytes(size - len(value))


def build_report(
    *,
    generation: Generation,
    report_data: bytes = b"",
    measurement: bytes = b"",
    host_data: bytes = b"",
    policy: GuestPolicy | None = None,
    tcb: TcbVersion,
    chip_id: bytes = b"",
    vmpl: int = 0,
    version: int = 3,
    guest_svn: int = 0,
    platform_info: int = 0b11,
    signing_key: SigningKey = SigningKey.VCEK,
    report_id: bytes = b"",
) -> AttestationReport:
    """An unsigned report with the given contents (all TCBs = `tcb`); a signer fills signature_r/s."""
    cpuid = {Generation.MILAN: (0x19, 0x01), Generation.GENOA: (0x19, 0x11), Generation.TURIN: (0x1A, 0x02)}
    fam, mod = cpuid[generation] if version >= 3 else (0, 0)
    key_code = {SigningKey.VCEK: 0, SigningKey.VLEK: 1, SigningKey.NONE: 7}[signing_key]
    raw_tcb = tcb.to_raw(generation)
    return AttestationReport(
        version=version,
        guest_svn=guest_svn,
        policy=(policy or GuestPolicy.build()).raw,
        family_id=bytes(16),
        image_id=bytes(16),
        vmpl=vmpl,
        signature_algo=SIGNATURE_ALGO_ECDSA_P384_SHA384,
        current_tcb=raw_tcb,
        platform_info=platform_info,
        key_info=key_code << 2,
        reserved_04c=bytes(4),
        report_data=_padded(report_data, 64, "report_data"),
        measurement=_padded(measurement, 48, "measurement"),
        host_data=_padded(host_data, 32, "host_data"),
        id_key_digest=bytes(48),
        author_key_digest=bytes(48),
        report_id=_padded(report_id, 32, "report_id"),
        report_id_ma=b"\xff" * 32,
        reported_tcb=raw_tcb,
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=1 if version >= 3 else 0,
        reserved_18b=bytes(21),
        chip_id=_padded(chip_id, 64, "chip_id"),
        committed_tcb=raw_tcb,
        current_build=4,
        current_minor=52,
        current_major=1,
        reserved_1eb=0,
        committed_build=4,
        committed_minor=52,
        committed_major=1,
        reserved_1ef=0,
        launch_tcb=raw_tcb,
        launch_mit_vector=0,
        current_mit_vector=0,
        reserved_208=bytes(152),
        signature_r=bytes(72),
        signature_s=bytes(72),
        signature_reserved=bytes(368),
    )
