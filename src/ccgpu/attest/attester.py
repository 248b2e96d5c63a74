"""Production attesters for a ccgpu guest: the SNP report (configfs-tsm or /dev/sev-guest) and the GPUs' SPDM
evidence through NVML. The evidence JSON they emit is what `ccgpu.attest.verifiers` accepts.

Nothing here runs without the hardware; the pure parts (ioctl numbers, request/response layouts, evidence
JSON) are tested, the syscalls are thin. Host paths go through `Sysfs`, so a test root can stand in for `/`.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import struct
import uuid
from typing import Any

from ccgpu.attest.trustee_evidence import snp_evidence_to_json
from ccgpu.hw.sysfs import Sysfs

SNP_REPORT_LEN = 1184
TSM_REPORT_DIR = "sys/kernel/config/tsm/report"
SEV_GUEST_DEV = "dev/sev-guest"
SEV_GUEST_PLATFORM = "sys/devices/platform/sev-guest"
_SNP_RESP_LEN = 4000
_SNP_RESP_REPORT_OFFSET = 32


class AttesterError(RuntimeError):
    """The platform could not produce evidence; says what was tried and what the platform answered."""


def _iowr(group: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(group) << 8) | nr


class _SnpGuestRequest(ctypes.Structure):
    """struct snp_guest_request_ioctl: msg_version, req_data, resp_data, exitinfo2 (fw_error | vmm_error)."""

    _fields_ = [("msg_version", ctypes.c_uint8), ("req_data", ctypes.c_uint64), ("resp_data", ctypes.c_uint64),
                ("exitinfo2", ctypes.c_uint64)]


SNP_GET_REPORT = _iowr("S", 0x0, ctypes.sizeof(_SnpGuestRequest))
SNP_GET_EXT_REPORT = _iowr("S", 0x2, ctypes.sizeof(_SnpGuestRequest))
_CERTS_BUFFER_LEN = 4 * 4096  # the kernel wants a whole number of pages
# Host-provided certificate table (GHCB spec): entries {guid[16], offset u32, length u32}, a zero guid ends it.
CERT_TABLE_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
}


def parse_cert_table(blob: bytes) -> dict[str, bytes]:
    """The host's certificates by type (VCEK, VLEK, ASK, ARK) from an SNP certificate table; unknown GUIDs
    (e.g. a CRL) are skipped. An empty blob is an empty table."""
    certs: dict[str, bytes] = {}
    for pos in range(0, len(blob) - 23, 24):
        guid = uuid.UUID(bytes=blob[pos:pos + 16])
        offset, length = struct.unpack_from("<II", blob, pos + 16)
        if guid.int == 0:
            return certs
        if offset + length > len(blob) or length == 0:
            raise AttesterError(f"SNP certificate table entry {guid} points outside the {len(blob)}-byte blob")
        if guid in CERT_TABLE_GUIDS:
            certs[CERT_TABLE_GUIDS[guid]] = blob[offset:offset + length]
    if blob:
        raise AttesterError("SNP certificate table has no terminating entry")
    return certs


def snp_report_request(report_data: bytes, vmpl: int = 0) -> bytes:
    """struct snp_report_req: report_data[64], vmpl u32, reserved[28]."""
    if len(report_data) > 64:
        raise AttesterError(f"report_data is {len(report_data)} bytes; SNP accepts at most 64")
    return report_data.ljust(64, b"\0") + struct.pack("<I", vmpl) + bytes(28)


def snp_ext_report_request(report_data: bytes, certs_address: int, certs_len: int) -> bytes:
    """struct snp_ext_report_req: snp_report_req, u64 certs_address, u32 certs_len (padded to 8)."""
    return snp_report_request(report_data) + struct.pack("<QI4x", certs_address, certs_len)


def snp_report_from_response(resp: bytes) -> bytes:
    """struct snp_report_resp: status u32, report_size u32, reserved[24], report."""
    status, size = struct.unpack_from("<II", resp)
    if status != 0:
        raise AttesterError(f"SNP firmware refused the report request (status {status:#x})")
    if size != SNP_REPORT_LEN:
        raise AttesterError(f"SNP firmware returned a {size}-byte report; expected {SNP_REPORT_LEN}")
    return resp[_SNP_RESP_REPORT_OFFSET:_SNP_RESP_REPORT_OFFSET + size]


def snp_evidence_json(report: bytes, certs: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Primary evidence as Trustee's snp verifier reads it: the report in the sev crate's serde form and the
    host-provided certificates (VCEK or VLEK, ASK, ARK) as cert_chain entries."""
    return snp_evidence_to_json(report, certs or None)


