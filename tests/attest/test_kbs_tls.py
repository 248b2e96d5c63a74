"""HTTPS between guest and KBS (Trustee serves HTTPS by default): the guest trusts only the given certificate."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kbs_fixtures import SECRET, Kbs

from ccgpu.attest.client import KbsClient
from ccgpu.attest.kbs import serve, tls_context

URI = "kbs:///default/key/model"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def https_url(kbs: Kbs, tmp_path: Path):
    cert, key = _self_signed(tmp_path, "kbs")
    runner = await serve(kbs.server, "127.0.0.1", 0, tls=tls_context(cert, key))
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", cert
    finally:
        await runner.cleanup()


async def test_guest_gets_the_secret_over_https_trusting_the_kbs_certificate(kbs: Kbs, https_url):
    url, cert = https_url
    async with KbsClient(url, kbs.snp, [kbs.gpu], kbs_cert=cert) as client:
        assert await client.get_resource(URI) == SECRET


async def test_guest_refuses_a_kbs_whose_certificate_it_does_not_trust(kbs: Kbs, https_url, tmp_path):
    import aiohttp

    url, _ = https_url
    other, _ = _self_signed(tmp_path, "impostor")
    async with KbsClient(url, kbs.snp, [kbs.gpu], kbs_cert=other) as client:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.attest()
    assert kbs.snp.reports == []  # no evidence was produced for an unauthenticated peer
