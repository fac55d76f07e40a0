"""The simulator's deterministic answers, chosen by the ``Task kind: <kind>`` line of the instructions.

These are contracts the task handlers rely on (see each ``answer_*`` function). The same system text and
prompt always give the same answer, so tests can assert on it.

- ``pr_review``: raw JSON ``{"verdict", "summary", "comments": [{"file", "line", "body"}]}``
- ``pr_impl``, ``dev_task``: a ```diff fenced block creating ``<title>.py`` with a function ``<title>()``, both
  named after the task's title (:class:`TitledChange`; applies with ``git apply``). An agent CLI asking with
  its tools gets the same change as tool calls instead (:mod:`simulator.agent`)
- ``plan``: raw JSON ``{"subtasks": [{"key", "kind", "title", "description", "depends_on"}, ...]}``
- ``pr_integ``: raw JSON ``{"decision": "merge", "commit_message": "Merge <branch> ..."}``
- ``resolve_conflict``: raw JSON ``{"files": [{"path", "content"}]}``, each ``=== BEGIN FILE <path> ===`` block
  of the prompt with its conflicts resolved by keeping both sides (ours, then theirs)
- anything else: one short line of plain text
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass

KIND_RE = re.compile(r"^\s*Task kind:\s*([A-Za-z0-9_-]+)", re.MULTILINE)
TASK_ID_RE = re.compile(r"^\s*Task id:\s*(\S+)", re.MULTILINE)
TITLE_RE = re.compile(r"^\s*Title:[ \t]*(.*?)\s*$", re.MULTILINE)
GOAL_RE = re.compile(r"^\s*Goal:[ \t]*(.*?)\s*$", re.MULTILINE)
BRANCH_RE = re.compile(r"^\s*Branch:\s*(\S+)", re.MULTILINE)
NEW_FILE_RE = re.compile(r"^\+\+\+ b/(\S+)", re.MULTILINE)
HUNK_RE = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@", re.MULTILINE)
SAFE_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
FILES_RE = re.compile(r"^Files in \S+:\n((?:[^\n]+\n?)*)", re.MULTILINE)
MAX_NAME_CHARS = 48
FILE_BLOCK_RE = re.compile(r"^=== BEGIN FILE (\S+) ===\n(.*?)\n=== END FILE \1 ===$", re.MULTILINE | re.DOTALL)


def task_kind(system: str, prompt: str = "") -> str | None:
    """The kind named on a ``Task kind:`` line, looked for in the instructions first, then the prompt."""
    for text in (system, prompt):
        match = KIND_RE.search(text)
        if match:
            return match.group(1)
    return None


def _line(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1).strip() if match and match.group(1).strip() else None


def change_id(prompt: str) -> str:
    """``Task id:`` cut to 8 characters, or the prompt's sha1 prefix when absent or unsafe in a file name."""
    task_id = _line(TASK_ID_RE, prompt)
    if task_id and SAFE_ID_RE.match(task_id[:8]):
        return task_id[:8]
    return hashlib.sha1(prompt.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]


def first_changed_line(prompt: str) -> tuple[str, int] | None:
    """The first ``+++ b/<path>`` of a unified diff and the new-side start line of its first hunk."""
    new_file = NEW_FILE_RE.search(prompt)
    if not new_file:
        return None
    hunk = HUNK_RE.search(prompt, new_file.end())
    line = int(hunk.group(1)) if hunk else 1
    return new_file.group(1), max(line, 1)


def answer_review(prompt: str) -> str:
    where = first_changed_line(prompt)
    if where is None:
        body = {
            "verdict": "comment",
            "summary": "No diff was found in the request; nothing to review.",
            "comments": [],
        }
        return json.dumps(body)
    path, line = where
    comment = {
        "file": path,
        "line": line,
        "body": f"Looks fine; consider a test covering the change to {path}.",
    }
    summary = f"The change to {path} is small and consistent with the description."
    return json.dumps({"verdict": "approve", "summary": summary, "comments": [comment]})


@dataclass(frozen=True)
class TitledChange:
    """The change a ``pr_impl``/``dev_task`` asks for, named after its title: a module ``<name>.py`` holding a
    function ``<name>()``. When ``<name>.py`` is already among the prompt's files (a second task of the same
    title, a review round) the function is ``<name>_<id8>`` and is added to that module by an agent CLI, or
    goes to a new ``<name>_<id8>.py`` by a diff (an API answer cannot see the file to extend it)."""

    path: str
    function: str
    title: str
    exists: bool
    text: str  # the whole new module, or (exists) the lines to add at its end


