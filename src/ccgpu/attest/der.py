"""The little DER the vendor certificate extensions need: one TLV reader, and encoders for building test certs.

cryptography hands unknown extensions over as raw bytes (AMD's SPL integers and product name, NVIDIA's DICE
TcbInfo); these helpers read them with strict length checks instead of pulling in an ASN.1 library.
"""

from __future__ import annotations

INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
UTF8_STRING = 0x0C
IA5_STRING = 0x16
SEQUENCE = 0x30


class DerError(ValueError):
    """Malformed DER."""


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of the TLV at `offset`; definite lengths only, as DER requires."""
    if offset + 2 > len(data):
        raise DerError("DER truncated before tag and length")
    tag, first = data[offset], data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise DerError("DER length field is malformed")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise DerError(f"DER value of {length} bytes runs past the end of the data")
    return tag, data[pos : pos + length], pos + length


def read_single(data: bytes, tag: int) -> bytes:
    """The value of a DER blob holding exactly one TLV with `tag`."""
    got, value, end = read_tlv(data)
    if got != tag:
        raise DerError(f"expected DER tag 0x{tag:02x}, got 0x{got:02x}")
    if end != len(data):
        raise DerError("trailing bytes after DER value")
    return value


def read_integer(data: bytes) -> int:
    value = read_single(data, INTEGER)
    if not value:
        raise DerError("empty DER INTEGER")
    return int.from_bytes(value, "big", signed=True)


def read_string(data: bytes) -> str:
    """An IA5String or UTF8String."""
    tag, value, end = read_tlv(data)
    if tag not in (IA5_STRING, UTF8_STRING) or end != len(data):
        raise DerError(f"expected a DER string, got tag 0x{tag:02x}")
    return value.decode("utf-8", errors="replace")


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def encode_integer(n: int) -> bytes:
    return encode(INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))


def encode_sequence(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))
