"""Build certificates: the entry point `certify_explanations`, dispatching to the per-method claim issuers
of `certify.certificates.issuers` (kept as a module so existing imports keep working)."""
from certify.certificates.issuers import NO_STABILITY, certify_explanations

__all__ = ["certify_explanations", "NO_STABILITY"]
