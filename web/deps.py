"""What every route shares: the context, a session per request, and error texts fit for a response."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from store.db import session_scope
from tasks.context import Context


def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request; the engine behind it is made on first use in this process."""
    with session_scope(get_context(request).database_url) as session:
        yield session


ContextDep = Annotated[Context, Depends(get_context)]
SessionDep = Annotated[Session, Depends(get_session)]


class ErrorBody(BaseModel):
    """Every error answer: one sentence that says what was wrong and what to do."""

    error: str


# What any route may answer besides its success (documented in /openapi.json, checked by tests/test_api_fuzz.py)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Bad input: the message says which field and how to fix it"},
    503: {"model": ErrorBody, "description": "The database, broker or state Redis did not answer; try again"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Nothing has the id in the path"},
}


def validation_message(errors: Sequence[Any]) -> str:
    """Validation errors as one sentence: ``body.kind: Input should be ...; query.limit: ...``."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to show in a response or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
