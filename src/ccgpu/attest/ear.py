"""EAR attestation result tokens (draft-ietf-rats-ear) as Trustee issues them: a JWT, ES256, signer key in `jwk`.

Each attested device is a submod (`cpu0`, `gpu0`, ...) with an 8-claim trustworthiness vector; its `ear.status`
is the most severe tier in that vector (AR4SI tiers, reference attestation.md §1.4).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "CoCo-Attestation-Service"
VERIFIER_ID = {"developer": "ccgpu", "build": "ccgpu-kbs"}
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
STATUSES = ("none", "affirming", "warning", "contraindicated")


class TokenError(ValueError):
    """A token that cannot be trusted; the text says which check failed."""


def tier(value: int) -> str:
    """AR4SI tier of one trust claim value."""
    if -1 <= value <= 1:
        return "none"
    if 2 <= value <= 31:
        return "affirming"
    if 32 <= value <= 95:
        return "warning"
    if 96 <= value <= 127:
        return "contraindicated"
    raise ValueError(f"trust claim value {value} outside -128..127 tiers used by EAR (-1..127)")


def status_of(vector: dict[str, int]) -> str:
    """The most severe tier in a trust vector; `none` when nothing was claimed."""
    worst = "none"
    for value in vector.values():
        t = tier(value)
        if STATUSES.index(t) > STATUSES.index(worst):
            worst = t
    return worst


@dataclass
class Submod:
    """One device's appraisal: its trust vector, the policy that produced it, and the claims it judged."""

    trust_vector: dict[str, int]
    policy_id: str
    claims: dict[str, Any]

    def to_claims(self) -> dict[str, Any]:
        unknown = set(self.trust_vector) - set(TRUST_CLAIMS)
        if unknown:
            raise ValueError(f"unknown trust claims {sorted(unknown)}; accepted: {', '.join(TRUST_CLAIMS)}")
        return {
            "ear.status": status_of(self.trust_vector),
            "ear.trustworthiness-vector": {k: self.trust_vector[k] for k in TRUST_CLAIMS if k in self.trust_vector},
            "ear.appraisal-policy-id": self.policy_id,
            "ear.veraison.annotated-evidence": self.claims,
        }


class TokenSigner:
    """Signs EAR tokens with a P-256 key (ephemeral unless one is given), embedding the public key as `jwk`."""

    def __init__(
        self,
        key: ECKey | None = None,
        *,
        lifetime_s: int = 300,
        issuer: str = ISSUER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key or ECKey.generate_key("P-256")
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.issuer = issuer

    @property
    def public_jwk(self) -> dict[str, Any]:
        return self.key.as_dict(private=False)

    def issue(self, submods: dict[str, Submod], *, now: float | None = None) -> str:
        if not submods:
            raise ValueError("an EAR token needs at least one submod")
        iat = int(now if now is not None else self.clock())
        claims = {
            "eat_profile": EAT_PROFILE,
            "iat": iat,
            "exp": iat + self.lifetime_s,
            "iss": self.issuer,
            "ear.verifier-id": VERIFIER_ID,
            "submods": {name: s.to_claims() for name, s in submods.items()},
        }
        return jwt.encode({"alg": "ES256", "typ": "JWT", "jwk": self.public_jwk}, claims, self.key)


def verify(token: str, trusted_jwks: list[dict[str, Any]], *, now: float | None = None) -> dict[str, Any]:
    """Verify an EAR token signed by one of the trusted keys and not expired; returns its claims.

    The header `jwk` is never trusted by itself: it must equal a trusted key (a forged token that embeds its
    own key is refused).
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise TokenError("token is not a compact JWT (three base64url parts)")
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError) as e:
        raise TokenError(f"token header unreadable: {e}") from e
    if header.get("alg") != "ES256":
        raise TokenError(f"token alg {header.get('alg')!r} refused; accepted: ES256")
    embedded = header.get("jwk")
    candidates = [k for k in trusted_jwks if _same_key(k, embedded)] if embedded else list(trusted_jwks)
    if not candidates:
        raise TokenError("token signer key is not a trusted EAR signer")
    claims = None
    for jwk in candidates:
        try:
            claims = jwt.decode(token, ECKey.import_key(jwk), algorithms=["ES256"]).claims
            break
        except (JoseError, ValueError):
            continue
    if claims is None:
        raise TokenError("token signature does not verify with a trusted EAR signer key")
    t = now if now is not None else time.time()
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= t:
        raise TokenError("token expired")
    if claims.get("eat_profile") != EAT_PROFILE or not isinstance(claims.get("submods"), dict):
        raise TokenError("token is not an EAR token (eat_profile/submods)")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a compact JWT without checking its signature: only for tokens already verified, or
    verified by someone the caller trusts (for display and logging, never for decisions on untrusted input)."""
    try:
        payload = jws.extract_compact(token.encode()).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, AttributeError) as e:
        raise TokenError("token is not a compact JWT with a JSON payload") from e
    if not isinstance(claims, dict):
        raise TokenError("token payload is not a JSON object")
    return claims


def _same_key(a: dict[str, Any], b: Any) -> bool:
    return isinstance(b, dict) and all(a.get(k) == b.get(k) for k in ("kty", "crv", "x", "y"))


def tee_pubkey_of(claims: dict[str, Any]) -> dict[str, Any]:
    """Where the KBS finds the key to wrap secrets: submods/cpu0/annotated-evidence/runtime_data_claims/tee-pubkey."""
    try:
        key = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"]
    except (KeyError, TypeError) as e:
        raise TokenError("token carries no cpu0 runtime_data_claims.tee-pubkey") from e
    if not isinstance(key, dict):
        raise TokenError("token tee-pubkey is not a JWK object")
    return key
