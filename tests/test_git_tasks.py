"""Git work a task does, against real git in tmp_path: extract and apply diffs, commit in-place edits, merge
(checked, with conflicts resolved or refused), review."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from environments.checks import CheckResult
from environments.git import rev_parse, run_git, status_porcelain
from environments.merge import (
    Conflict,
    MergeInfo,
    advance,
    bring_in,
    env_lock,
    integrate,
    merge_into_environment,
    review_diff,
    truncate,
)
from environments.patch import apply_and_commit, commit_worktree, discard_uncommitted, extract_diff
from environments.sample import make_sample_repo
from environments.workspace import init_workspace
from environments.worktrees import task_worktree
from simulator.answers import union_resolution
from switchyard.errors import CheckFailed, GitError, InputError, MergeConflict, NotFound, PatchRejected

NEW_FILE_DIFF = """\
diff --git a/app/colors.py b/app/colors.py
new file mode 100644
index 0000000..1111111
--- /dev/null
+++ b/app/colors.py
@@ -0,0 +1,3 @@
+\"\"\"Colors.\"\"\"
+
+RED = "red"
"""

EDIT_DIFF = """\
--- a/app/greeting.py
+++ b/app/greeting.py
@@ -5,3 +5,3 @@ def greet(name: str) -> str:
     \"\"\"Return a friendly greeting for ``name``.\"\"\"
-    name = name.strip() or "world"
+    name = name.strip() or "there"
     return f"Hello, {name}!"
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_repo(tmp_path_factory.mktemp("sample") / "greeter")


@pytest.fixture
def workspace(tmp_path: Path, sample: Path) -> Path:
    ws = tmp_path / "ws"
    init_workspace(str(sample), ws, ["dev1", "dev2"], ["dev", "qa"], base_port=8081, check_command="true")
    return ws


@pytest.fixture
def task(workspace: Path) -> Path:
    return task_worktree(workspace, "dev1", "t-1", base_branch="env/dev1", branch="task/t-1")


# --- extract_diff --------------------------------------------------------------------------------------


def test_extract_diff_from_fenced_block_with_prose() -> None:
    answer = f"Here is the change you asked for:\n\n```diff\n{NEW_FILE_DIFF}```\n\nIt adds a module. Thanks!"
    assert extract_diff(answer) == NEW_FILE_DIFF


def test_extract_diff_joins_several_fenced_blocks_and_skips_other_code() -> None:
    answer = f"```python\nprint('hi')\n```\nFirst:\n```\n{NEW_FILE_DIFF}```\nthen\n```patch\n{EDIT_DIFF}```\n"
    assert extract_diff(answer) == NEW_FILE_DIFF + EDIT_DIFF


def test_extract_diff_from_unfenced_prose_stops_after_the_last_hunk() -> None:
    answer = f"I changed the default.\n{EDIT_DIFF}\nThis keeps the old behaviour for names.\n- and a bullet"
    assert extract_diff(answer) == EDIT_DIFF


@pytest.mark.parametrize("answer", ["", "I could not find the bug.", "```python\nx = 1\n```", "--- just a rule"])
def test_extract_diff_refuses_answers_without_a_diff(answer: str) -> None:
    with pytest.raises(PatchRejected, match="the answer contains no unified diff"):
        extract_diff(answer)


# --- apply_and_commit ----------------------------------------------------------------------------------


def test_apply_and_commit_new_file(task: Path) -> None:
    before = rev_parse("HEAD", cwd=task)
    info = apply_and_commit(task, NEW_FILE_DIFF, message="Add colors")
    assert info.files == ["app/colors.py"]
    assert (info.insertions, info.deletions) == (3, 0)
    assert info.sha == rev_parse("HEAD", cwd=task) != before
    assert rev_parse("HEAD^", cwd=task) == before
    log = run_git(["log", "-1", "--format=%s|%an <%ae>|%cn <%ce>"], cwd=task).strip()
    assert log == "Add colors|Switchyard <switchyard@localhost>|Switchyard <switchyard@localhost>"
    assert status_porcelain(cwd=task) == ""


