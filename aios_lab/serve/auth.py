"""Bearer tokens for the serving endpoint: create, list, revoke, expire; the default token file; the server's cache.

A token is ``aios_`` + 43 random URL-safe characters (256 bits). Only its sha256 is stored, in the
catalog's ``tokens`` table (a token this random needs no slow hash), with a short public id used to
list and revoke it. Roles: ``infer`` may read metadata and call infer; ``admin`` may also use the
model repository routes. The default admin token lives in ``AIOS_HOME/serve/token`` (mode 0600).
A token may be scoped to some models (``models=["digits", "lm"]``): it gets 403 on any other model, and the
repository index it reads lists only its own.

>>> t = create_token("infer", expires="30d", label="batch scorer")    # the secret, shown once
>>> tokens()                                                         # ids, roles, dates: never secrets
>>> revoke_token(tokens()[-1].id)                                    # 401 on the endpoint within seconds
>>> create_token("infer", models=["digits", "lm"])                   # 403 on every other model
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import config
from ..catalog import catalog
from ..errors import Forbidden, InvalidInput, NotFound
from ..names import NAME_RE
from ..render import Table, age
from .errors import TokenRequired

ROLES = ("infer", "admin")
PREFIX = "aios_"
MAX_EXPIRY_S = 10 * 365 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry_seconds(expires: float | int | str) -> float:
    """Seconds from a number of seconds or a duration such as ``90m``, ``12h``, ``30d``, ``2w``."""
    if isinstance(expires, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", expires.lower())
        if not m:
            raise InvalidInput(f"expiry {expires!r}: give a duration such as 90m, 12h, 30d or 2w")
        seconds = float(m[1]) * _UNITS[m[2]]
    elif isinstance(expires, (int, float)) and not isinstance(expires, bool):
        seconds = float(expires)
    else:
        raise InvalidInput(f"expiry {expires!r}: give seconds or a duration such as 30d")
    if not 0 < seconds <= MAX_EXPIRY_S:
        raise InvalidInput(f"expiry {expires!r}: must be more than 0 and at most 10 years")
    return seconds


@dataclass(frozen=True)
class Token:
    """A token as ``aios token list`` shows it: never the secret, never its hash."""

    id: str
    role: str
    label: str | None
    created: float
    last_used: float | None
    expires: float | None
    revoked: float | None
    models: tuple[str, ...] | None = None  # the models it may use; None: every model

    @property
    def state(self) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= time.time():
            return "expired"
        return "active"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "role": self.role,
            "label": self.label,
            "created": self.created,
            "last_used": self.last_used,
            "expires": self.expires,
            "revoked": self.revoked,
            "state": self.state,
            "models": list(self.models) if self.models is not None else None,
        }


def parse_models(models: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``"digits,lm"`` or ``["digits", "lm"]`` -> ("digits", "lm"); None stays None (every model)."""
    if models is None:
        return None
    names = models.split(",") if isinstance(models, str) else list(models)
    if not all(isinstance(n, str) for n in names):
        raise InvalidInput("--models takes model names, e.g. --models digits,lm")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise InvalidInput("--models is empty: name the models the token may use, e.g. --models digits,lm")
    bad = [n for n in names if not NAME_RE.fullmatch(n)]
    if bad:
        raise InvalidInput(f"--models: {bad[0]!r} is not a model name (lowercase letters, digits, '.', '_', '-')")
    return tuple(dict.fromkeys(names))


