"""The simulator over real HTTP: wire shapes (plain and streaming), faults, control endpoint, entry point."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from conftest import REPO, Processes, free_port, patient

from simulator import answers as sim_answers
from simulator import server as simulator
from simulator.core import SimState
from simulator.server import BackgroundSimulator
from switchyard.fleet import SimulatorProviderConfig

MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 512,
    "messages": [{"role": "user", "content": "hello"}],
}
DIFF = "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n@@ -10,2 +12,3 @@ f\n+x\n"


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    events, name = [], ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


# --- answers (pure) -------------------------------------------------------------------------------------


def test_kind_is_read_from_the_instructions_then_the_prompt() -> None:
    assert sim_answers.task_kind("You review.\nTask kind: pr_review\n", "") == "pr_review"
    assert sim_answers.task_kind("no kind here", "Task kind: plan") == "plan"
    assert sim_answers.task_kind("", "") is None


def test_review_points_at_the_first_new_file_and_hunk() -> None:
    review = json.loads(sim_answers.answer("Task kind: pr_review", DIFF))
    assert review["verdict"] == "approve"
    assert review["comments"] == [{"file": "src/app.py", "line": 12, "body": review["comments"][0]["body"]}]


def test_review_without_a_diff_only_comments() -> None:
    review = json.loads(sim_answers.answer("Task kind: pr_review", "please look at it"))
    assert review["verdict"] == "comment"
    assert review["comments"] == []


def test_change_id_is_the_task_id_prefix_or_a_hash() -> None:
    assert sim_answers.change_id("Task id: 0123456789abcdef\n") == "01234567"
    assert sim_answers.change_id("Task id: ../../etc/passwd") == sim_answers.change_id("Task id: ../../etc/passwd")
    assert len(sim_answers.change_id("no id")) == 8
    assert "/" not in sim_answers.change_id("Task id: ../../etc/passwd")


def test_plan_and_integ_answers() -> None:
    plan = json.loads(sim_answers.answer("Task kind: plan", "Goal: ship the cost report"))
    assert [s["key"] for s in plan["subtasks"]] == ["s1", "s2"]
    assert plan["subtasks"][1]["depends_on"] == ["s1"]
    assert all(s["kind"] == "dev_task" and "ship the cost report" in s["title"] for s in plan["subtasks"])
    integ = json.loads(sim_answers.answer("Task kind: pr_integ", "Branch: feature/x-1\n"))
    assert integ == {"decision": "merge", "commit_message": "Merge feature/x-1 after review and checks"}


def test_the_same_seed_gives_the_same_faults() -> None:
    config = {"claude": SimulatorProviderConfig(error_rate=0.5)}
    runs = [SimState(config, random.Random(7)) for _ in range(2)]
    sequences = [[state.begin_call("claude") for _ in range(40)] for state in runs]
    assert sequences[0] == sequences[1]
    assert 0 < sum(1 for fault in sequences[0] if fault == 500) < 40


# --- wire formats ------------------------------------------------------------------------------------------


def test_anthropic_stream_follows_the_documented_event_order(sim: httpx.Client) -> None:
    body = {**MESSAGES, "stream": True, "system": [{"type": "text", "text": "Task kind: plan"}]}
    with sim.stream("POST", "/v1/messages?beta=true", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert all(data["type"] == name for name, data in events)
    text = "".join(str(data["delta"]["text"]) for name, data in events if name == "content_block_delta")  # type: ignore[index]
    assert json.loads(text)["subtasks"][0]["key"] == "s1"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == sim_answers.tokens(text)  # type: ignore[index]


def test_claude_cli_shaped_request_is_understood(server: BackgroundSimulator, sim: httpx.Client) -> None:
    body = {
        **MESSAGES,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Task kind: pr_integ\nBranch: env/dev1"}]}],
    }
    with sim.stream("POST", "/v1/messages?beta=true", json=body) as response:
        events = sse_events(response)
    text = "".join(str(d["delta"]["text"]) for n, d in events if n == "content_block_delta")  # type: ignore[index]
    assert json.loads(text)["commit_message"].startswith("Merge env/dev1")


def test_anthropic_sdk_stream_and_plain_agree(server: BackgroundSimulator, request: pytest.FixtureRequest) -> None:
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    request.addfinalizer(client.close)
    args = {"model": "claude-haiku-4-5", "max_tokens": 512, "system": "Task kind: plan"}
    plain = client.messages.create(**args, messages=[{"role": "user", "content": "Goal: a"}])  # type: ignore[arg-type]
    with client.messages.stream(**args, messages=[{"role": "user", "content": "Goal: a"}]) as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_message()
    assert streamed.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert streamed.usage.output_tokens == plain.usage.output_tokens
    assert streamed.usage.input_tokens == plain.usage.input_tokens
    assert streamed.stop_reason == plain.stop_reason == "end_turn"


def test_openai_responses_stream_events(server: BackgroundSimulator, request: pytest.FixtureRequest) -> None:
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    request.addfinalizer(client.close)
    events = list(
        client.responses.create(model="gpt-5.4", instructions="Task kind: pr_integ", input="Branch: b", stream=True)
    )
    types = [event.type for event in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.output_text.delta" in types
    assert types[-2:] == ["response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert final.output_text == deltas
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens > 0


def test_codex_cli_shaped_request_is_understood(sim: httpx.Client) -> None:
    body = {
        "model": "gpt-5.3-codex",
        "instructions": "You are Codex.",
        "stream": True,
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Task kind: plan"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Goal: tidy up"}]},
        ],
    }
    with sim.stream("POST", "/v1/responses", json=body) as response:
        events = sse_events(response)
    assert events[-1][0] == "response.completed"
    output = events[-1][1]["response"]["output"][0]  # type: ignore[index]
    assert "tidy up" in output["content"][0]["text"]  # type: ignore[index]


def test_chat_completions_plain(server: BackgroundSimulator, request: pytest.FixtureRequest) -> None:
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    request.addfinalizer(client.close)
    answer = client.chat.completions.create(
        model="gpt-5.4",
        messages=[
            {"role": "system", "content": "Task kind: pr_integ"},
            {"role": "user", "content": "Branch: x"},
        ],
    )
    assert json.loads(answer.choices[0].message.content or "")["decision"] == "merge"
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_openai_truncates_at_max_output_tokens(server: BackgroundSimulator, request: pytest.FixtureRequest) -> None:
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    request.addfinalizer(client.close)
    answer = client.responses.create(
        model="gpt-5.4", instructions="Task kind: plan", input="Goal: g", max_output_tokens=16
    )
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None and answer.incomplete_details.reason == "max_output_tokens"
    assert answer.usage is not None and answer.usage.output_tokens == 16  # reasoning included, as the API counts
    assert answer.usage.output_tokens_details.reasoning_tokens == 8
    assert len(answer.output_text) == 32


def test_ollama_ndjson_stream_ends_with_the_stats(sim: httpx.Client) -> None:
    body = {
        "model": "qwen2.5-coder:7b",
        "messages": [{"role": "user", "content": "hi"}],
    }  # stream defaults to true
    with sim.stream("POST", "/api/chat", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert all(not line["done"] for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["total_duration"] == final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert "".join(line["message"]["content"] for line in lines) == "Simulated answer to: hi"


def test_ollama_generate_and_tags(server: BackgroundSimulator, request: pytest.FixtureRequest) -> None:
    client = ollama.Client(host=server.url, timeout=5)
    request.addfinalizer(client.close)
    generated = client.generate(model="qwen2.5-coder:7b", system="Task kind: pr_integ", prompt="Branch: q")
    assert json.loads(generated.response)["decision"] == "merge"
    assert generated.done and generated.eval_count and generated.prompt_eval_count
    assert [model.model for model in client.list().models] == ["qwen2.5-coder:7b"]


# --- faults and control ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error"), (401, "authentication_error")],
)
def test_anthropic_error_shapes(sim: httpx.Client, status: int, kind: str) -> None:
    sim.post("/_sim/providers/claude", json={"fail_next": 1, "error_status": status, "retry_after_s": 2.5})
    response = sim.post("/v1/messages", json=MESSAGES)
    assert response.status_code == status
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind
    assert response.headers.get("retry-after") == ("2.5" if status == 429 else None)


def test_openai_and_ollama_error_shapes(sim: httpx.Client) -> None:
    sim.post("/_sim/providers/codex", json={"fail_next": 1, "error_status": 429})
    error = sim.post("/v1/responses", json={"model": "m", "input": "x"})
    assert error.status_code == 429 and error.headers["retry-after"] == "1"
    assert set(error.json()["error"]) == {"message", "type", "param", "code"}
    sim.post("/_sim/providers/ollama", json={"fail_next": 1, "error_status": 503})
    error = sim.post("/api/chat", json={"model": "m", "messages": []})
    assert error.status_code == 503 and isinstance(error.json()["error"], str)


def test_bad_json_is_a_400_in_the_provider_shape(sim: httpx.Client) -> None:
    response = sim.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    response = sim.post("/v1/messages", json={"model": "m", "messages": []})
    assert response.status_code == 400 and "max_tokens" in response.json()["error"]["message"]


def test_timeout_fault_hangs_until_the_client_gives_up(sim: httpx.Client) -> None:
    sim.post("/_sim/providers/claude", json={"fail_next": 2, "error_status": "timeout", "hang_ms": 3000})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sim.post("/v1/messages", json=MESSAGES, timeout=0.3)
    assert time.monotonic() - started < 2
    sim.post("/_sim/providers/claude", json={"hang_ms": 50})
    assert sim.post("/v1/messages", json=MESSAGES).status_code == 504


def test_latency_is_applied(sim: httpx.Client) -> None:
    sim.post("/_sim/providers/ollama", json={"latency_ms": 250})
    started = time.monotonic()
    sim.post("/api/chat", json={"model": "m", "messages": [], "stream": False}).raise_for_status()
    assert time.monotonic() - started >= 0.25


def test_control_endpoint_counters_heal_and_reset(sim: httpx.Client) -> None:
    assert sim.get("/_sim/health").json() == {"ok": True}
    sim.post("/_sim/providers/codex", json={"error_rate": 1.0, "error_status": 500})
    for _ in range(3):
        assert sim.post("/v1/responses", json={"model": "m", "input": "x"}).status_code == 500
    state = sim.get("/_sim/state").json()["providers"]
    assert (state["codex"]["calls"], state["codex"]["errors"], state["claude"]["calls"]) == (3, 3, 0)
    healed = sim.post("/_sim/providers/codex/heal").json()
    assert (healed["error_rate"], healed["fail_next"], healed["calls"]) == (0.0, 0, 3)
    assert sim.post("/v1/responses", json={"model": "m", "input": "x"}).status_code == 200
    assert sim.post("/_sim/reset").json()["providers"]["codex"]["calls"] == 0


def test_control_endpoint_refuses_bad_input(sim: httpx.Client) -> None:
    assert sim.post("/_sim/providers/gemini", json={}).status_code == 404
    assert sim.post("/_sim/providers/claude", json={"error_rate": 2}).status_code == 422
    assert sim.post("/_sim/providers/claude", json={"error_status": 200}).status_code == 422
    assert sim.post("/_sim/providers/claude", json={"latency": 5}).status_code == 422


# --- the entry point ---------------------------------------------------------------------------------------


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + patient(timeout_s)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the simulator exited early"
        try:
            if httpx.get(f"{url}/_sim/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"the simulator did not answer on {url}")


def test_module_entry_point_serves_the_fleet_defaults(processes: Processes) -> None:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "simulator.server",
        "--port",
        str(port),
        "--fleet",
        str(REPO / "switchyard.toml"),
    ]
    proc = processes.spawn(args, cwd=REPO, stderr=subprocess.DEVNULL)
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    state = httpx.get(f"http://127.0.0.1:{port}/_sim/state").json()["providers"]
    assert (state["claude"]["latency_ms"], state["ollama"]["latency_ms"]) == (40, 60)
    proc.terminate()  # SIGTERM: a graceful uvicorn shutdown; reaping it here keeps the teardown short
    assert proc.wait(timeout=10) in (0, -15)


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read fleet file"), ("[[groups]\n", "not valid TOML")])
def test_main_refuses_a_bad_fleet_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    fleet = tmp_path / "fleet.toml"
    if content is not None:
        fleet.write_text(content)
    assert simulator.main(["--port", str(free_port()), "--fleet", str(fleet)]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and str(fleet) in stderr
