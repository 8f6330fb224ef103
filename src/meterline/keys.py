"""API keys: creation, authentication and scopes.

A key is shown once as ``mlk_<key id>_<secret>``; only SHA-256 of the secret is stored
(the secret is 256 random bits, so a slow password hash adds nothing). Authentication
compares digests in constant time and does the same work for an unknown key id as for a
known one. Scopes: ``ingest`` may send events, ``read`` may read them, ``admin`` may do
both and manage keys. A key may be bound to one customer: it then sends and sees only that
customer's events.

Roles (the contract workspace, docs/workspace.md) are scopes too, not a parallel model:
``viewer`` is the ``read`` scope, ``editor`` may read and propose contract changes,
``approver`` may read and approve or reject them, ``admin`` may do everything. A key is
created with a role's scope; a user (a name and a password, for the dashboard and HTTP
Basic) holds one role. A user's password is stored only as scrypt (RFC 7914) of it with
a random salt, compared in constant time; an unknown name costs the same work. A user's
principal has ``key_id`` ``user:<name>``, so a key and a user are never the same caller.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from meterline.errors import AuthError, InputError, ScopeError

Scope = Literal["ingest", "read", "admin", "editor", "approver"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin", "editor", "approver")
Role = Literal["viewer", "editor", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "approver", "admin")
ROLE_SCOPES: dict[str, Scope] = {
    "viewer": "read",
    "editor": "editor",
    "approver": "approver",
    "admin": "admin",
}
"""The scope each role stands for."""
USER_PREFIX = "user:"
USER_NAME_LENGTH_MAX = 64
PASSWORD_LENGTH_MIN = 12
PASSWORD_LENGTH_MAX = 1024
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_BYTES = 2**14, 8, 1, 32
_SALT_BYTES = 16
TOKEN_PREFIX = "mlk_"
_KEY_ID_HEX_LENGTH = 16
_SECRET_BYTES = 32
_UNKNOWN_KEY_DIGEST = hashlib.sha256(b"meterline: no such key").digest()

_GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"ingest", "read", "admin", "editor", "approver"}),
    "editor": frozenset({"read", "editor"}),
    "approver": frozenset({"read", "approver"}),
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


def role_of(scope: str) -> Role | None:
    """The role a scope stands for (``ingest`` stands for none)."""
    for role, role_scope in ROLE_SCOPES.items():
        if role_scope == scope:
            return role  # type: ignore[return-value]
    return None


class UserStore(Protocol):
    def put_user(
        self, name: str, password_hash: str, role: str, customer: str | None, created_at_us: int
    ) -> None: ...

    def get_user(self, name: str) -> tuple[str, str, str | None] | None: ...


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt hex>$<digest hex>`` of ``password`` (a random salt by default)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=_SCRYPT_BYTES,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


@functools.cache
def _unknown_user_hash() -> str:
    """What a name no user has is checked against (the same scrypt work as a real one, so
    the answer's time does not tell which names exist): made on first use, not at import
    (it costs ~80 ms, which every command would pay)."""
    return hash_password("meterline: no such user", b"\0" * _SALT_BYTES)


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (compared in constant time)."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(digest) // 2,
    )
    return hmac.compare_digest(found, bytes.fromhex(digest))


def user_problems(name: str, password: str, role: str) -> list[str]:
    """What is wrong with a new user, each as ``field: reason``."""
    problems = []
    if (
        not name
        or len(name) > USER_NAME_LENGTH_MAX
        or not name.replace("-", "").replace("_", "").replace(".", "").replace("@", "").isalnum()
    ):
        problems.append(
            f"name: {name[:80]!r} must be 1 to {USER_NAME_LENGTH_MAX} letters, digits,"
            " '-', '_', '.' or '@'"
        )
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        problems.append(
            f"password: must be {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters"
        )
    if role not in ROLES:
        problems.append(f"role: must be one of {', '.join(ROLES)}, got {role[:40]!r}")
    return problems


def add_user(
    store: UserStore,
    name: str,
    password: str,
    role: str,
    now_us: int,
    customer: str | None = None,
) -> None:
    """Add a user with ``role`` (``InputError`` naming each bad field; a taken name is the
    store's error)."""
    problems = user_problems(name, password, role)
    if problems:
        raise InputError("; ".join(problems))
    store.put_user(name, hash_password(password), role, customer, now_us)


def authenticate_user(store: UserStore, name: str, password: str) -> Principal:
    """The principal of user ``name`` (``AuthError`` when the name or password is wrong:
    the same answer, after the same work, either way)."""
    stored = store.get_user(name) if len(name) <= USER_NAME_LENGTH_MAX else None
    matches = password_matches(
        password[:PASSWORD_LENGTH_MAX], stored[0] if stored else _unknown_user_hash()
    )
    if stored is None or not matches:
        raise AuthError("invalid user name or password")
    _, role, customer = stored
    return Principal(f"{USER_PREFIX}{name}", ROLE_SCOPES[role], customer)
