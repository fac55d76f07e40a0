"""The simulator as an agent CLI's model: tool calls that make a task's change, then a closing message.

An agent CLI (Claude Code, the Codex CLI) sends the tools it offers with every request and the results of
the calls it ran in the conversation. When the request offers file tools and the task kind changes files,
the answer is the next tool call of a fixed sequence instead of text; once every call has its result, the
answer is a short closing message. The simulator keeps no state: where it is in the sequence is the number
of tool results in the conversation.

- ``pr_impl``, ``dev_task``: the titled module (:class:`simulator.answers.TitledChange`) is created, or its
  function added to the existing module.
- ``resolve_conflict``: every conflicted file of the prompt is rewritten with both sides kept.

Claude Code gets ``tool_use`` blocks of its own tools: ``Write`` (``file_path`` absolute, ``content``) for a
new file; ``Read`` (``file_path``) and then ``Edit`` (``file_path``, ``old_string``, ``new_string``) or
``Write`` for a file that exists, since Claude Code refuses to change a file it has not read. The absolute
path comes from the ``Primary working directory:`` line Claude Code sends.

Codex gets one patch in its ``apply_patch`` format (``*** Begin Patch`` … ``*** End Patch``): as the input of
its freeform ``apply_patch`` tool when offered (the models it knows), else as an ``apply_patch`` heredoc run
by its ``exec_command`` (or older ``shell``) function, which Codex intercepts and applies itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from simulator import answers

Json = dict[str, Any]
CHANGE_KINDS = ("pr_impl", "dev_task")
CONFLICT_KIND = "resolve_conflict"
CLAUDE_CWD_RE = re.compile(r"Primary working directory:\s*(\S.*?)\s*$", re.MULTILINE)
CODEX_CWD_RE = re.compile(r"<cwd>\s*(.*?)\s*</cwd>")
READ_LINE_RE = re.compile(r"^\s*\d+(?:\t|→)(.*)$")
REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
PATCH_TOOL, SHELL_TOOLS = "apply_patch", ("exec_command", "shell")
CLAUDE_TOOLS = frozenset({"Write", "Edit", "Read"})
SHOWN_OUTPUT_CHARS = 300


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    input: Json | str  # JSON arguments, or the text of a freeform tool (Codex's apply_patch)


@dataclass(frozen=True)
class ToolResult:
    name: str
    input: Json | str
    output: str
    is_error: bool = False


@dataclass(frozen=True)
class AgentTurn:
    """What an agent CLI's request says: the tools it offers, its working directory, the results so far."""

    tools: frozenset[str]
    cwd: str | None
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class FileEdit:
    path: str  # relative to the working directory
    new: str  # the whole new content (replace, create) or the text to add at the end (append)
    mode: Literal["create", "append", "replace"]
    old: str = ""  # replace: the content the prompt showed


Maker = Callable[[tuple[ToolResult, ...]], Json | str]  # the call's input, from the results so far


@dataclass(frozen=True)
class Step:
    """The answer to one agent request: tool calls to run, or (no calls) the closing text."""

    text: str
    calls: tuple[ToolCall, ...] = ()


def working_directory(texts: list[str]) -> str | None:
    for text in texts:
        for pattern in (CLAUDE_CWD_RE, CODEX_CWD_RE):
            match = pattern.search(text)
            if match:
                return match.group(1)
    return None


def planned_edits(kind: str, prompt: str) -> tuple[list[FileEdit], str]:
    """The files the task's answer changes and the closing text that says so."""
    if kind == CONFLICT_KIND:
        edits = [
            FileEdit(match.group(1), answers.union_resolution(match.group(2)), "replace", match.group(2))
            for match in answers.FILE_BLOCK_RE.finditer(prompt)
        ]
        return edits, f"Resolved the conflicts in {', '.join(e.path for e in edits) or 'no file'} keeping both sides."
    change = answers.titled_change(prompt, kind)
    edit = FileEdit(change.path, change.text, "append" if change.exists else "create")
    verb = "Added" if change.exists else "Wrote"
    return [edit], f"{verb} {change.function}() in {change.path} for: {change.title}"


