"""What every route shares: the context, a session per request, and error texts fit for a response."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, Request
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
