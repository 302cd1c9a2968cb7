"""Bearer tokens for the serving endpoint: roles, hashed storage, the default token file.

A token is ``aios_`` + 43 random URL-safe characters (256 bits). Only its sha256 is stored, in the
catalog's ``tokens`` table (a token this random needs no slow hash). Roles: ``infer`` may read
metadata and call infer; ``admin`` may also use the model repository routes. The default admin
token lives in ``AIOS_HOME/serve/token`` (mode 0600), created on first use.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time

from .. import config
from ..catalog import catalog
from ..errors import AiosError

ROLES = ("infer", "admin")
PREFIX = "aios_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(role: str = "infer", label: str | None = None) -> str:
    """Make a new token with ``role`` (infer|admin), store its hash, and return the token itself."""
    if role not in ROLES:
        raise AiosError(f"unknown role {role!r}: use infer or admin")
    token = PREFIX + secrets.token_urlsafe(32)
    digest = _hash(token)
    cat = catalog()
    with cat.tx() as db:
        db.execute(
            "INSERT INTO tokens (hash, role, label, created) VALUES (?,?,?,?)", (digest, role, label, time.time())
        )
    cat.audit("token.create", role, label=label, hash_prefix=digest[:12])
    return token


def token_path():
    return config.area("serve") / "token"


def default_token() -> str:
    """The default admin token, from ``AIOS_HOME/serve/token`` (created, 0600, if missing)."""
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        token = path.read_text().strip()
        if token and role_of(token) == "admin":
            return token
    except FileNotFoundError:
        pass
    token = create_token("admin", label="default")
    tmp = path.with_name(f".token.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def role_of(token: str) -> str | None:
    """The role of ``token``, or None if it is not a known token."""
    row = catalog().one("SELECT role FROM tokens WHERE hash = ?", (_hash(token),))
    return row["role"] if row else None


class TokenCache:
    """The server's view of the tokens table: known hashes are cached, misses re-checked at most once a second."""

    def __init__(self, positive_ttl: float = 30.0, negative_ttl: float = 1.0):
        self.positive_ttl, self.negative_ttl = positive_ttl, negative_ttl
        self._cache: dict[str, tuple[str | None, float]] = {}

    def role(self, authorization: str | None) -> str | None:
        """Role for an ``Authorization`` header value, or None (missing, malformed or unknown)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        role = role_of(token) if token.startswith(PREFIX) and len(token) < 200 else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (role, now + (self.positive_ttl if role else self.negative_ttl))
        return role
