"""Attestation: evidence formats (SEV-SNP, SPDM), their verifiers, and (elsewhere in this package) the KBS.

Stable entry points: `verify_snp_evidence`, `verify_gpu_evidence`, `VerificationError`.
"""

from ccgpu.attest.errors import EvidenceFormatError, VerificationError
from ccgpu.attest.verify_gpu import verify_gpu_evidence
from ccgpu.attest.verify_snp import verify_snp_evidence

__all__ = ["EvidenceFormatError", "VerificationError", "verify_gpu_evidence", "verify_snp_evidence"]
