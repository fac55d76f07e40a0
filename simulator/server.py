"""A local HTTP server that speaks the Anthropic, OpenAI and Ollama wire protocols, with scripted faults.

It stands in for the providers in tests, the demo and load tests; the real SDK clients (and the real agent
CLIs) talk to it over HTTP. Endpoints:

    POST /v1/messages                 Anthropic Messages (also ``?beta=true``), JSON or SSE
    POST /v1/messages/count_tokens    Anthropic token count
    POST /v1/responses                OpenAI Responses, JSON or SSE
    POST /v1/chat/completions         OpenAI Chat Completions, JSON
    POST /api/chat, /api/generate     Ollama, JSON or NDJSON;  GET /api/tags, /api/version
    GET  /_sim/health                 {"ok": true}
    GET  /_sim/state                  faults, latency and call counters per provider
    POST /_sim/providers/{provider}   change latency_ms, error_rate, error_status (int or "timeout"),
                                      retry_after_s, fail_next, hang_ms, missing_models (404 for those);
                                      error_status "reset" cuts the connection mid-answer, "malformed"
                                      answers 200 with a broken body
    POST /_sim/providers/{provider}/heal   no more faults, configured latency
    POST /_sim/reset                  back to the configured defaults, counters zeroed

Answers are deterministic by task kind (:mod:`simulator.answers`); an agent CLI whose request offers its
file tools gets the change as tool calls, then a closing message (:mod:`simulator.agent`). A scripted error
comes back in the wire format's own shape, with the provider's own text where the status has a typical one
(400 a prompt too long for the context, 404 the model not found, 413 too large, 422 unprocessable: see each
dialect's ``MESSAGES``).
Run it with ``python -m simulator --host 127.0.0.1 --port 8790 [--fleet switchyard.toml]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import anthropic_api, ollama_api, openai_api
from simulator.answers import tokens
from simulator.breakage import broken_response
from simulator.control import control_routes
from simulator.core import (
    BadRequest,
    Dialect,
    FaultKind,
    ProviderState,
    SimState,
    make_reply,
)
from switchyard.errors import ConfigError, ServiceUnavailable
from switchyard.fleet import Fleet, SimulatorProviderConfig, load_fleet

Handler = Callable[[Request], Awaitable[Response]]
DEFAULT_OLLAMA_MODELS = ("qwen2.5-coder:7b",)
FAULT_MESSAGES = {
    429: "Rate limit reached for requests (simulator)",
    500: "Internal server error (simulator)",
    503: "Service unavailable (simulator)",
    529: "Overloaded (simulator)",
}


def _api_key(request: Request) -> str:
    bearer = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()


def _fault_message(status: int, request: Request, dialect: Dialect, model: object) -> str:
    if status == 401:
        # Echoes the key it was sent, as a harsh stand-in: the clients must scrub keys from error texts.
        return f"invalid x-api-key: {_api_key(request)}"
    text = dialect.messages.get(status) or FAULT_MESSAGES.get(status, f"simulator: HTTP {status}")
    return text.replace("{model}", model if isinstance(model, str) else "")


async def _hang(request: Request, ms: int) -> None:
    """Sleep ``ms`` (a timeout fault), returning early once the client has hung up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ms / 1000
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))


async def _fault(request: Request, dialect: Dialect, state: ProviderState, fault: FaultKind, model: object) -> Response:
    if fault == "timeout":
        await _hang(request, state.hang_ms)
        return dialect.error(504, f"simulator timeout: no answer for {state.hang_ms} ms")
    if isinstance(fault, str):  # the faults that are not an HTTP status: simulator/breakage.py
        return broken_response(fault)
    response = dialect.error(fault, _fault_message(fault, request, dialect, model))
    if fault == 429:
        response.headers["retry-after"] = f"{state.retry_after_s:g}"
    return response


