"""From a model's answer to a commit: find the unified diff in it, apply it in a task worktree, commit it.

A diff that is missing, empty or does not apply is a :class:`~switchyard.errors.PatchRejected` (the
attempt loop may fall back to another provider), and the worktree is left exactly as clean as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from environments.git import NO_SIGN, git_ok, rev_parse, run_git
from switchyard.errors import GitError, PatchRejected

FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
HUNK_RE = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
HEADER_PREFIXES = (
    "diff --git ", "index ", "--- ", "+++ ", "new file mode ", "deleted file mode ", "old mode ", "new mode ",
    "similarity index ", "dissimilarity index ", "rename from ", "rename to ", "copy from ", "copy to ",
    "Binary files ", "\\ No newline",
)  # fmt: skip
NO_DIFF = "the answer contains no unified diff"


@dataclass(frozen=True)
class CommitInfo:
    """The commit a patch became: its sha, the files it changed, and its line counts."""

    sha: str
    files: list[str]
    insertions: int
    deletions: int


def _diff_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if line.startswith("diff --git "):
            return i
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            return i
    return None


def _hunk_counts(line: str) -> tuple[int, int] | None:
    match = HUNK_RE.match(line)
    if match is None:
        return None
    return int(match.group(1) or 1), int(match.group(2) or 1)


def _take_diff(lines: list[str]) -> list[str]:
    """The diff lines from the start of ``lines``, stopping at the first line that cannot belong to a diff."""
    old = new = 0
    taken: list[str] = []
    for line in lines:
        if old > 0 or new > 0:
            marker = line[:1]
            old -= marker in ("", " ", "-")
            new -= marker in ("", " ", "+")
        elif (counts := _hunk_counts(line)) is not None:
            old, new = counts
        elif not line.startswith(HEADER_PREFIXES):
            break
        taken.append(line)
    return taken


def extract_diff(text: str) -> str:
    """The unified diff in a model's answer, without ``` fences or the prose around it.

    Fenced blocks that hold a diff are used whole (hunk counts are recounted when applying); without
    fences, the diff runs from its first header to the first line that cannot be part of it.
    """
    blocks = [_from_start(block) for block in FENCE_RE.findall(text)]
    found = "".join(block for block in blocks if block)
    if not found:
        lines = text.splitlines()
        start = _diff_start(lines)
        taken = _take_diff(lines[start:]) if start is not None else []
        found = "\n".join(taken).strip("\n") + "\n" if taken else ""
    if not found.strip():
        raise PatchRejected(NO_DIFF)
    return found


def _from_start(block: str) -> str:
    lines = block.splitlines()
    start = _diff_start(lines)
    if start is None:
        return ""
    return "\n".join(lines[start:]).rstrip("\n") + "\n"


def apply_and_commit(worktree: Path, diff: str, *, message: str) -> CommitInfo:
    """Apply ``diff`` to the (clean) worktree's index and files and commit it with ``message``."""
    if not diff.strip():
        raise PatchRejected("the diff is empty")
    diff = diff if diff.endswith("\n") else diff + "\n"
    if run_git(["status", "--porcelain", "--untracked-files=no"], cwd=worktree).strip():
        raise GitError(f"{worktree} has uncommitted changes; a patch is applied only to a clean worktree")
    touched = _touched_paths(worktree, diff)
    try:
        _apply(worktree, diff)
        if git_ok(["diff", "--cached", "--quiet"], cwd=worktree):
            raise PatchRejected("the diff changes nothing (is it already applied?)")
        run_git([*NO_SIGN, "commit", "--quiet", "--no-verify", "-m", message], cwd=worktree)
    except GitError:
        _restore(worktree, touched)
        raise
    return commit_info(worktree, "HEAD")


def discard_uncommitted(worktree: Path) -> bool:
    """Throw away what is not committed in a worktree Switchyard owns (a task's): a patch a killed run left
    half-applied. True when there was something to throw away."""
    if not run_git(["status", "--porcelain"], cwd=worktree).strip():
        return False
    run_git(["reset", "--hard", "--quiet", "HEAD"], cwd=worktree)
    run_git(["clean", "-d", "--force", "--quiet"], cwd=worktree)
    return True


