"""SPDM 1.1 GET_MEASUREMENTS request + MEASUREMENTS response, as NVIDIA GPUs return them for attestation.

Evidence bytes = request (37 B: version, 0xE0, param1, param2, nonce[32], slot) || response (version, 0x60,
param1, param2, block count, record length u24, blocks, responder nonce[32], opaque length u16, opaque TLVs,
ECDSA P-384 signature r||s big-endian). The signature covers everything before it. Parsing is strict: every
length is checked against what is left, and anything left over is an error (reference/attestation.md §4.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ccgpu.attest.errors import EvidenceFormatError

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
NONCE_SIZE = 32
SIGNATURE_SIZE = 96  # ECDSA P-384 r||s
SPEC_DMTF = 0x01

# NVIDIA opaque-data field types (OPAQUE_FIELD_ID_*), named as Trustee's claims name them.
OPAQUE_FIELDS: dict[int, str] = {
    1: "cert_issuer_name",
    2: "cert_authority_key_identifier",
    3: "driver_version",
    4: "gpu_info",
    5: "sku",
    6: "vbios_version",
    7: "manufacturer_id",
    8: "tamper_detection",
    9: "smc",
    10: "vpr",
    11: "nvdec0_status",
    12: "measurement_count",
    13: "cpr_info",
    14: "board_id",
    15: "chip_sku",
    16: "chip_sku_mod",
    17: "project",
    18: "project_sku",
    19: "project_sku_mod",
    20: "fwid",
    21: "protected_pcie_status",
    22: "switch_pdi",
    23: "floorswept_ports",
    24: "position_id",
    25: "lock_switch_status",
    32: "gpu_link_conn",
    34: "opaque_data_version",
}
OPAQUE_TYPE = {name: number for number, name in OPAQUE_FIELDS.items()}
_TEXT_FIELDS = {
    "driver_version",
    "chip_sku",
    "chip_sku_mod",
    "project",
    "project_sku",
    "project_sku_mod",
    "nvdec0_status",
    "protected_pcie_status",
}


class _Reader:
    """Cursor over bytes whose every read names what it was reading when the data runs out."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EvidenceFormatError(
                "spdm.parse",
                f"{self.what} truncated: {field} needs {n} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} left",
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u24(self, field: str) -> int:
        return int.from_bytes(self.take(3, field), "little")

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


@dataclass(frozen=True)
class MeasurementsRequest:
    version: int
    param1: int
    param2: int  # measurement operation: 0xFF = all blocks
    nonce: bytes | None
    slot_id: int | None

    @property
    def signature_requested(self) -> bool:
        return bool(self.param1 & 0x01)

    @classmethod
    def read(cls, r: _Reader) -> MeasurementsRequest:
        version, code = r.u8("request version"), r.u8("request code")
        if code != GET_MEASUREMENTS:
            raise EvidenceFormatError(
                "spdm.parse", f"request code is 0x{code:02X}; accepted: 0xE0 (GET_MEASUREMENTS)"
            )
        param1, param2 = r.u8("request param1"), r.u8("request param2")
        if not param1 & 0x01:
            return cls(version, param1, param2, None, None)
        return cls(version, param1, param2, r.take(NONCE_SIZE, "request nonce"), r.u8("request slot id"))

    def to_bytes(self) -> bytes:
        head = bytes([self.version, GET_MEASUREMENTS, self.param1, self.param2])
        if not self.signature_requested:
            return head
        return head + (self.nonce or b"") + bytes([self.slot_id or 0])


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block: index, DMTF value type, value (a SHA-384 digest on Hopper)."""

    index: int
    value_type: int
    value: bytes
    spec: int = SPEC_DMTF

    @classmethod
    def read(cls, r: _Reader) -> MeasurementBlock:
        index, spec = r.u8("block index"), r.u8("block specification")
        size = r.u16(f"block {index} size")
        body = _Reader(r.take(size, f"block {index} measurement"), f"measurement block {index}")
        if not spec & SPEC_DMTF:
            raise EvidenceFormatError(
                "spdm.parse", f"measurement block {index} uses specification 0x{spec:02X}; only DMTF (bit 0)"
            )
        value_type = body.u8("DMTF value type")
        value = body.take(body.u16("DMTF value size"), "DMTF value")
        if body.left:
            raise EvidenceFormatError(
                "spdm.parse", f"measurement block {index} has {body.left} bytes after its DMTF value"
            )
        return cls(index, value_type, value, spec)

    def to_bytes(self) -> bytes:
        dmtf = bytes([self.value_type]) + struct.pack("<H", len(self.value)) + self.value
        return bytes([self.index, self.spec]) + struct.pack("<H", len(dmtf)) + dmtf


@dataclass(frozen=True)
class OpaqueField:
    type: int
    data: bytes

    @property
    def name(self) -> str:
        return OPAQUE_FIELDS.get(self.type, f"opaque_{self.type}")


def parse_opaque(data: bytes) -> tuple[OpaqueField, ...]:
    """NVIDIA's opaque data: back-to-back TLVs (type u16 LE, size u16 LE, data)."""
    r = _Reader(data, "opaque data")
    out = []
    while r.left:
        kind = r.u16("opaque field type")
        out.append(OpaqueField(kind, r.take(r.u16(f"opaque field {kind} size"), f"opaque field {kind} data")))
    return tuple(out)


