"""Stored invoice documents decoded once per distinct bytes.

Every read of the invoices makes new ``StoredInvoice`` rows, and a dashboard reads them
all after each ledger change; decoding a document (``core.documents.decode_invoice``)
costs far more than hashing it. So decoded records are kept in memory by the SHA-256 of
their bytes.

Invariants: a record is immutable (a frozen struct), so a kept one is what decoding the
same bytes again gives; a changed row (other bytes) is another key; bytes that do not
decode raise every time and are never kept; at most ``DECODED_INVOICES_KEPT_MAX`` are
kept (past that they start over).
"""

from __future__ import annotations

import hashlib
import threading

from meterline.core.documents import Invoice, decode_invoice

__all__ = ["DECODED_INVOICES_KEPT_MAX", "decoded_invoice"]

DECODED_INVOICES_KEPT_MAX = 20_000
"""Decoded invoice documents kept in memory at once."""

_decoded: dict[bytes, Invoice] = {}
_decoded_lock = threading.Lock()


def decoded_invoice(document: bytes) -> Invoice:
    """``decode_invoice(document)``, decoded once per distinct bytes."""
    digest = hashlib.sha256(document).digest()
    with _decoded_lock:
        found = _decoded.get(digest)
    if found is None:
        found = decode_invoice(document)
        with _decoded_lock:
            if len(_decoded) >= DECODED_INVOICES_KEPT_MAX:
                _decoded.clear()
            _decoded[digest] = found
    return found
