"""What a certificate's claims are worth to a reader (issue 13, item 5): no empty certificate shown as an
achievement.

A claim can be true, re-derived by the checker, and still guarantee nothing. `vacuous_reason` says why, for

* a `topk-stability` claim of value 0: it guarantees none of the top-k features;
* a stability claim (`stability-gradient`, `stability-moreaugrad`) whose bound B > 0 is not smaller than
  ||a||_2 of the certificate's own explanation a: every b with ||b - a||_2 <= B includes b = 0 and -a, so the
  bound says nothing about the explanation (a bound of 0, "a cannot change", is never vacuous).

The human-facing summaries (`certify explain`, `certify verify`, `certify demo`, the report's claim table)
show such a claim as "vacuous (reason)" instead of a plain certified number and count it apart from the
certified ones; their --json outputs add "vacuous" (the reason, or null) per claim. The certificate document
and its schema are unchanged: vacuity is a reading of the values a certificate holds, not a claim of its own.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from certify.certificates.claims import STABILITY_TYPES, Claim
from certify.certificates.document import Certificate, PropertyCertificate, decode_array
from certify.errors import CertificateFormatError

__all__ = ["TOPK_VACUOUS", "STABILITY_VACUOUS", "vacuous_reason", "explanation_norm", "vacuous_reasons",
           "vacuous_label"]

TOPK_VACUOUS = "guarantees none of the top-k"
STABILITY_VACUOUS = "the bound is not smaller than the explanation itself"


def vacuous_reason(claim: Claim, explanation_norm: float | None) -> str | None:
    """Why `claim` certifies nothing (module docstring), or None when it does say something (or has no value:
    a refused claim is shown as refused). `explanation_norm` is ||a||_2 of the certificate's explanation,
    None when unknown (then no stability claim is judged vacuous)."""
    if claim.kind == "refused" or claim.value is None:
        return None
    if claim.type in ("topk-stability", "topk-smoothed") and claim.value <= 0:
        return TOPK_VACUOUS
    if (claim.type in STABILITY_TYPES and explanation_norm is not None and claim.value > 0
            and claim.value >= explanation_norm):
        return STABILITY_VACUOUS
    return None


def explanation_norm(cert: Certificate | PropertyCertificate, base_dir: Path | None = None) -> float | None:
    """||a||_2 of the certificate's stored explanation (a sidecar is read from `base_dir`), or None when it has
    none (a property certificate) or it cannot be read (the checker says why)."""
    record = getattr(cert, "explanation", None)
    if record is None:
        return None
    try:
        norm = float(np.linalg.norm(decode_array(record, "explanation", base_dir).ravel()))
    except CertificateFormatError:
        return None
    return norm if math.isfinite(norm) else None


def vacuous_reasons(cert: Certificate | PropertyCertificate, base_dir: Path | None = None) -> dict[str, str | None]:
    """`vacuous_reason` of every claim of `cert`, by claim id."""
    norm = explanation_norm(cert, base_dir)
    return {c.id: vacuous_reason(c, norm) for c in cert.claims}


def vacuous_label(reason: str) -> str:
    """How a vacuous claim is labelled in the human-facing outputs."""
    return f"vacuous ({reason})"