def serialise_opaque(fields: tuple[OpaqueField, ...] | list[OpaqueField]) -> bytes:
    return b"".join(struct.pack("<HH", f.type, len(f.data)) + f.data for f in fields)


@dataclass(frozen=True)
class MeasurementsResponse:
    version: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes
    opaque: tuple[OpaqueField, ...]
    signature: bytes

    @classmethod
    def read(cls, r: _Reader, *, signed: bool) -> MeasurementsResponse:
        version, code = r.u8("response version"), r.u8("response code")
        if code != MEASUREMENTS:
            raise EvidenceFormatError(
                "spdm.parse", f"response code is 0x{code:02X}; accepted: 0x60 (MEASUREMENTS)"
            )
        param1, param2 = r.u8("response param1"), r.u8("response param2")
        count = r.u8("number of blocks")
        record = _Reader(
            r.take(r.u24("measurement record length"), "measurement record"), "measurement record"
        )
        blocks = []
        while record.left:
            blocks.append(MeasurementBlock.read(record))
        if len(blocks) != count:
            raise EvidenceFormatError(
                "spdm.parse", f"response says {count} measurement blocks but its record holds {len(blocks)}"
            )
        nonce = r.take(NONCE_SIZE, "responder nonce")
        opaque = parse_opaque(r.take(r.u16("opaque length"), "opaque data"))
        signature = r.take(SIGNATURE_SIZE, "signature") if signed else b""
        return cls(version, param1, param2, tuple(blocks), nonce, opaque, signature)

    def to_bytes(self, *, with_signature: bool = True) -> bytes:
        record = b"".join(b.to_bytes() for b in self.blocks)
        opaque = serialise_opaque(self.opaque)
        out = bytes([self.version, MEASUREMENTS, self.param1, self.param2, len(self.blocks)])
        out += (
            len(record).to_bytes(3, "little") + record + self.nonce + struct.pack("<H", len(opaque)) + opaque
        )
        return out + self.signature if with_signature else out

    def opaque_field(self, name: str) -> bytes | None:
        kind = OPAQUE_TYPE[name]
        return next((f.data for f in self.opaque if f.type == kind), None)


@dataclass(frozen=True)
class SpdmEvidence:
    """A GET_MEASUREMENTS exchange as one evidence blob; `signed_bytes` is what the signature covers."""

    request: MeasurementsRequest
    response: MeasurementsResponse
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> SpdmEvidence:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EvidenceFormatError("spdm.parse", f"SPDM evidence must be bytes, got {type(data).__name__}")
        data = bytes(data)
        r = _Reader(data, "SPDM evidence")
        request = MeasurementsRequest.read(r)
        response = MeasurementsResponse.read(r, signed=request.signature_requested)
        if r.left:
            raise EvidenceFormatError("spdm.parse", f"SPDM evidence has {r.left} bytes after the response")
        return cls(request, response, data)

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[: len(self.raw) - len(self.response.signature)]


def opaque_claims(fields: tuple[OpaqueField, ...]) -> dict:
    """Opaque fields rendered as Trustee renders them in the GPU `config` claim."""
    out: dict = {}
    for f in fields:
        if f.name == "measurement_count":
            out[f.name] = {
                str(i + 1): n
                for i, (n,) in enumerate(struct.iter_unpack("<I", f.data[: len(f.data) // 4 * 4]))
            }
        elif f.name == "vbios_version":
            out[f.name] = vbios_version(f.data)
        elif f.name in _TEXT_FIELDS:
            out[f.name] = _text_or_hex(f.data)
        else:
            out[f.name] = f.data.hex()
    return out


def vbios_version(data: bytes) -> str:
    """VBIOS version as nvidia-smi prints it: bytes 3,2,1,0 then 4, e.g. 96.00.9f.00.01."""
    if len(data) < 5:
        return data.hex()
    return ".".join(f"{b:02x}" for b in (data[3], data[2], data[1], data[0], data[4]))


def _text_or_hex(data: bytes) -> str:
    text = data.split(b"\0", 1)[0]
    if text and all(0x20 <= c < 0x7F for c in text):
        return text.decode("ascii")
    return data.hex()
