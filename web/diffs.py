"""The diff of a task, for the dashboard's task view: what its change is, read from the environment's repository.

    pr_impl, dev_task   ``git diff <base>...<commit>``: its commit against where its branch left the base
    pr_integ            ``git diff <base_sha> <merge_sha>``: what its merge brought onto the stage branch
    pr_review           ``git diff <stage branch>...<branch>``: the branch it reviewed, as the reviewer saw it

:func:`diff_range` is the pure choice; :func:`task_diff` runs git (no shell, a bounded output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from environments.git import run_git
from environments.layout import repo_dir
from switchyard.errors import GitError

MAX_DIFF_CHARS = 200_000
Row = dict[str, Any]


def diff_range(detail: Row) -> list[str] | None:
    """Pure: the ``git diff`` arguments for a task's detail (as ``GET /api/tasks/{id}`` answers), or None."""
    data = (detail.get("result") or {}).get("data") or {}
    if data.get("commit") and data.get("base"):
        return [f"{data['base']}...{data['commit']}"]
    merge = next((m for m in detail.get("merges") or [] if m["task_id"] == detail["id"]), None)
    if merge and merge.get("base_sha") and merge.get("merge_sha"):
        return [merge["base_sha"], merge["merge_sha"]]
    branch = (detail.get("payload") or {}).get("branch")
    if detail.get("kind") == "pr_review" and branch:
        return [f"{stage_branch(detail)}...{branch}"]
    return None


def stage_branch(detail: Row) -> str:
    name, stage = detail["environment"], detail["stage"]
    return f"env/{name}" if stage == "dev" else f"env/{name}-{stage}"


def task_diff(environment_path: str, detail: Row) -> Row:
    """``{"range", "diff", "truncated"}`` of a task, or ``{"range": None, ...}`` when it has no change to show;
    a range git no longer knows (a branch deleted since) is said in ``error``."""
    wanted = diff_range(detail)
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
