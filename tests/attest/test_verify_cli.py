"""`ccgpu attest verify snp|gpu`: claims as JSON on success, exit 1 naming the failed check, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from ccgpu.attest.verify_cli import raw_or_hex
from ccgpu.cli import app
from tests.conftest import ccgpu_command, ccgpu_env


@pytest.fixture
def vectors(shared):
    return shared / "vectors"


def invoke(*args: str):
    return CliRunner().invoke(app, ["attest", "verify", *args])


def test_snp_vector_verifies_and_prints_claims_as_json(vectors):
    result = invoke(
        "snp",
        str(vectors / "snp/test-report.bin"),
        "--vcek",
        str(vectors / "snp/test-vcek.der"),
        "--chain",
        str(vectors / "snp/milan_ask_ark_asvk.pem"),
    )
    assert result.exit_code == 0, result.output
    claims = json.loads(result.stdout)
    assert claims["generation"] == "Milan" and claims["reported_tcb_snp"] == 8
    assert "warning: no --report-data given, so the report_data binding was not checked" in result.stderr


def test_snp_report_given_as_hex_text_verifies_with_the_builtin_chain(vectors, tmp_path):
    hex_report = tmp_path / "report.hex"
    hex_report.write_text((vectors / "snp/test-report.bin").read_bytes().hex() + "\n")
    result = invoke("snp", str(hex_report), "--vcek", str(vectors / "snp/test-vcek.der"))
    assert result.exit_code == 0, result.output


def test_snp_report_data_mismatch_exits_1_naming_the_check(vectors):
    result = invoke(
        "snp",
        str(vectors / "snp/test-report.bin"),
        "--vcek",
        str(vectors / "snp/test-vcek.der"),
        "--report-data",
        "00" * 64,
    )
    assert result.exit_code == 1
    assert "verification failed [snp.report_data]" in result.stderr
    assert result.stdout == ""


def test_flipped_snp_report_exits_1_with_the_signature_check(vectors, tmp_path):
    report = bytearray((vectors / "snp/test-report.bin").read_bytes())
    report[0x90] ^= 0x01
    (tmp_path / "r.bin").write_bytes(bytes(report))
    result = invoke("snp", str(tmp_path / "r.bin"), "--vcek", str(vectors / "snp/test-vcek.der"))
    assert result.exit_code == 1
    assert "report signature does not verify with the VCEK" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--vcek", "X", "--vlek", "X"], "give --vcek or --vlek, not both"),
        ([], "--vcek CERT or --vlek CERT"),
        (["--vcek", "/nonexistent/vcek.der"], "cannot read VCEK '/nonexistent/vcek.der'"),
        (["--vcek", "X", "--report-data", "zz"], "--report-data must be hex digits"),
    ],
)
def test_snp_bad_input_exits_2_saying_what_is_accepted(vectors, args, message):
    args = [str(vectors / "snp/test-vcek.der") if a == "X" else a for a in args]
    result = invoke("snp", str(vectors / "snp/test-report.bin"), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_gpu_vector_in_hex_verifies_with_nonce_and_prints_claims(vectors):
    result = invoke(
        "gpu",
        str(vectors / "nvidia/hopperAttestationReport.txt"),
        "--certs",
        str(vectors / "nvidia/hopper_cert_chain_case1.txt"),
        "--root",
        str(vectors / "nvidia/verifier_device_root.pem"),
        "--nonce",
        "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
    )
    assert result.exit_code == 0, result.output
    claims = json.loads(result.stdout)
    assert claims["config"]["fwid"].startswith("f5c384ae") and len(claims["measurements"]) == 64
    assert "warning" not in result.stderr  # the nonce was checked


def test_gpu_evidence_verified_without_a_nonce_warns_that_freshness_was_not_checked(vectors):
    result = invoke(
        "gpu",
        str(vectors / "nvidia/hopperAttestationReport.txt"),
        "--certs",
        str(vectors / "nvidia/hopper_cert_chain_case1.txt"),
        "--root",
        str(vectors / "nvidia/verifier_device_root.pem"),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch"] == "Hopper"
    assert "warning: no --nonce given, so the SPDM nonce was not checked: a replayed report verifies" in result.stderr


def test_gpu_raw_bytes_and_wrong_nonce_exit_1(vectors, tmp_path):
    raw = tmp_path / "evidence.bin"
    raw.write_bytes(bytes.fromhex((vectors / "nvidia/hopperAttestationReport.txt").read_text()))
    result = invoke(
        "gpu", str(raw), "--certs", str(vectors / "nvidia/hopper_cert_chain_case1.txt"), "--nonce", "11" * 32
    )
    assert result.exit_code == 1
    assert "verification failed [spdm.nonce]" in result.stderr


def test_raw_or_hex_decodes_only_hex_text():
    assert raw_or_hex(b"0x0a0B\n") == b"\x0a\x0b"
    assert raw_or_hex(b"\x02\x00\x00\x00") == b"\x02\x00\x00\x00"
    assert raw_or_hex(b"abc") == b"abc"  # odd length: not hex


def test_ccgpu_help_lists_the_verify_commands():
    out = subprocess.run(  # noqa: S603 - fixed argv, this checkout's CLI
        ccgpu_command("attest", "verify", "--help"),
        env=ccgpu_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "snp" in out and "gpu" in out and "Verify an SEV-SNP report" in out