def step(kind: str | None, prompt: str, turn: AgentTurn, reply_id: str) -> Step | None:
    """The next answer to an agent CLI, or None when this request is not one the agent answers with tools."""
    if kind not in (*CHANGE_KINDS, CONFLICT_KIND):
        return None
    edits, closing = planned_edits(kind, prompt)
    failed = next((result for result in turn.results if result.is_error), None)
    if failed is not None:
        return Step(f"Stopped: {failed.name} failed: {_shown(failed.output)}")
    if turn.tools >= CLAUDE_TOOLS:
        calls = claude_calls(edits, turn)
    elif PATCH_TOOL in turn.tools or any(name in turn.tools for name in SHELL_TOOLS):
        calls = codex_calls(edits, turn)
    else:
        return None
    if not edits or len(turn.results) >= len(calls):
        return Step(closing)
    index = len(turn.results)
    name, make = calls[index]
    return Step("", (ToolCall(f"{reply_id}_{index}", name, make(turn.results)),))


def claude_calls(edits: list[FileEdit], turn: AgentTurn) -> list[tuple[str, Maker]]:
    """Claude Code's sequence: Write a new file; Read, then Edit (append) or Write (replace) one that exists."""
    calls: list[tuple[str, Maker]] = []
    for edit in edits:
        path = f"{turn.cwd.rstrip('/')}/{edit.path}" if turn.cwd else edit.path
        if edit.mode == "create":
            calls.append(("Write", _const({"file_path": path, "content": edit.new})))
            continue
        calls.append(("Read", _const({"file_path": path})))
        if edit.mode == "append":
            calls.append(("Edit", _appender(path, edit.new, len(calls) - 1)))
        else:
            calls.append(("Write", _const({"file_path": path, "content": edit.new})))
    return calls


def _const(value: Json | str) -> Maker:
    return lambda _results: value


def _appender(path: str, added: str, read_index: int) -> Maker:
    """An Edit that replaces the whole file as Read showed it with itself plus ``added`` (unique by nature)."""

    def make(results: tuple[ToolResult, ...]) -> Json:
        old = read_content(results[read_index].output)
        if not old.strip():
            return {"file_path": path, "old_string": old, "new_string": added.lstrip("\n")}
        kept = old.rstrip("\n")
        return {"file_path": path, "old_string": kept, "new_string": kept + "\n" + added.rstrip("\n")}

    return make


def read_content(output: str) -> str:
    """A file's text from Claude Code's Read result (``cat -n`` style numbered lines, reminders removed)."""
    lines = []
    for line in REMINDER_RE.sub("", output).splitlines():
        match = READ_LINE_RE.match(line)
        if match:
            lines.append(match.group(1))
    return "\n".join(lines) + ("\n" if lines else "")


def codex_calls(edits: list[FileEdit], turn: AgentTurn) -> list[tuple[str, Maker]]:
    """One patch for every file: through the apply_patch tool, else as a heredoc of the shell tool."""
    patch = apply_patch_text(edits)
    if PATCH_TOOL in turn.tools:
        return [(PATCH_TOOL, _const(patch))]
    script = f"apply_patch <<'PATCH'\n{patch}PATCH\n"
    if "exec_command" in turn.tools:
        arguments: Json = {"cmd": script}
        if turn.cwd:
            arguments["workdir"] = turn.cwd
        return [("exec_command", _const(arguments))]
    shell: Json = {"command": ["bash", "-lc", script]}
    if turn.cwd:
        shell["workdir"] = turn.cwd
    return [("shell", _const(shell))]


def apply_patch_text(edits: list[FileEdit]) -> str:
    """The edits in Codex's patch format: Add File, an Update with a pure addition, or old lines for new."""
    out = ["*** Begin Patch"]
    for edit in edits:
        if edit.mode == "create":
            out.append(f"*** Add File: {edit.path}")
            out += [f"+{line}" for line in edit.new.splitlines()]
        elif edit.mode == "append":  # a hunk with no old lines adds at the end of the file
            out += [f"*** Update File: {edit.path}", "@@"]
            out += [f"+{line}" for line in edit.new.splitlines()]
        else:
            out += [f"*** Update File: {edit.path}", "@@"]
            out += [f"-{line}" for line in edit.old.splitlines()]
            out += [f"+{line}" for line in edit.new.splitlines()]
    return "\n".join([*out, "*** End Patch"]) + "\n"


def _shown(output: str) -> str:
    text = " ".join(output.split())
    return text[:SHOWN_OUTPUT_CHARS] + ("…" if len(text) > SHOWN_OUTPUT_CHARS else "")


def arguments_text(call: ToolCall) -> str:
    """The call's input as the wire carries it: JSON text, or the freeform text itself."""
    return call.input if isinstance(call.input, str) else json.dumps(call.input)