def files_listed(prompt: str) -> list[str]:
    """The paths of the prompt's ``Files in <ref>:`` list."""
    match = FILES_RE.search(prompt)
    return [line.strip() for line in match.group(1).splitlines() if line.strip()] if match else []


def identifier(title: str, fallback: str) -> str:
    """A snake_case Python name for ``title`` (``fallback`` when it has no letters or digits)."""
    name = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:MAX_NAME_CHARS].rstrip("_")
    if not name:
        return fallback
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"task_{name}"
    return name


def _docstring(text: str) -> str:
    return text.replace("\\", "/").replace('"', "'")


def _function(name: str, title: str) -> list[str]:
    """The function: the same title gives the same text, so two branches adding it merge cleanly."""
    return [
        f"def {name}() -> str:",
        f'    """{_docstring(title)} (written by the simulator)."""',
        f"    return {title!r}",
    ]


def titled_change(prompt: str, kind: str) -> TitledChange:
    """What a ``pr_impl``/``dev_task`` answer changes, derived from the prompt's title, task id and files."""
    ident, title = change_id(prompt), _line(TITLE_RE, prompt) or "untitled"
    name = identifier(title, f"change_{ident}")
    if f"{name}.py" not in files_listed(prompt):
        text = "\n".join([f'"""{_docstring(title)}."""', "", "", *_function(name, title)]) + "\n"
        return TitledChange(f"{name}.py", name, title, False, text)
    function = name + "_" + re.sub(r"\W", "_", ident)
    return TitledChange(f"{name}.py", function, title, True, "\n\n" + "\n".join(_function(function, title)) + "\n")


def change_diff(prompt: str, kind: str) -> str:
    """A git-style diff that creates the titled module (see :class:`TitledChange`) and nothing else."""
    change = titled_change(prompt, kind)
    path, text = change.path, change.text
    if change.exists:  # a diff cannot extend a file it has not seen: a module of its own
        path = f"{change.function}.py"
        text = f'"""{_docstring(change.title)}."""\n' + change.text
    lines = text.splitlines()
    header = [
        f"diff --git a/{path} b/{path}",
        "new file mode 100644",
        "--- /dev/null",
        f"+++ b/{path}",
        f"@@ -0,0 +1,{len(lines)} @@",
    ]
    return "\n".join(header + [f"+{line}" for line in lines]) + "\n"


def answer_change(prompt: str, kind: str) -> str:
    title = _line(TITLE_RE, prompt) or "untitled"
    return f"Here is the change for: {title}\n\n```diff\n{change_diff(prompt, kind)}```\n"


def answer_plan(prompt: str) -> str:
    goal = _line(GOAL_RE, prompt) or _line(TITLE_RE, prompt) or "the requested goal"
    first = {
        "key": "s1",
        "kind": "dev_task",
        "title": f"Prepare: {goal}"[:120],
        "description": f"Lay the groundwork for the goal: {goal}",
        "depends_on": [],
    }
    second = {
        "key": "s2",
        "kind": "dev_task",
        "title": f"Implement: {goal}"[:120],
        "description": f"Implement and test the goal on top of s1: {goal}",
        "depends_on": ["s1"],
    }
    return json.dumps({"subtasks": [first, second]})


def answer_integ(prompt: str) -> str:
    branch = _line(BRANCH_RE, prompt) or "the branch"
    return json.dumps({"decision": "merge", "commit_message": f"Merge {branch} after review and checks"})


def union_resolution(text: str) -> str:
    """A conflicted file with every conflict resolved by keeping both sides (ours, then theirs)."""
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        if not line.startswith(("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")):
            kept.append(line)
    return "".join(kept)


def answer_resolve(prompt: str) -> str:
    files = [
        {"path": match.group(1), "content": union_resolution(match.group(2))}
        for match in FILE_BLOCK_RE.finditer(prompt)
    ]
    return json.dumps({"files": files})


def answer_default(prompt: str) -> str:
    words = " ".join(prompt.split()[:8])
    return f"Simulated answer to: {words}" if words else "Simulated answer."


ANSWERS: dict[str, Callable[[str], str]] = {
    "pr_review": answer_review,
    "pr_impl": lambda prompt: answer_change(prompt, "pr_impl"),
    "dev_task": lambda prompt: answer_change(prompt, "dev_task"),
    "plan": answer_plan,
    "pr_integ": answer_integ,
    "resolve_conflict": answer_resolve,
}


def answer(system: str, prompt: str) -> str:
    """The deterministic answer for this system text and prompt."""
    kind = task_kind(system, prompt)
    return ANSWERS.get(kind or "", answer_default)(prompt)


def tokens(text: str) -> int:
    """A rough token count: four characters a token, at least one for non-empty text."""
    return (len(text) + 3) // 4
