"""`ccgpu attest verify snp|gpu`: verify evidence files, print the claims as JSON, exit 0 only if all passed.

Exit codes: 0 verified (claims on stdout), 1 a check failed (the check and reason on stderr), 2 the input
could not be read (missing file, bad hex, conflicting options). Evidence may be raw bytes or hex text, as the
published vectors come (SNP reports raw, NVIDIA reports hex).
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

from ccgpu.attest.errors import VerificationError
from ccgpu.attest.verify_gpu import verify_gpu_evidence
from ccgpu.attest.verify_snp import verify_snp_evidence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class InputError(Exception):
    """Input the command cannot use; the message says what was wrong and what is accepted."""


def raw_or_hex(data: bytes) -> bytes:
    """Hex text (whitespace and a 0x prefix allowed) decoded; anything else returned as raw bytes."""
    text = b"".join(data.split())
    if text[:2].lower() == b"0x":
        text = text[2:]
    if text and len(text) % 2 == 0 and all(chr(c) in string.hexdigits for c in text):
        return bytes.fromhex(text.decode())
    return data


def parse_hex_option(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    cleaned = value.strip().removeprefix("0x")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise InputError(f"{name} must be hex digits (an even number of 0-9a-f), got {value!r}") from exc


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc


def _warn_unchecked_freshness(option: str, field: str) -> None:
    """Without the expected value, old evidence verifies as well as fresh: say so, beside the claims."""
    print(
        f"warning: no {option} given, so the {field} was not checked: a replayed report verifies too",
        file=sys.stderr,
    )


def verify_snp_files(
    report: Path, *, vcek: Path | None, vlek: Path | None, chain: Path | None, report_data: str | None
) -> dict:
    if vcek is not None and vlek is not None:
        raise InputError("give --vcek or --vlek, not both")
    if vcek is None and vlek is None:
        raise InputError(
            "give the certificate that signed the report: --vcek CERT or --vlek CERT (DER or PEM)"
        )
    expected = parse_hex_option(report_data, "--report-data")
    if expected is None:
        _warn_unchecked_freshness("--report-data", "report_data binding")
    return verify_snp_evidence(
        raw_or_hex(_read(report, "SNP report") or b""),
        vcek_der=_read(vcek, "VCEK"),
        vlek_der=_read(vlek, "VLEK"),
        chain_pem=_read(chain, "AMD chain"),
        expected_report_data=expected,
    )


def verify_gpu_files(evidence: Path, *, certs: Path, root: Path | None, nonce: str | None) -> dict:
    expected = parse_hex_option(nonce, "--nonce")
    if expected is None:
        _warn_unchecked_freshness("--nonce", "SPDM nonce")
    return verify_gpu_evidence(
        raw_or_hex(_read(evidence, "GPU evidence") or b""),
        _read(certs, "GPU certificate chain") or b"",
        root_pem=_read(root, "GPU root certificate"),
        expected_nonce=expected,
    )


def run(verify, **kwargs) -> int:
    """Call a verify_*_files function and report as the command line does; returns the exit code."""
    try:
        claims = verify(**kwargs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except VerificationError as exc:
        print(f"verification failed [{exc.check}]: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(claims, indent=2, sort_keys=True))
    return EXIT_OK