def _touched_paths(worktree: Path, diff: str) -> list[str]:
    """Every path the diff names; a diff git cannot even parse is rejected here, before anything changes."""
    try:
        out = run_git(["apply", "--numstat", "--recount", "-z", "-"], cwd=worktree, input=diff)
    except GitError as exc:
        raise PatchRejected(f"the diff is not a valid patch: {_errors(exc)}", stderr=exc.stderr) from None
    return _numstat_paths(out)


def _numstat_paths(out: str) -> list[str]:
    """Paths from ``--numstat -z`` output, where a rename is ``a\\td\\t\\0old\\0new\\0``."""
    paths: list[str] = []
    fields = iter(out.split("\0"))
    for field in fields:
        parts = field.split("\t")
        if len(parts) != 3:
            continue
        paths.extend([parts[2]] if parts[2] else [next(fields, ""), next(fields, "")])
    return [path for path in paths if path]


def _apply(worktree: Path, diff: str) -> None:
    try:
        run_git(["apply", "--3way", "--recount", "-"], cwd=worktree, input=diff)
        return
    except GitError as first:
        three_way = first
    # --3way needs the preimage blobs; when it cannot run (or fails), try a plain, atomic apply.
    _restore(worktree, _touched_paths(worktree, diff))
    try:
        run_git(["apply", "--index", "--recount", "-"], cwd=worktree, input=diff)
    except GitError as exc:
        raise PatchRejected(
            f"the diff does not apply: {_errors(exc)}",
            command=exc.command,
            stderr=three_way.stderr + exc.stderr,
        ) from None


def _errors(exc: GitError, limit: int = 3) -> str:
    lines = [line.removeprefix("error: ") for line in exc.stderr.splitlines() if line.startswith("error: ")]
    return "; ".join(lines[:limit]) or exc.stderr.strip() or str(exc)


def _restore(worktree: Path, touched: list[str]) -> None:
    """Put back HEAD's files and index, and remove the new files the failed apply left behind."""
    run_git(["reset", "--hard", "--quiet", "HEAD"], cwd=worktree)
    if touched:
        run_git(["clean", "-fdq", "--", *touched], cwd=worktree)


def commit_info(worktree: Path, rev: str) -> CommitInfo:
    """Sha, changed files and line counts of commit ``rev`` (against its first parent)."""
    sha = rev_parse(rev, cwd=worktree)
    out = run_git(["diff-tree", "-r", "--root", "--numstat", "--no-renames", "--no-commit-id", "-z", sha], cwd=worktree)
    return _numstat_info(sha, out)


def span_info(worktree: Path, base: str) -> CommitInfo:
    """HEAD's sha, and the files and line counts of everything from ``base`` to HEAD."""
    sha = rev_parse("HEAD", cwd=worktree)
    return _numstat_info(sha, run_git(["diff", "--numstat", "--no-renames", "-z", base, sha], cwd=worktree))


def _numstat_info(sha: str, out: str) -> CommitInfo:
    files: list[str] = []
    insertions = deletions = 0
    for field in out.split("\0"):
        parts = field.split("\t")
        if len(parts) == 3:
            files.append(parts[2])
            insertions += int(parts[0]) if parts[0].isdigit() else 0
            deletions += int(parts[1]) if parts[1].isdigit() else 0
    return CommitInfo(sha=sha, files=files, insertions=insertions, deletions=deletions)


def commit_worktree(worktree: Path, *, base: str, message: str) -> CommitInfo:
    """Commit what an agent edited in place in ``worktree`` (new, changed and deleted files alike).

    An agent may also have committed on its own: then its commits since ``base`` count, and what is left
    uncommitted is committed on top. Nothing changed at all is a PatchRejected.
    """
    run_git(["add", "--all"], cwd=worktree)
    if not git_ok(["diff", "--cached", "--quiet"], cwd=worktree):
        run_git([*NO_SIGN, "commit", "--quiet", "--no-verify", "-m", message], cwd=worktree)
    if rev_parse("HEAD", cwd=worktree) == rev_parse(base, cwd=worktree):
        raise PatchRejected("the agent changed nothing in its worktree")
    return span_info(worktree, base)
