"""Hand edits of certificates for the checker's tests: a certificate's JSON object changed and parsed again."""
import json

from certify.certificates.document import parse_certificate


def edited(cert, change):
    """The certificate after `change(doc)` on its JSON object, parsed again (as a user's hand edit)."""
    doc = json.loads(cert.to_json())
    change(doc)
    return parse_certificate(json.dumps(doc))


def doc_claim(doc, claim_id):
    """The claim with id `claim_id` in a certificate's JSON object."""
    return next(c for c in doc["claims"] if c["id"] == claim_id)
