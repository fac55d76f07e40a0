"""Faults that are not an HTTP error status: a connection cut mid-answer, and a 200 whose body is broken.

``reset``: the response starts (200, a Content-Length), part of the body is sent, then the server closes the
connection (uvicorn closes it when the app returns before the body is complete); the client sees the peer
hang up mid-message, as after a connection reset. ``malformed``: a complete 200 response whose JSON body is
cut in half, as a broken proxy or provider might send it.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PARTIAL_BODY = b'{"id": "sim_broken", "type": "message", "content": [{"type": "text", "text": "cut he'


class CutResponse(Response):
    """Announces a body longer than what it sends, then returns: the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(PARTIAL_BODY) * 4).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PARTIAL_BODY, "more_body": True})


def broken_response(kind: str) -> Response:
    """The response of a broken-answer fault (``reset`` or ``malformed``)."""
    if kind == "reset":
        return CutResponse()
    return Response(PARTIAL_BODY, status_code=200, media_type="application/json")
