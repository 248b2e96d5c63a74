"""The one exception evidence verification raises: every refusal names the check that failed."""

from __future__ import annotations


class VerificationError(Exception):
    """Evidence failed a check. `check` is a stable id (e.g. ``snp.signature``); str() says what was wrong.

    Callers that only need the reason use ``str(err)``; policy or metrics code can switch on ``err.check``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class EvidenceFormatError(VerificationError):
    """The evidence bytes could not be parsed (truncated, garbled, wrong lengths)."""
