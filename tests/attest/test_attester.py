"""Production attesters: the parts that do not need SNP hardware or NVML (layouts, interface selection)."""

from __future__ import annotations

import os
import struct

import pytest

from ccgpu.attest.attester import (
    CERT_TABLE_GUIDS,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    AttesterError,
    NvmlGpuAttester,
    SnpAttester,
    parse_cert_table,
    snp_evidence_json,
    snp_ext_report_request,
    snp_report_from_response,
    snp_report_request,
)
from ccgpu.attest.trustee_evidence import snp_report_from_json as from_serde
from ccgpu.hw.sysfs import Sysfs


def test_snp_get_report_ioctl_number_is_iowr_s_0_with_the_32_byte_argument():
    assert SNP_GET_REPORT == 0xC0205300


def test_report_request_pads_report_data_and_sets_vmpl():
    req = snp_report_request(b"\x01" * 48, vmpl=0)
    assert len(req) == 96 and req[:48] == b"\x01" * 48 and req[48:64] == bytes(16)
    assert struct.unpack_from("<I", req, 64) == (0,)
    with pytest.raises(AttesterError, match="at most 64"):
        snp_report_request(bytes(65))


def test_report_is_taken_from_offset_32_of_the_response_and_firmware_errors_are_named():
    report = bytes(range(256)) * 4 + bytes(160)
    resp = struct.pack("<II", 0, 1184) + bytes(24) + report + bytes(4000 - 32 - 1184)
    assert snp_report_from_response(resp) == report
    with pytest.raises(AttesterError, match="status 0x16"):
        snp_report_from_response(struct.pack("<II", 0x16, 0) + bytes(3992))


def test_snp_evidence_carries_the_report_in_serde_form_and_the_vcek_as_a_cert_chain_entry(shared):
    report = (shared / "vectors" / "snp" / "test-report.bin").read_bytes()
    ev = snp_evidence_json(report, {"VCEK": b"\x30\x82"})
    assert from_serde(ev["attestation_report"]) == report
    assert ev["attestation_report"]["signature"]["r"] == list(report[0x2A0:0x2E8])
    assert ev["cert_chain"] == [{"cert_type": "VCEK", "data": [0x30, 0x82]}]


def _cert_table(entries: dict[str, bytes]) -> bytes:
    guids = {v: k for k, v in CERT_TABLE_GUIDS.items()}
    header_len = 24 * (len(entries) + 1)
    table, data = b"", b""
    for name, der in entries.items():
        table += guids[name].bytes + struct.pack("<II", header_len + len(data), len(der))
        data += der
    return table + bytes(24) + data


def test_host_certificate_table_yields_the_certificates_by_type():
    blob = _cert_table({"VCEK": b"vcek-der", "ASK": b"ask", "ARK": b"ark-der"}) + bytes(4096)
    assert parse_cert_table(blob) == {"VCEK": b"vcek-der", "ASK": b"ask", "ARK": b"ark-der"}
    assert parse_cert_table(b"") == {} and parse_cert_table(bytes(16384)) == {}


def test_certificate_table_pointing_outside_the_blob_is_refused():
    bad = next(iter(CERT_TABLE_GUIDS)).bytes + struct.pack("<II", 4000, 10) + bytes(24)
    with pytest.raises(AttesterError, match="points outside"):
        parse_cert_table(bad)


def test_ext_report_request_carries_the_certificate_buffer_after_the_report_request():
    req = snp_ext_report_request(b"\x01" * 64, 0x7F0000001000, 16384)
    assert len(req) == 112 and struct.unpack_from("<QI", req, 96) == (0x7F0000001000, 16384)
    assert SNP_GET_EXT_REPORT == 0xC0205302


def test_configfs_tsm_report_is_read_from_outblob(tmp_path, shared):
    """configfs-tsm: a directory per request; the fake kernel is a pre-created entry the attester fills."""
    root = Sysfs(tmp_path)
    report = bytearray((shared / "vectors" / "snp" / "test-report.bin").read_bytes())
    report[0x90:0xC0] = b"\x05" * 48
    report = bytes(report)
    base = tmp_path / "sys/kernel/config/tsm/report"
    base.mkdir(parents=True)
    real_mkdir, real_rmdir = os.mkdir, os.rmdir

    def kernel_mkdir(path, *a, **kw):
        real_mkdir(path, *a, **kw)
        (path / "provider").write_text("sev_guest\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(report)
        (path / "auxblob").write_bytes(_cert_table({"VCEK": b"host-vcek"}))

    def kernel_rmdir(path):
        for f in path.iterdir():
            f.unlink()
        real_rmdir(path)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "mkdir", kernel_mkdir)
    mp.setattr(os, "rmdir", kernel_rmdir)
    try:
        ev = SnpAttester(root).evidence(b"\xaa" * 48)
    finally:
        mp.undo()
    assert ev["attestation_report"]["measurement"] == [5] * 48
    assert ev["cert_chain"] == [{"cert_type": "VCEK", "data": list(b"host-vcek")}]
    assert list(base.iterdir()) == []


def test_guest_without_snp_interfaces_gets_a_clear_error(tmp_path):
    with pytest.raises(AttesterError, match="neither .*configfs-tsm.* nor .*sev-guest"):
        SnpAttester(Sysfs(tmp_path)).evidence(bytes(64))


def test_gpu_attester_without_nvml_bindings_says_what_to_install():
    try:
        import pynvml  # noqa: F401
    except ImportError:
        with pytest.raises(AttesterError, match="nvidia-ml-py"):
            NvmlGpuAttester().evidence(bytes(32))
    else:
        pytest.skip("nvidia-ml-py is installed here")
