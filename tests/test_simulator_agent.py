"""The simulator answering agent CLIs with tool calls, read back by the official SDKs over HTTP (plain and
streaming): Claude Code's Write / Read + Edit, Codex's apply_patch (freeform tool or shell heredoc), then a
closing message once every call has its result. The real CLIs run it in tests/test_real_agent_clis.py."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from simulator import agent
from simulator import answers as sim_answers
from simulator.server import BackgroundSimulator

CWD = "/work/repo"
SYSTEM = "You are a software engineer working in a Switchyard fleet.\nTask kind: pr_impl\n\nMake the change."
PROMPT = "Task id: 0123456789abcdef\nTitle: Add login page\nBranch: task/x\n\nFiles in env/dev1:\napp.py\n"
CLAUDE_TOOLS = [
    {"name": name, "description": name, "input_schema": {"type": "object", "properties": {}}}
    for name in ("Bash", "Edit", "Read", "Write")
]
APPLIED = "Exit code: 0\nWall time: 0.2 seconds\nOutput:\nSuccess. Updated the following files:\nA add_login_page.py\n"
MODULE = '"""Add login page."""\n\n\ndef add_login_page() -> str:\n'


@pytest.fixture
def claude(server: BackgroundSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-test", max_retries=0)


@pytest.fixture
def codex(server: BackgroundSimulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0)


def claude_ask(client: anthropic.Anthropic, messages: list[dict[str, Any]], *, stream: bool) -> Any:
    args: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4096,
        "system": SYSTEM,
        "tools": CLAUDE_TOOLS,
        "messages": messages,
    }
    if stream:
        with client.messages.stream(**args) as events:
            return events.get_final_message()
    return client.messages.create(**args)


def first_turn(prompt: str = PROMPT) -> list[dict[str, Any]]:
    reminder = f"<system-reminder>\n - Primary working directory: {CWD}\n</system-reminder>"
    return [{"role": "user", "content": [{"type": "text", "text": reminder}, {"type": "text", "text": prompt}]}]


def answered(messages: list[dict[str, Any]], reply: Any, output: str) -> list[dict[str, Any]]:
    """The conversation after the agent ran the reply's one tool call and got ``output``."""
    (use,) = [block for block in reply.content if block.type == "tool_use"]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": output}
    return [
        *messages,
        {"role": "assistant", "content": [block.model_dump() for block in reply.content]},
        {"role": "user", "content": [result]},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_claude_code_gets_a_write_of_the_titled_module_then_a_closing_text(
    claude: anthropic.Anthropic, stream: bool
) -> None:
    messages = first_turn()
    reply = claude_ask(claude, messages, stream=stream)
    assert reply.stop_reason == "tool_use"
    (use,) = reply.content
    assert (use.type, use.name) == ("tool_use", "Write")
    assert use.input["file_path"] == f"{CWD}/add_login_page.py"
    assert use.input["content"].startswith(MODULE) and "return 'Add login page'" in use.input["content"]
    assert reply.usage.output_tokens > 0

    done = claude_ask(claude, answered(messages, reply, "File created successfully"), stream=stream)
    assert done.stop_reason == "end_turn"
    assert [b.type for b in done.content] == ["text"]
    assert done.content[0].text == "Wrote add_login_page() in add_login_page.py for: Add login page"


def test_claude_code_reads_an_existing_module_then_edits_it_keeping_what_it_read(claude: anthropic.Anthropic) -> None:
    messages = first_turn(PROMPT + "add_login_page.py\n")
    read = claude_ask(claude, messages, stream=True)
    (use,) = read.content
    assert (use.name, use.input) == ("Read", {"file_path": f"{CWD}/add_login_page.py"})

    shown = "1\tdef add_login_page() -> str:\n2\t    return 'x'\n3\n\n<system-reminder>\nnote\n</system-reminder>"
    messages = answered(messages, read, shown)
    edit = claude_ask(claude, messages, stream=True)
    (use,) = edit.content
    assert use.name == "Edit" and use.input["file_path"] == f"{CWD}/add_login_page.py"
    assert use.input["old_string"] == "def add_login_page() -> str:\n    return 'x'"
    added = use.input["new_string"].removeprefix(use.input["old_string"])
    assert added.startswith("\n\n\ndef add_login_page_01234567() -> str:\n")

    done = claude_ask(claude, answered(messages, edit, "The file has been updated."), stream=False)
    assert done.content[0].text == "Added add_login_page_01234567() in add_login_page.py for: Add login page"


def test_a_failed_tool_call_ends_the_turn_with_what_it_said(claude: anthropic.Anthropic) -> None:
    messages = first_turn()
    reply = claude_ask(claude, messages, stream=False)
    failed = answered(messages, reply, "Permission denied")
    failed[-1]["content"][0]["is_error"] = True
    done = claude_ask(claude, failed, stream=False)
    assert done.stop_reason == "end_turn" and done.content[0].text == "Stopped: Write failed: Permission denied"


def test_kinds_that_answer_in_text_ignore_the_tools(claude: anthropic.Anthropic) -> None:
    review = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=1024,
        system="Task kind: pr_review",
        tools=CLAUDE_TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1,2 @@\n+x\n"}],
    )
    assert review.stop_reason == "end_turn" and json.loads(review.content[0].text)["verdict"] == "approve"  # type: ignore[union-attr]