def test_apply_and_commit_edit_extracted_from_an_answer(task: Path) -> None:
    info = apply_and_commit(task, extract_diff(f"Sure:\n```diff\n{EDIT_DIFF}```"), message="Greet there")
    assert (info.files, info.insertions, info.deletions) == (["app/greeting.py"], 1, 1)
    assert '"there"' in (task / "app" / "greeting.py").read_text()


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        ("", "the diff is empty"),
        ("--- a/x\n+++ b/x\n@@ garbage\n", "not a valid patch"),
        (EDIT_DIFF.replace('or "world"', 'or "nobody"'), "does not apply: patch failed: app/greeting.py"),
        (NEW_FILE_DIFF.replace("app/colors.py", "app/greeting.py"), "does not apply: app/greeting.py"),
    ],
)
def test_bad_diff_is_rejected_and_worktree_left_clean(task: Path, diff: str, message: str) -> None:
    before = rev_parse("HEAD", cwd=task)
    with pytest.raises(PatchRejected, match=message):
        apply_and_commit(task, diff, message="bad")
    assert rev_parse("HEAD", cwd=task) == before
    assert status_porcelain(cwd=task) == ""


def test_partly_good_diff_leaves_no_new_file_behind(task: Path) -> None:
    bad_edit = EDIT_DIFF.replace('or "world"', 'or "nobody"')
    with pytest.raises(PatchRejected):
        apply_and_commit(task, NEW_FILE_DIFF + bad_edit, message="half")
    assert not (task / "app" / "colors.py").exists()
    assert status_porcelain(cwd=task) == ""


def test_a_patch_a_killed_run_left_half_applied_is_discarded_and_applied_again(task: Path) -> None:
    run_git(["apply", "--index", "-"], cwd=task, input=EDIT_DIFF)  # applied, never committed
    (task / "stray.txt").write_text("an untracked leftover\n")
    with pytest.raises(GitError, match="uncommitted changes"):
        apply_and_commit(task, EDIT_DIFF, message="again")
    assert discard_uncommitted(task) and not discard_uncommitted(task)
    assert status_porcelain(cwd=task) == "" and not (task / "stray.txt").exists()
    info = apply_and_commit(task, EDIT_DIFF, message="again")
    assert len(info.files) == 1


def test_already_applied_diff_is_rejected(task: Path) -> None:
    apply_and_commit(task, NEW_FILE_DIFF, message="once")
    with pytest.raises(PatchRejected):
        apply_and_commit(task, NEW_FILE_DIFF, message="twice")
    assert status_porcelain(cwd=task) == ""


# --- merge_into_environment ----------------------------------------------------------------------------


def test_merge_feature_branch_into_environment(workspace: Path) -> None:
    dev1 = workspace / "dev1"
    before = rev_parse("HEAD", cwd=dev1)
    info = merge_into_environment(workspace, "dev1", "feature/sample-1", message="Merge sample-1 into dev1")
    assert not info.already_merged
    assert info.files == ["app/feature_1.py"]
    assert info.sha == rev_parse("env/dev1", cwd=workspace / ".repo")
    parents = run_git(["log", "-1", "--format=%P %s", "env/dev1"], cwd=dev1).split()
    assert parents[:2] == [before, rev_parse("feature/sample-1", cwd=dev1)]
    assert (dev1 / "app" / "feature_1.py").is_file()
    again = merge_into_environment(workspace, "dev1", "feature/sample-1", message="again")
    assert again.already_merged and again.sha == info.sha


def _conflicting_branch(workspace: Path) -> str:
    """A task branch that edits the line env/dev1 has also edited since."""
    task = task_worktree(workspace, "dev1", "c-1", base_branch="env/dev1", branch="task/conflict")
    apply_and_commit(task, EDIT_DIFF, message="there")
    other = EDIT_DIFF.replace('or "there"', 'or "everyone"')
    apply_and_commit(workspace / "dev1", other, message="everyone")
    return "task/conflict"


