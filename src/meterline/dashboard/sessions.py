"""Dashboard login sessions: a random token in a cookie, the key's principal in memory.

Why not put the API key in the cookie: a key is a long-lived bearer credential for the
whole HTTP API; a session token is useless outside the dashboard, expires, and dies with
the server process (or a logout). The key is checked once, at login, and never kept.

Only a SHA-256 of each token is held (a memory dump does not yield live cookies), with
the principal it stands for, its expiry and its CSRF token: every form that changes
something (logout, unblock) carries that CSRF token, compared in constant time. The store
holds at most ``SESSIONS_MAX`` sessions; logging in past that drops the oldest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from meterline.clock import Clock, system_clock_us
from meterline.keys import Principal

COOKIE_NAME = "meterline_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_LIFETIME_S = 8 * 3600
"""A session ends this long after login (a working day), whatever happens meanwhile."""
SESSIONS_MAX = 10_000
_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """Who is logged in (the key's principal), until when, and the session's CSRF token."""

    principal: Principal
    expires_us: int
    csrf: str

    def csrf_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(self.csrf, offered)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    """Sessions in memory, keyed by the SHA-256 of their token; thread-safe."""

    def __init__(
        self,
        clock: Clock = system_clock_us,
        lifetime_s: int = SESSION_LIFETIME_S,
        limit: int = SESSIONS_MAX,
    ) -> None:
        self.clock = clock
        self.lifetime_us = lifetime_s * 1_000_000
        self.limit = limit
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session for ``principal``: returns the token (for the cookie, shown to
        nobody else) and the session."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = self.clock()
        session = Session(principal, now + self.lifetime_us, secrets.token_urlsafe(_TOKEN_BYTES))
        with self._lock:
            self._drop_expired(now)
            while len(self._sessions) >= self.limit:
                self._sessions.popitem(last=False)
            self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session behind ``token``, or None (unknown, expired or logged out)."""
        if not token:
            return None
        key = _digest(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires_us <= self.clock():
                del self._sessions[key]
                return None
            return session

    def close(self, token: str | None) -> None:
        """End the session behind ``token`` (logout); nothing when there is none."""
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def close_key(self, key_id: str) -> None:
        """End every session opened with key ``key_id`` (it was revoked)."""
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.principal.key_id == key_id]:
                del self._sessions[key]

    def _drop_expired(self, now: int) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires_us <= now]:
            del self._sessions[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