def codex_tools(*, freeform: bool) -> list[dict[str, Any]]:
    shell = {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command",
        "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    }
    patch = {"type": "custom", "name": "apply_patch", "description": "edit files", "format": {"type": "text"}}
    return [shell, patch] if freeform else [shell]


def codex_input(prompt: str = PROMPT) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": SYSTEM}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"<cwd>{CWD}</cwd>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
    ]


def codex_ask(client: openai.OpenAI, items: list[dict[str, Any]], *, freeform: bool, stream: bool) -> Any:
    args: dict[str, Any] = {"model": "gpt-5.3-codex", "input": items, "tools": codex_tools(freeform=freeform)}
    if not stream:
        return client.responses.create(**args)
    kinds: list[str] = []
    final = None
    for event in client.responses.create(stream=True, **args):
        kinds.append(event.type)
        if event.type == "response.completed":
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final is not None
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_codex_gets_its_patch_through_the_freeform_apply_patch_tool(codex: openai.OpenAI, stream: bool) -> None:
    items = codex_input()
    response = codex_ask(codex, items, freeform=True, stream=stream)
    (call,) = response.output
    assert (call.type, call.name) == ("custom_tool_call", "apply_patch")
    assert call.input.startswith('*** Begin Patch\n*** Add File: add_login_page.py\n+"""Add login page."""\n')
    assert call.input.endswith("*** End Patch\n")
    assert response.usage.output_tokens > 0

    items += [
        {"type": "custom_tool_call", "call_id": call.call_id, "name": call.name, "input": call.input},
        {
            "type": "custom_tool_call_output",
            "call_id": call.call_id,
            "output": APPLIED,
        },
    ]
    done = codex_ask(codex, items, freeform=True, stream=stream)
    assert [item.type for item in done.output] == ["message"]
    assert done.output_text == "Wrote add_login_page() in add_login_page.py for: Add login page"


def test_a_patch_codex_could_not_apply_ends_the_turn_with_its_error(codex: openai.OpenAI) -> None:
    items = codex_input()
    (call,) = codex_ask(codex, items, freeform=True, stream=False).output
    error = "apply_patch verification failed: Failed to read file to update add_login_page.py"
    items += [
        {"type": "custom_tool_call", "call_id": call.call_id, "name": call.name, "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": error},
    ]
    done = codex_ask(codex, items, freeform=True, stream=False)
    assert done.output_text == f"Stopped: apply_patch failed: {error}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_codex_without_the_patch_tool_gets_an_apply_patch_heredoc_to_run(codex: openai.OpenAI, stream: bool) -> None:
    response = codex_ask(codex, codex_input(PROMPT + "add_login_page.py\n"), freeform=False, stream=stream)
    (call,) = response.output
    assert (call.type, call.name) == ("function_call", "exec_command")
    arguments = json.loads(call.arguments)
    assert arguments["workdir"] == CWD
    script = arguments["cmd"]
    assert script.startswith("apply_patch <<'PATCH'\n*** Begin Patch\n*** Update File: add_login_page.py\n@@\n+\n+\n")
    assert "+def add_login_page_01234567() -> str:\n" in script and script.endswith("*** End Patch\nPATCH\n")


def test_a_conflict_is_resolved_by_rewriting_each_file_with_both_sides() -> None:
    conflicted = "a\n<<<<<<< ours\nb\n=======\nc\n>>>>>>> theirs\n"
    prompt = f"Task id: 1\n=== BEGIN FILE app.py ===\n{conflicted}\n=== END FILE app.py ===\n"
    turn = agent.AgentTurn(frozenset({"apply_patch", "exec_command"}), CWD)
    step = agent.step("resolve_conflict", prompt, turn, "r1")
    assert step is not None
    (call,) = step.calls
    assert call.input == (
        "*** Begin Patch\n*** Update File: app.py\n@@\n"
        "-a\n-<<<<<<< ours\n-b\n-=======\n-c\n->>>>>>> theirs\n+a\n+b\n+c\n*** End Patch\n"
    )
    claude = agent.AgentTurn(frozenset({"Read", "Write", "Edit"}), CWD)
    first = agent.step("resolve_conflict", prompt, claude, "r2")
    assert first is not None and [(c.name, c.input) for c in first.calls] == [("Read", {"file_path": f"{CWD}/app.py"})]
    read = agent.ToolResult("Read", {"file_path": f"{CWD}/app.py"}, "1\ta\n")
    second = agent.step("resolve_conflict", prompt, agent.AgentTurn(claude.tools, CWD, (read,)), "r3")
    assert second is not None
    assert [(c.name, c.input) for c in second.calls] == [
        ("Write", {"file_path": f"{CWD}/app.py", "content": "a\nb\nc\n"})
    ]


def test_titles_become_python_names() -> None:
    assert sim_answers.identifier("Add login page!", "x") == "add_login_page"
    assert sim_answers.identifier("2fa for admins", "x") == "task_2fa_for_admins"
    assert sim_answers.identifier("class", "x") == "task_class"
    assert sim_answers.identifier("¿?", "change_ab") == "change_ab"
    assert len(sim_answers.identifier("word " * 40, "x")) <= sim_answers.MAX_NAME_CHARS