def test_conflicting_merge_raises_and_leaves_environment_unchanged(workspace: Path) -> None:
    branch = _conflicting_branch(workspace)
    dev1 = workspace / "dev1"
    before = rev_parse("HEAD", cwd=dev1)
    with pytest.raises(MergeConflict, match=r"conflicts in app/greeting\.py") as info:
        merge_into_environment(workspace, "dev1", branch, message="will conflict")
    assert info.value.files == ["app/greeting.py"]
    assert rev_parse("env/dev1", cwd=workspace / ".repo") == before
    assert status_porcelain(cwd=dev1) == ""
    assert not (workspace / ".repo" / "worktrees" / "dev1" / "MERGE_HEAD").exists()


def test_merge_refuses_unknown_branch_and_environment(workspace: Path) -> None:
    with pytest.raises(InputError, match="branch 'feature/nope' does not exist"):
        merge_into_environment(workspace, "dev1", "feature/nope", message="x")
    with pytest.raises(NotFound, match="unknown environment 'dev7'"):
        merge_into_environment(workspace, "dev7", "feature/sample-1", message="x")


def test_two_threads_merge_into_the_same_environment(workspace: Path) -> None:
    barrier = threading.Barrier(2)

    def merge(branch: str) -> MergeInfo:
        barrier.wait()
        return merge_into_environment(workspace, "dev2", branch, message=f"Merge {branch}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        infos = list(pool.map(merge, ["feature/sample-2", "feature/sample-3"]))  # re-raises a failure
    assert sorted(f for info in infos for f in info.files) == ["app/feature_2.py", "app/feature_3.py"]
    subjects = run_git(["log", "--merges", "--format=%s", "env/dev2"], cwd=workspace / ".repo").splitlines()
    assert sorted(subjects) == ["Merge feature/sample-2", "Merge feature/sample-3"]
    assert status_porcelain(cwd=workspace / "dev2") == ""


def test_env_lock_path(workspace: Path) -> None:
    assert Path(env_lock(workspace, "dev1").lock_file) == workspace / ".locks" / "dev1.lock"


# --- review_diff ---------------------------------------------------------------------------------------


def test_review_diff_shows_the_feature_file(workspace: Path) -> None:
    diff = review_diff(workspace, "dev1", "feature/sample-4", max_chars=10_000)
    assert "diff --git a/app/feature_4.py b/app/feature_4.py" in diff
    assert "+def " in diff


def test_review_diff_truncates_with_a_marker(workspace: Path) -> None:
    diff = review_diff(workspace, "dev1", "feature/sample-4", max_chars=200)
    assert len(diff) <= 200
    assert "diff truncated" in diff
    assert diff.startswith("diff --git a/app/feature_4.py")


def test_review_diff_unknown_branch(workspace: Path) -> None:
    with pytest.raises(InputError, match="branch 'feature/missing'"):
        review_diff(workspace, "dev1", "feature/missing", max_chars=100)


def test_truncate_keeps_short_text() -> None:
    assert truncate("abc\n", 10) == "abc\n"


def test_three_way_apply_when_context_moved_on(task: Path) -> None:
    """A diff made against an older file (full index line) still applies where plain apply would not."""
    greeting = task / "app" / "greeting.py"
    greeting.write_text(greeting.read_text().replace('"world"', '"friend"'))
    diff = run_git(["diff", "-U6", "--full-index"], cwd=task)  # context reaches line 1
    run_git(["checkout", "--", "app/greeting.py"], cwd=task)
    greeting.write_text(greeting.read_text().replace('"""Greetings."""', '"""Greetings, kindly."""'))
    run_git(["commit", "-qam", "docstring"], cwd=task)
    with pytest.raises(GitError):
        run_git(["apply", "--check", "-"], cwd=task, input=diff)
    info = apply_and_commit(task, diff, message="friend")
    text = greeting.read_text()
    assert '"friend"' in text and "kindly" in text and info.files == ["app/greeting.py"]


# --- integrate: a merge in its own worktree, checked, then moved in one step ------------------------------


def _check(passed: bool) -> Callable[[Path], CheckResult]:
    def check(worktree: Path) -> CheckResult:
        assert (worktree / "app" / "feature_1.py").is_file()  # runs on the merged tree
        return CheckResult("make test", passed, 0 if passed else 2, 0.1, "ok" if passed else "FAILED test_x")

    return check


def test_integrate_runs_the_check_on_the_merged_tree_and_moves_the_branch(workspace: Path) -> None:
    before = rev_parse("env/dev1", cwd=workspace / ".repo")
    moves: list[tuple[str, str]] = []
    info = integrate(
        workspace, "dev1", "feature/sample-1", work_id="i-1", message="m", check=_check(True),
        before_move=lambda old, new: moves.append((old, new)),
    )  # fmt: skip
    assert moves == [(before, info.sha)] and info.base == before and info.check is not None
    assert rev_parse("env/dev1", cwd=workspace / ".repo") == info.sha
    assert (workspace / "dev1" / "app" / "feature_1.py").is_file()  # the environment's worktree follows
    assert status_porcelain(cwd=workspace / "dev1") == ""
    assert not (workspace / ".tasks" / "i-1").exists()


def test_integrate_refuses_when_the_check_fails_and_keeps_the_worktree(workspace: Path) -> None:
    before = rev_parse("env/dev1", cwd=workspace / ".repo")
    with pytest.raises(CheckFailed, match=r"the check 'make test' failed .*\(exit 2\).*FAILED test_x"):
        integrate(workspace, "dev1", "feature/sample-1", work_id="i-2", message="m", check=_check(False))
    assert rev_parse("env/dev1", cwd=workspace / ".repo") == before
    assert (workspace / ".tasks" / "i-2" / "app" / "feature_1.py").is_file()  # kept for inspection


def test_integrate_resolves_a_conflict_or_refuses_a_bad_resolution(workspace: Path) -> None:
    branch = _conflicting_branch(workspace)
    before = rev_parse("env/dev1", cwd=workspace / ".repo")
    seen: list[Conflict] = []

    def keep_markers(conflict: Conflict) -> dict[str, str]:
        seen.append(conflict)
        return dict(conflict.texts)

    with pytest.raises(MergeConflict, match=r"still has conflict markers in app/greeting\.py"):
        integrate(workspace, "dev1", branch, work_id="i-3", message="m", resolve=keep_markers)
    assert seen[0].files == ["app/greeting.py"] and "<<<<<<< " in seen[0].texts["app/greeting.py"]
    assert rev_parse("env/dev1", cwd=workspace / ".repo") == before

    def both(conflict: Conflict) -> dict[str, str]:
        return {name: union_resolution(text) for name, text in conflict.texts.items()}

    info = integrate(workspace, "dev1", branch, work_id="i-3", message="resolved", resolve=both)
    assert info.conflicts == ["app/greeting.py"]
    text = (workspace / "dev1" / "app" / "greeting.py").read_text()
    assert '"there"' in text and '"everyone"' in text and "=======" not in text


def test_advance_refuses_a_branch_that_moved_meanwhile(workspace: Path) -> None:
    repo = workspace / ".repo"
    old, other = rev_parse("env/dev2", cwd=repo), rev_parse("feature/sample-2", cwd=repo)
    with pytest.raises(GitError, match="update-ref"):
        advance(workspace, "env/dev2", other, rev_parse("feature/sample-3", cwd=repo))
    assert rev_parse("env/dev2", cwd=repo) == old


def test_commit_worktree_commits_in_place_edits_or_rejects_none(task: Path) -> None:
    base = rev_parse("HEAD", cwd=task)
    with pytest.raises(PatchRejected, match="the agent changed nothing"):
        commit_worktree(task, base=base, message="nothing")
    (task / "NOTES.md").write_text("one\ntwo\n")
    (task / "README.md").unlink()
    info = commit_worktree(task, base=base, message="agent work")
    assert sorted(info.files) == ["NOTES.md", "README.md"] and info.insertions == 2 and info.deletions > 0
    assert status_porcelain(cwd=task) == ""


def test_bring_in_merges_the_other_bases(task: Path) -> None:
    assert bring_in(task, ["feature/sample-1", "feature/sample-2"], message="bases") == [
        "feature/sample-1",
        "feature/sample-2",
    ]
    assert (task / "app" / "feature_1.py").is_file() and (task / "app" / "feature_2.py").is_file()
    assert bring_in(task, ["feature/sample-1"], message="again") == []