def create_token(
    role: str = "infer",
    expires: float | int | str | None = None,
    label: str | None = None,
    models: str | list[str] | tuple[str, ...] | None = None,
) -> str:
    """Make a token with ``role`` (infer|admin), valid for ``expires`` (seconds or ``30d``; None: no end),
    for ``models`` only if given (names; None: every model); store its hash and return the token itself (the
    only time it is shown)."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: use infer or admin")
    scope = parse_models(models)
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise InvalidInput("a token label is a note of at most 200 characters")
    now = time.time()
    until = None if expires is None else now + expiry_seconds(expires)
    token = PREFIX + secrets.token_urlsafe(32)
    digest = _hash(token)
    cat = catalog()
    for _ in range(5):
        token_id = secrets.token_hex(4)
        try:
            with cat.tx() as db:
                db.execute(
                    "INSERT INTO tokens (hash, role, label, created, id, expires, models) VALUES (?,?,?,?,?,?,?)",
                    (digest, role, label, now, token_id, until, json.dumps(scope) if scope else None),
                )
            break
        except sqlite3.IntegrityError:  # an id collision (1 in 4 billion): draw another
            continue
    cat.audit("token.create", token_id, role=role, label=label, expires=until, models=scope)
    return token


def tokens() -> list[Token]:
    """Every token, oldest first: id, role, label, created, last used, expiry, revocation."""
    rows = catalog().query(
        "SELECT id, role, label, created, last_used, expires, revoked, models FROM tokens ORDER BY created, id"
    )
    return [Token(**{**dict(r), "models": _scope(r["models"])}) for r in rows]


def _scope(stored: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(stored)) if stored else None


def token_table() -> Table:
    """``aios token list``."""
    when = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"
    used = lambda t: age(t.last_used) if t.last_used else "never"
    scope = lambda t: ", ".join(t.models) if t.models is not None else "all"
    rows = [
        (t.id, t.role, scope(t), t.label or "", when(t.created), used(t), when(t.expires), t.state) for t in tokens()
    ]
    return Table(
        ["id", "role", "models", "label", "created", "last used", "expires", "state"],
        rows,
        title="tokens",
        empty="no tokens: `aios token create --role infer` makes one",
    )


def revoke_token(token_id: str) -> Token:
    """Revoke the token with this id (see :func:`tokens`): the endpoint answers 401 to it within seconds."""
    cat = catalog()
    with cat.tx() as db:
        row = db.execute("SELECT revoked FROM tokens WHERE id = ?", (str(token_id),)).fetchone()
        if row is None:
            raise NotFound(f"no token with id {token_id!r}; `aios token list` shows the ids")
        if row["revoked"] is None:
            db.execute("UPDATE tokens SET revoked = ? WHERE id = ?", (time.time(), str(token_id)))
    cat.audit("token.revoke", str(token_id))
    return next(t for t in tokens() if t.id == str(token_id))


def token_path():
    return config.area("serve") / "token"


def default_token() -> str:
    """The default admin token, from ``AIOS_HOME/serve/token`` (made anew, 0600, if missing, revoked or expired)."""
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


def _lookup(token: str) -> tuple:
    """(role or None, why it is refused, expiry, models it is scoped to or None) for a presented token."""
    if not token.startswith(PREFIX) or len(token) >= 200:
        return None, "invalid", None
    row = catalog().one("SELECT role, expires, revoked, models FROM tokens WHERE hash = ?", (_hash(token),))
    if row is None:
        return None, "invalid", None
    if row["revoked"] is not None:
        return None, "revoked", None
    if row["expires"] is not None and row["expires"] <= time.time():
        return None, "expired", None
    scope = _scope(row["models"])  # a scoped token answers a fourth element: the models it may use
    return (row["role"], "", row["expires"]) + ((frozenset(scope),) if scope is not None else ())


def role_of(token: str) -> str | None:
    """The role of ``token``, or None if it is unknown, revoked or expired."""
    return _lookup(token)[0]


class TokenCache:
    """The server's view of the tokens table.

    Each token presented is looked up at most every ``ttl`` seconds (so a revocation takes effect within
    that time, and ``last_used`` is right to within that time); expiry is checked on every request. The
    lookups remember the use, and :meth:`flush_last_used`, which the app runs in the background, writes
    ``last_used``."""

    def __init__(self, ttl: float = 2.0, lookup: Callable[[str], tuple] | None = None):
        self.ttl = ttl
        self.lookup = lookup or _lookup  # a Ray Serve replica looks tokens up in hashes it was sent, not the catalog
        # token -> (role or None, why refused, expiry on the monotonic clock or None, look up again after,
        # the models it is scoped to or None). A lookup answers (role, why, expiry[, scope]).
        self._cache: dict[str, tuple] = {}
        self._used: dict[str, float] = {}

    def role(self, authorization: str | None) -> str:
        """The role for an ``Authorization`` header value; raises :class:`TokenRequired` (401) otherwise."""
        if not authorization:
            raise _refused("missing")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refused("invalid")
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is None or hit[3] <= now:
            found = self.lookup(token)
            role, why, expires = found[:3]
            scope = found[3] if len(found) > 3 else None
            wall = time.time()
            if role is not None:
                self._used[token] = wall
            if len(self._cache) > 10_000:
                self._cache.clear()
            until = None if expires is None else now + (expires - wall)
            hit = self._cache[token] = (role, why, until, now + self.ttl, scope)
        if hit[0] is None:
            raise _refused(hit[1])
        if hit[2] is not None and hit[2] <= now:
            raise _refused("expired")
        return hit[0]

    def scope(self, authorization: str | None) -> frozenset[str] | None:
        """The models the token of ``authorization`` is scoped to (None: every model); call after :meth:`role`."""
        token = (authorization or "").partition(" ")[2].strip()
        hit = self._cache.get(token)
        return hit[4] if hit is not None else None

    def check_model(self, authorization: str | None, model: str) -> None:
        """403 when the token (already checked by :meth:`role`) is scoped to models other than ``model``."""
        scope = self.scope(authorization)
        if scope is not None and model not in scope:
            raise Forbidden(
                f"this token is scoped to {', '.join(sorted(scope))}; it may not use model {model!r} "
                "(`aios token create --models ...` makes one for it)"
            )

    def check_unscoped(self, authorization: str | None, what: str) -> None:
        """403 for a token scoped to some models on a route that covers every model (``what``: its name)."""
        scope = self.scope(authorization)
        if scope is not None:
            raise Forbidden(f"{what} covers every model; this token is scoped to {', '.join(sorted(scope))}")

    def flush_last_used(self) -> int:
        """Write when each token was last used (called every few seconds, off the event loop)."""
        used, self._used = self._used, {}
        if not used:
            return 0
        with catalog().tx() as db:
            db.executemany(
                "UPDATE tokens SET last_used = MAX(COALESCE(last_used, 0), ?) WHERE hash = ?",
                [(t, _hash(token)) for token, t in used.items()],
            )
        return len(used)


def _refused(why: str) -> TokenRequired:
    fix = {
        "expired": "it has expired; `aios token create` makes a new one",
        "revoked": "it was revoked; `aios token create` makes a new one",
    }.get(why, "the default token is in AIOS_HOME/serve/token; `aios token create --role infer` makes another")
    return TokenRequired(f"{why} bearer token: send 'Authorization: Bearer TOKEN' ({fix})")
