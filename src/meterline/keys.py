"""API keys: creation, authentication and scopes.

A key is shown once as ``mlk_<key id>_<secret>``; only SHA-256 of the secret is stored
(the secret is 256 random bits, so a slow password hash adds nothing). Authentication
compares digests in constant time and does the same work for an unknown key id as for a
known one. Scopes: ``ingest`` may send events, ``read`` may read them, ``admin`` may do
both and manage keys. A key may be bound to one customer: it then sends and sees only that
customer's events.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from meterline.errors import AuthError, ScopeError

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
TOKEN_PREFIX = "mlk_"
_KEY_ID_HEX_LENGTH = 16
_SECRET_BYTES = 32
_UNKNOWN_KEY_DIGEST = hashlib.sha256(b"meterline: no such key").digest()

_GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"ingest", "read", "admin"}),
}


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as it is stored: its id, the SHA-256 of its secret (never the secret), its
    scope, customer binding and name, and when it was made."""

    key_id: str
    secret_sha256: bytes
    scope: str
    customer: str | None
    name: str
    created_at_us: int


class KeyStore(Protocol):
    def put_key(self, key: NewKey) -> None: ...

    def get_key(self, key_id: str) -> tuple[bytes, str, str | None, int | None] | None: ...

    def list_keys(self) -> list[tuple[str, str, str | None, str, int, int | None]]: ...

    def revoke_key(self, key_id: str, revoked_at_us: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an authenticated key's id, scope and customer binding."""

    key_id: str
    scope: Scope
    customer: str | None = None

    def require(self, needed: Scope, action: str) -> None:
        """Raise ``ScopeError`` unless this key's scope grants ``needed``."""
        if needed not in _GRANTS[self.scope]:
            raise ScopeError(
                f"key {self.key_id} has scope {self.scope!r}; {action} needs {needed!r}"
            )


def create_key(
    store: KeyStore, scope: str, now_us: int, customer: str | None = None, name: str = ""
) -> tuple[str, str]:
    """Create a key; returns ``(key id, token)``. The token is not stored and not shown again."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    key_id = secrets.token_hex(_KEY_ID_HEX_LENGTH // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    digest = hashlib.sha256(secret.encode()).digest()
    store.put_key(NewKey(key_id, digest, scope, customer, name, now_us))
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secret}"


def authenticate(store: KeyStore, token: str | None) -> Principal:
    """The principal behind ``token``, or ``AuthError`` saying what is wrong with it."""
    if not token:
        raise AuthError("missing API key: send 'Authorization: Bearer mlk_...'")
    key_id, secret = "", ""
    if token.startswith(TOKEN_PREFIX):
        key_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    stored = store.get_key(key_id) if len(key_id) == _KEY_ID_HEX_LENGTH else None
    expected = stored[0] if stored is not None else _UNKNOWN_KEY_DIGEST
    matches = hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), expected)
    if stored is None or not matches:
        raise AuthError("invalid API key")
    _, scope, customer, revoked_at_us = stored
    if revoked_at_us is not None:
        raise AuthError(f"API key {key_id} was revoked")
    return Principal(key_id, scope, customer)  # type: ignore[arg-type]