class SnpAttester:
    """SEV-SNP guest: configfs-tsm when the kernel offers it, else the /dev/sev-guest ioctl. Either way the
    host's certificate table (VCEK/VLEK) goes along, as the attestation-agent's SNP_GET_EXT_REPORT does."""

    tee = "snp"

    def __init__(self, sysfs: Sysfs | None = None, vcek_der: bytes | None = None) -> None:
        self.sysfs = sysfs or Sysfs("/")
        self.vcek_der = vcek_der

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        if self.sysfs.is_dir(TSM_REPORT_DIR):
            report, certs = self._tsm_report(report_data)
        elif self.sysfs.exists(SEV_GUEST_DEV):
            report, certs = self._ioctl_report(report_data)
        else:
            raise AttesterError(
                f"no SNP guest interface: neither /{TSM_REPORT_DIR} (configfs-tsm) nor /{SEV_GUEST_DEV} exists; "
                "is this an SEV-SNP guest with the sev-guest driver loaded?"
            )
        if self.vcek_der:
            certs["VCEK"] = self.vcek_der
        return snp_evidence_json(report, certs)

    def _tsm_report(self, report_data: bytes) -> tuple[bytes, dict[str, bytes]]:
        entry = f"{TSM_REPORT_DIR}/ccgpu-{uuid.uuid4().hex}"
        path = self.sysfs.path(entry)
        os.mkdir(path)
        try:
            provider = self.sysfs.read(f"{entry}/provider").strip()
            if provider != "sev_guest":
                raise AttesterError(f"configfs-tsm provider is {provider!r}; this attester accepts sev_guest")
            fd = os.open(self.sysfs.path(f"{entry}/inblob"), os.O_WRONLY)
            try:
                os.write(fd, report_data.ljust(64, b"\0"))
            finally:
                os.close(fd)
            report = self.sysfs.read_bytes(f"{entry}/outblob")
            aux = self.sysfs.read_bytes(f"{entry}/auxblob") if self.sysfs.exists(f"{entry}/auxblob") else b""
        finally:
            os.rmdir(path)
        if len(report) < SNP_REPORT_LEN:
            raise AttesterError(f"configfs-tsm outblob is {len(report)} bytes; expected {SNP_REPORT_LEN}")
        return report[:SNP_REPORT_LEN], parse_cert_table(aux)

    def _ioctl_report(self, report_data: bytes) -> tuple[bytes, dict[str, bytes]]:
        import fcntl

        certs = ctypes.create_string_buffer(_CERTS_BUFFER_LEN)
        req = ctypes.create_string_buffer(snp_ext_report_request(report_data, ctypes.addressof(certs),
                                                                 _CERTS_BUFFER_LEN))
        resp = ctypes.create_string_buffer(_SNP_RESP_LEN)
        arg = _SnpGuestRequest(1, ctypes.addressof(req), ctypes.addressof(resp), 0)
        fd = os.open(self.sysfs.path(SEV_GUEST_DEV), os.O_RDWR)
        try:
            fcntl.ioctl(fd, SNP_GET_EXT_REPORT, arg)
        except OSError as e:
            code = e.errno if e.errno is None else errno.errorcode.get(e.errno, e.errno)
            raise AttesterError(f"SNP_GET_EXT_REPORT failed: {code} (exitinfo2 {arg.exitinfo2:#x})") from e
        finally:
            os.close(fd)
        return snp_report_from_response(resp.raw), parse_cert_table(certs.raw)


class NvmlGpuAttester:
    """The guest's NVIDIA GPUs through NVML (nvidia-ml-py, imported only here): SPDM report + certificate chain
    per GPU for the 32-byte nonce, as the attestation-agent's `nvidia` attester emits them."""

    name = "nvidia"

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        try:
            import pynvml
        except ImportError as e:
            raise AttesterError("GPU evidence needs NVML bindings: pip install nvidia-ml-py") from e
        pynvml.nvmlInit()
        try:
            devices = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                report = pynvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
                certs = pynvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
                evidence = bytes(report.attestationReport[: report.attestationReportSize])
                chain = bytes(certs.attestationCertChain[: certs.attestationCertChainSize])
                arch = pynvml.nvmlDeviceGetArchitecture(handle)
                devices.append({
                    "arch": "HOPPER" if arch == getattr(pynvml, "NVML_DEVICE_ARCH_HOPPER", 9) else "BLACKWELL",
                    "uuid": pynvml.nvmlDeviceGetUUID(handle),
                    "evidence": base64.b64encode(evidence).decode(),
                    "certificate": base64.b64encode(chain).decode(),
                })
        finally:
            pynvml.nvmlShutdown()
        if not devices:
            raise AttesterError("NVML sees no GPU in this guest")
        return {"device_evidence_list": devices}
