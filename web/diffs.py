"""The diff of a task, for the dashboard's task view: what its change is, read from the environment's repository.

    pr_impl, dev_task   ``git diff <its first commit>^ <its last commit>``: the commits it made (``commits``)
    pr_integ            ``git diff <base_sha> <merge_sha>``: what its merge brought onto the stage branch
    pr_review           ``git diff <stage branch>...<branch>``: the branch it reviewed, as the reviewer saw it

:func:`diff_range` is the pure choice; :func:`task_diff` runs git (no shell, a bounded output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from environments.git import run_git
from environments.layout import repo_dir
from store.queries import stage_branch
from switchyard.errors import GitError

MAX_DIFF_CHARS = 200_000
Row = dict[str, Any]


def diff_range(detail: Row, *, first_stage: str) -> list[str] | None:
    """Pure: the ``git diff`` arguments for a task's detail (as ``GET /api/tasks/{id}`` answers), or None."""
    data = (detail.get("result") or {}).get("data") or {}
    if data.get("commit"):  # its own commits, oldest first: stable after the branch landed or was deleted
        first = (data.get("commits") or [data["commit"]])[0]
        return [f"{first}^", data["commit"]]
    merge = next((m for m in detail.get("merges") or [] if m["task_id"] == detail["id"]), None)
    if merge and merge.get("base_sha") and merge.get("merge_sha"):
        return [merge["base_sha"], merge["merge_sha"]]
    branch = (detail.get("payload") or {}).get("branch")
    if detail.get("kind") == "pr_review" and branch:
        return [f"{stage_branch(detail['environment'], detail['stage'], first_stage)}...{branch}"]
    return None


def task_diff(environment_path: str, detail: Row, *, first_stage: str) -> Row:
    """``{"range", "diff", "truncated"}`` of a task, or ``{"range": None, ...}`` when it has no change to show;
    a range git no longer knows (a branch deleted since) is said in ``error``."""
    wanted = diff_range(detail, first_stage=first_stage)
    if wanted is None:
        return {"range": None, "diff": "", "truncated": False, "error": None}
    where = repo_dir(Path(environment_path).parent)
    try:
        text = run_git(["diff", "--no-color", "--no-ext-diff", *wanted, "--"], cwd=where, timeout=30)
    except GitError as exc:
        return {"range": " ".join(wanted), "diff": "", "truncated": False, "error": str(exc)[:500]}
    return {
        "range": " ".join(wanted),
        "diff": text[:MAX_DIFF_CHARS],
        "truncated": len(text) > MAX_DIFF_CHARS,
        "error": None,
    }
