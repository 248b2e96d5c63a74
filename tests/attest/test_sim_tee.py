"""Simulated evidence sources look like the vendors' at the certificate and wire level."""

from __future__ import annotations

import base64

from cryptography import x509

from ccgpu.attest.amd_certs import AmdChain, VekExtensions
from ccgpu.attest.snp import AttestationReport, Generation, SigningKey
from ccgpu.attest.spdm import SpdmEvidence
from ccgpu.sim.tee import SimulatedGpu, SimulatedSnpPlatform


def test_simulated_amd_chain_uses_amds_algorithms_and_names(milan):
    chain = AmdChain.from_pem(milan.chain_pem)
    chain.verify()  # RSA-PSS SHA-384 salt 48, ARK self-signed, ASK and ASVK by the ARK
    assert chain.ark.public_key().key_size == 4096
    assert chain.ark.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS
    assert chain.ask.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "SEV-Milan"
    assert chain.asvk is not None


def test_simulated_vcek_carries_the_tcb_and_chip_id_extensions(milan):
    ext = VekExtensions.of(x509.load_der_x509_certificate(milan.vek_der), "VCEK")
    assert ext.product_name == "Milan-B0"
    assert (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl) == (3, 0, 8, 115)
    assert ext.hwid == milan.chip_id and ext.fmc_spl is None


def test_turin_vcek_hwid_is_the_first_8_bytes_of_the_chip_id():
    turin = SimulatedSnpPlatform(Generation.TURIN)
    ext = VekExtensions.of(x509.load_der_x509_certificate(turin.vek_der), "VCEK")
    assert ext.hwid == turin.chip_id[:8] and ext.fmc_spl == turin.tcb.fmc


def test_simulated_report_is_a_v3_report_with_cpuid_and_le_signature(milan):
    report = AttestationReport.parse(milan.report(report_data=b"\x05" * 64))
    assert report.version == 3 and report.cpuid_generation() is Generation.MILAN
    assert report.report_data == b"\x05" * 64 and report.keys.signing_key is SigningKey.VCEK
    assert any(report.signature_r) and not any(report.signature_r[48:])


def test_simulated_gpu_chain_has_the_h100_shape(sim_gpu):
    certs = x509.load_pem_x509_certificates(sim_gpu.cert_chain_pem)
    names = [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in certs]
    assert names == [
        "GH100 A01 GSP FMC LF",
        "GH100 A01 GSP BROM",
        "NVIDIA GH100 Provisioner ICA 1",
        "NVIDIA GH100 Identity",
        "NVIDIA Device Identity CA",
    ]
    dice = certs[0].extensions.get_extension_for_oid(x509.ObjectIdentifier("2.23.133.5.4.1")).value.value
    assert dice[-48:] == sim_gpu.fwid


def test_simulated_gpu_evidence_is_request_and_signed_response_for_the_nonce(sim_gpu):
    nonce = b"\x42" * 32
    ev = SpdmEvidence.parse(sim_gpu.evidence(nonce))
    assert ev.request.nonce == nonce and ev.request.param2 == 0xFF
    assert len(ev.response.blocks) == 64 and len(ev.response.signature) == 96


def test_evidence_list_entry_is_base64_of_evidence_and_pem_chain(sim_gpu):
    entry = sim_gpu.evidence_list_entry(bytes(32))
    assert entry["arch"] == "HOPPER" and entry["uuid"] == sim_gpu.uuid
    assert SpdmEvidence.parse(base64.b64decode(entry["evidence"])).request.nonce == bytes(32)
    assert base64.b64decode(entry["certificate"]) == sim_gpu.cert_chain_pem


def test_two_simulated_gpus_have_different_identities():
    a, b = SimulatedGpu(), SimulatedGpu()
    assert a.fwid != b.fwid and a.root_pem != b.root_pem


def test_simulated_guest_measurement_is_exposed_for_reference_values(milan):
    from ccgpu.attest import verify_snp_evidence

    claims = verify_snp_evidence(
        milan.report(), vcek_der=milan.vek_der, chain_pem=milan.chain_pem, expected_report_data=None
    )
    assert claims["measurement"] == milan.measurement.hex()
    assert claims["reported_tcb_snp"] == milan.tcb.snp
