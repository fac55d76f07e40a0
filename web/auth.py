"""Bearer tokens on the status API: who is asking, and may they.

Every route but liveness (``/healthz``) and the dashboard's static files depends on :func:`needs` with the
scope it requires (read < submit < admin). With ``api_auth`` off (the local profiles' default) every request
passes as the actor ``anonymous``. Otherwise:

    no Authorization header                     401 + ``WWW-Authenticate: Bearer``
    not ``Bearer sy_…`` of the right shape      401 (malformed)
    unknown or revoked token                    401
    a token of a lower scope                    403 naming the scope needed

The answers are one line of JSON (``{"error": ...}``, by the app's HTTPException handler); the token is never
echoed. The check (hash, lookup by hash, constant-time compare) is :func:`store.tokens.check_token`; a request
checks its token once, however many dependencies ask (``request.state.actor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from store import tokens
from store.db import session_scope
from web.deps import ErrorBody, get_context

# Declares the scheme in /openapi.json (Swagger UI's "Authorize" button); the header is parsed by bearer() below
SCHEME = HTTPBearer(auto_error=False, description="A token from `switchyard token create NAME --scope SCOPE`")
AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No token, a malformed header, or an unknown or revoked token"},
    403: {"model": ErrorBody, "description": "The token's scope is below the one the route needs (named)"},
}
ANONYMOUS = tokens.TokenInfo(name="anonymous", scope="admin")  # auth off: anyone may do anything, as today
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="switchyard"'}


def _unauthorized(reason: str, *, error: str | None = None) -> HTTPException:
    header = CHALLENGE["WWW-Authenticate"] + (f', error="{error}"' if error else "")
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": header})


def bearer(header: str | None) -> str:
    """Pure: the token of an ``Authorization`` header, or the 401 that says what is wrong with it."""
    if not header:
        raise _unauthorized(
            "this API needs a token: send `Authorization: Bearer <token>` (make one with `switchyard token create`)"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not tokens.well_formed(token.strip()):
        raise _unauthorized(
            "malformed Authorization header: expected `Bearer sy_` followed by 43 characters", error="invalid_request"
        )
    return token.strip()


def identify(request: Request) -> tokens.TokenInfo:
    """The caller of ``request`` (once per request), or a 401."""
    known: tokens.TokenInfo | None = getattr(request.state, "actor", None)
    if known is not None:
        return known
    context = get_context(request)
    if not context.settings.api_auth_on:
        actor = ANONYMOUS
    else:
        token = bearer(request.headers.get("authorization"))
        with session_scope(context.database_url) as session:
            found = tokens.check_token(session, token)
        if found is None:
            raise _unauthorized("the token is unknown or revoked; ask an admin for a new one", error="invalid_token")
        actor = found
    request.state.actor = actor
    return actor


def needs(scope: str) -> Callable[[Request, HTTPAuthorizationCredentials | None], tokens.TokenInfo]:
    """A dependency that lets through a caller whose token has ``scope`` or more (403 otherwise)."""
    tokens.check_scope(scope)

    def dependency(
        request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(SCHEME)]
    ) -> tokens.TokenInfo:
        actor = identify(request)
        if not tokens.allows(actor.scope, scope):
            raise HTTPException(
                status_code=403,
                detail=f"this route needs a token of scope {scope!r}; the token {actor.name!r} has {actor.scope!r}",
            )
        return actor

    dependency.__name__ = f"needs_{scope}"
    return dependency


READ = Depends(needs("read"))
SUBMIT = Depends(needs("submit"))
ADMIN = Depends(needs("admin"))
ActorAdmin = Annotated[tokens.TokenInfo, ADMIN]
