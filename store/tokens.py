"""The status API's bearer tokens: made, listed, checked and revoked by name.

A token is ``sy_`` followed by 43 URL-safe characters (:func:`secrets.token_urlsafe` of 32 bytes, 256 bits), shown
once by :func:`create_token`; the table keeps only its SHA-256 in hex. A check hashes what the caller sent, finds
the row by that hash and compares the two hashes with :func:`hmac.compare_digest`, so neither the lookup nor the
comparison says how much of a guess was right. Same rules as :mod:`store.repo`: a session passed in, keyword-only
arguments, never a commit.

    create_token   a new token of a scope under a unique name: returns the token itself (the only time it exists)
    revoke_token   the token of that name stops working at once; its row stays, for the audit
    list_tokens    every token's name, scope and times (never its hash)
    check_token    the token's row when it is known and not revoked (its ``last_used_at`` touched), else None
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import ApiToken, utcnow
from switchyard.errors import InputError, NotFound

SCOPES = ("read", "submit", "admin")  # ordered: each scope may do what the ones before it may
PREFIX = "sy_"
TOKEN_SHAPE = re.compile(r"^sy_[A-Za-z0-9_-]{43}$")
NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute per token, not per request


@dataclass(frozen=True)
class TokenInfo:
    """Who a checked token is: its name (the actor the audit records) and its scope."""

    name: str
    scope: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def allows(have: str, need: str) -> bool:
    """Pure: may a token of scope ``have`` do what needs scope ``need``? (read < submit < admin)"""
    return SCOPES.index(have) >= SCOPES.index(need)


def well_formed(token: str) -> bool:
    return TOKEN_SHAPE.fullmatch(token) is not None


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    return scope


def create_token(session: Session, *, name: str, scope: str, now: datetime | None = None) -> str:
    """Store a new token of ``scope`` named ``name`` (hashed) and return the token itself, to be shown once."""
    if NAME_SHAPE.fullmatch(name) is None:
        raise InputError(f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    check_scope(scope)
    if session.get(ApiToken, name) is not None:
        raise InputError(f"a token named {name!r} exists already; pick another name or revoke it first")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, scope=scope, token_hash=hash_token(token), created_at=now or utcnow()))
    session.flush()
    return token


def revoke_token(session: Session, *, name: str, now: datetime | None = None) -> None:
    """The token named ``name`` is refused from now on; NotFound when no token has that name."""
    row = session.get(ApiToken, name)
    if row is None:
        raise NotFound(f"no token named {name!r}; see `switchyard token list`")
    if row.revoked_at is not None:
        raise InputError(f"the token {name!r} was revoked already")
    row.revoked_at = now or utcnow()
    session.flush()


def list_tokens(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name))
    return [
        {
            "name": row.name,
            "scope": row.scope,
            "created_at": _iso(row.created_at),
            "last_used_at": _iso(row.last_used_at),
            "revoked_at": _iso(row.revoked_at),
            "revoked": row.revoked_at is not None,
        }
        for row in rows
    ]


def check_token(session: Session, token: str, *, now: datetime | None = None) -> TokenInfo | None:
    """The live token ``token`` is, or None (unknown or revoked). Hash, look up by hash, compare in constant time."""
    wanted = hash_token(token)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == wanted)).first()
    if row is None or not hmac.compare_digest(row.token_hash, wanted) or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - _aware(row.last_used_at) >= TOUCH_EVERY:
        row.last_used_at = now
    return TokenInfo(name=row.name, scope=row.scope)


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes (stored in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _aware(moment).isoformat()
