"""Attestation: evidence verification, EAR tokens, the KBS server and guest client, the GPU ready gate."""
