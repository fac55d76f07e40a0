"""The simulator's faults added for the chaos suite (simulator/breakage.py): a connection cut mid-answer and a
broken 200 body, seen through the official SDKs; and the ``answered`` counter the suite reads as the bill."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from simulator.server import BackgroundSimulator

MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}


def answered(sim: httpx.Client, provider: str) -> int:
    value: int = sim.get("/_sim/state").json()["providers"][provider]["answered"]
    return value


def test_reset_cuts_the_connection_mid_answer(sim: httpx.Client, server: BackgroundSimulator) -> None:
    sim.post("/_sim/providers/claude", json={"fail_next": 2, "error_status": "reset"}).raise_for_status()
    with pytest.raises(httpx.RemoteProtocolError):
        sim.post("/v1/messages", json=MESSAGES)
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    try:
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.create(**MESSAGES)  # type: ignore[call-overload]
    finally:
        client.close()
    assert sim.post("/v1/messages", json=MESSAGES).status_code == 200  # the third call is answered


def test_malformed_answers_200_with_a_body_that_is_not_json(sim: httpx.Client, server: BackgroundSimulator) -> None:
    sim.post("/_sim/providers/codex", json={"fail_next": 2, "error_status": "malformed"}).raise_for_status()
    response = sim.post("/v1/responses", json={"model": "m", "input": "x"})
    assert response.status_code == 200
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        response.json()
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    try:
        with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
            client.responses.create(model="gpt-5.3-codex", input="x")
    finally:
        client.close()


def test_answered_counts_whole_replies_only(sim: httpx.Client) -> None:
    before = answered(sim, "ollama")
    sim.post("/_sim/providers/ollama", json={"fail_next": 2, "error_status": 503}).raise_for_status()
    body = {"model": "m", "messages": [], "stream": False}
    assert [sim.post("/api/chat", json=body).status_code for _ in range(3)] == [503, 503, 200]
    state = sim.get("/_sim/state").json()["providers"]["ollama"]
    assert answered(sim, "ollama") == before + 1
    assert state["errors"] >= 2


def test_the_new_kinds_are_accepted_and_others_refused(sim: httpx.Client) -> None:
    for kind in ("reset", "malformed", "timeout", 404):
        assert sim.post("/_sim/providers/claude", json={"error_status": kind}).status_code == 200
    assert sim.post("/_sim/providers/claude", json={"error_status": "explode"}).status_code == 422
    sim.post("/_sim/providers/claude/heal").raise_for_status()
