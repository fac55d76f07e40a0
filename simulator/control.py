"""The simulator's control endpoints (``/_sim/*``): health, state and counters, faults per provider."""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.core import ProviderUpdate, SimState


def control_routes(sim: SimState) -> list[Route]:
    """``/_sim/*``: health, state, per-provider changes, heal and reset."""

    def known(request: Request) -> str | None:
        provider: str = request.path_params["provider"]
        return provider if provider in sim.providers else None

    async def update(request: Request) -> Response:
        provider = known(request)
        if provider is None:
            return JSONResponse({"error": f"unknown provider; known: {sorted(sim.providers)}"}, status_code=404)
        try:
            change = ProviderUpdate.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return JSONResponse({"error": json.loads(exc.json(include_url=False))}, status_code=422)
        sim.update(provider, change)
        return JSONResponse(sim.providers[provider].view())

    async def heal(request: Request) -> Response:
        provider = known(request)
        if provider is None:
            return JSONResponse({"error": f"unknown provider; known: {sorted(sim.providers)}"}, status_code=404)
        sim.providers[provider].heal()
        return JSONResponse(sim.providers[provider].view())

    async def reset(request: Request) -> Response:
        sim.reset()
        return JSONResponse(sim.snapshot())

    return [
        Route("/_sim/health", lambda _: JSONResponse({"ok": True}), methods=["GET"]),
        Route("/_sim/state", lambda _: JSONResponse(sim.snapshot()), methods=["GET"]),
        Route("/_sim/providers/{provider}", update, methods=["POST"]),
        Route("/_sim/providers/{provider}/heal", heal, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]