async def _json_object(request: Request) -> dict[str, object]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def model_handler(sim: SimState, dialect: Dialect) -> Handler:
    """A handler for one wire format: count the call, wait, fail if scripted to, else answer."""

    async def handle(request: Request) -> Response:
        try:
            body = await _json_object(request)
        except BadRequest as exc:
            return dialect.error(400, str(exc))
        fault = sim.begin_call(dialect.provider, body.get("model"))
        state = sim.providers[dialect.provider]
        await asyncio.sleep(state.latency_ms / 1000)
        if fault is not None:
            return await _fault(request, dialect, state, fault, body.get("model"))
        try:
            call = dialect.parse(body, request.url.path)
        except BadRequest as exc:
            return dialect.error(400, str(exc))
        response = dialect.render(call, make_reply(call, f"sim_{dialect.provider}_{sim.served:06d}"))
        state.answered += 1
        return response

    return handle


def create_app(
    config: Mapping[str, SimulatorProviderConfig] | None = None,
    *,
    rng: random.Random | None = None,
    ollama_models: Sequence[str] = DEFAULT_OLLAMA_MODELS,
) -> Starlette:
    """The simulator as an ASGI app; ``config`` holds each provider's defaults (the fleet's [simulator.*])."""
    sim = SimState(config or {}, rng or random.Random(0))

    async def count_tokens(request: Request) -> Response:
        return JSONResponse({"input_tokens": tokens((await request.body()).decode("utf-8", "replace"))})

    routes = [
        Route("/v1/messages", model_handler(sim, anthropic_api.DIALECT), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/responses", model_handler(sim, openai_api.RESPONSES), methods=["POST"]),
        Route("/v1/chat/completions", model_handler(sim, openai_api.CHAT), methods=["POST"]),
        Route("/api/chat", model_handler(sim, ollama_api.CHAT), methods=["POST"]),
        Route("/api/generate", model_handler(sim, ollama_api.GENERATE), methods=["POST"]),
        Route("/api/tags", lambda _: JSONResponse(ollama_api.tags(list(ollama_models))), methods=["GET"]),
        Route("/api/version", lambda _: JSONResponse({"version": "0.6.3-simulated"}), methods=["GET"]),
        *control_routes(sim),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


def app_for_fleet(fleet: Fleet | None, *, seed: int | None = None) -> Starlette:
    """The app with the fleet file's ``[simulator.*]`` defaults and its Ollama model names."""
    if fleet is None:
        return create_app(rng=random.Random(seed))
    ollama = fleet.providers.get("ollama")
    models = [m.name for m in ollama.models] if ollama else list(DEFAULT_OLLAMA_MODELS)
    return create_app(fleet.simulator, rng=random.Random(seed), ollama_models=models)


def uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
    )


def serve(host: str, port: int, fleet: Fleet | None, *, seed: int | None = None) -> None:
    """Serve until interrupted (blocking)."""
    uvicorn.Server(uvicorn_config(app_for_fleet(fleet, seed=seed), host, port)).run()


class BackgroundSimulator:
    """The simulator on a uvicorn thread, for tests and the demo: ``with BackgroundSimulator() as sim: ...``.

    ``port=0`` picks a free port; the one chosen is in ``port`` once started.
    """

    def __init__(
        self,
        config: Mapping[str, SimulatorProviderConfig] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.app = create_app(config, rng=rng)
        self.host, self.port = host, port
        self._server = uvicorn.Server(uvicorn_config(self.app, host, port))
        self._thread = threading.Thread(target=self._server.run, name="switchyard-simulator", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def sim(self) -> SimState:
        sim: SimState = self.app.state.sim
        return sim

    def start(self, timeout_s: float = 10.0) -> BackgroundSimulator:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceUnavailable(f"the simulator did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--fleet", type=Path, help="fleet file whose [simulator.*] tables give the defaults")
    parser.add_argument("--profile", default="development", help="profile of the fleet file (default: development)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault dice (default: random)")
    args = parser.parse_args(argv)
    try:
        fleet = load_fleet(args.fleet, args.profile) if args.fleet else None
    except ConfigError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    print(f"simulator: listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    serve(args.host, args.port, fleet, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
