"""Worktrees under concurrency, against real git in tmp_path: many threads in several processes add, remove
and list worktrees of one workspace at once, and none of them fails.

Before every ``git worktree`` command took the repository lock, a list that ran while a worktree was being
added failed (``failed to read worktrees/<id>/commondir``, or ``…/locked``) within the first iterations.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from environments.sample import make_sample_repo
from environments.workspace import init_workspace
from environments.worktrees import LIST_READS, list_worktrees
from switchyard.errors import GitError

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 900.0  # three processes of git churn on a loaded two-core machine
CHURN = """
import sys, threading, traceback
from pathlib import Path
from environments.merge import merge_into_environment
from environments.worktrees import detached_worktree, list_worktrees, remove_task_worktree, task_worktree, worktree_of

workspace, tag, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
errors = []

def guarded(work):
    def run(*args):
        try:
            work(*args)
        except Exception:
            errors.append(traceback.format_exc())
    return run

@guarded
def add_and_remove(i):
    for k in range(rounds):
        task_id = f"{tag}-{i}-{k}"
        task_worktree(workspace, "dev1", task_id, base_branch="env/dev1", branch=f"task/{task_id}")
        remove_task_worktree(workspace, task_id, keep_branch=k % 2 == 0)

@guarded
def detached(i):
    for k in range(rounds):
        path = detached_worktree(workspace, f"{tag}-d{i}-{k}", "env/dev2")
        remove_task_worktree(workspace, path.name)

@guarded
def merge(i):
    for k in range(rounds):
        merge_into_environment(workspace, "dev2", "env/dev1", message=f"merge {tag} {k}")

done = threading.Event()

@guarded
def look():
    while not done.is_set():  # as long as the others change the list
        assert worktree_of(workspace, "env/dev1") == (workspace / "dev1").resolve()
        assert len(list_worktrees(workspace / ".repo")) >= 3

writers = [threading.Thread(target=add_and_remove, args=(i,)) for i in range(2)]
writers += [threading.Thread(target=detached, args=(0,)), threading.Thread(target=merge, args=(0,))]
readers = [threading.Thread(target=look) for _ in range(2)]
for thread in writers + readers:
    thread.start()
for thread in writers:
    thread.join()
done.set()
for thread in readers:
    thread.join()
print("".join(errors[:3]), file=sys.stderr)
sys.exit(1 if errors else 0)
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    sample = make_sample_repo(tmp_path / "sample")
    init_workspace(str(sample), tmp_path / "ws", ["dev1", "dev2"], ["dev", "qa"], base_port=8081, check_command="true")
    return tmp_path / "ws"


def test_threads_in_three_processes_add_remove_and_list_worktrees_without_a_failure(
    workspace: Path, tmp_path: Path
) -> None:
    script = tmp_path / "churn.py"
    script.write_text(CHURN)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(workspace), f"p{n}", "4"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=DEADLINE_S)
        if proc.returncode != 0:
            failures.append(err)
    assert not failures, failures[0]
    registered = list_worktrees(workspace / ".repo")
    assert set(registered) == {(workspace / ".repo").resolve(), (workspace / "dev1").resolve(),
                               (workspace / "dev2").resolve()}  # fmt: skip
    assert not list((workspace / ".tasks").iterdir())


def test_a_torn_entry_is_read_again_and_a_lasting_one_still_fails(workspace: Path) -> None:
    repo = workspace / ".repo"
    torn = repo / "worktrees" / "torn"
    (torn / "locked").mkdir(parents=True)  # git cannot read it: "failed to read '…/locked'"
    (torn / "gitdir").write_text(f"{workspace / 'torn' / '.git'}\n")
    naps: list[float] = []

    def heal(seconds: float) -> None:  # the "other git" finishes writing its entry while we wait
        naps.append(seconds)
        (torn / "locked").rmdir()

    assert len(list_worktrees(repo, sleep=heal)) >= 3
    assert len(naps) == 1

    (torn / "locked").mkdir()
    naps.clear()
    with pytest.raises(GitError, match="failed to read"):
        list_worktrees(repo, sleep=naps.append)
    assert len(naps) == LIST_READS - 1


def test_every_git_worktree_command_goes_through_the_locked_helper() -> None:
    pattern = re.compile(r"""run_git\(\s*\[\s*["']worktree["']""")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("environments", "tasks", "cli", "workers", "web")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "worktrees.py"
    ]
    assert not offenders, f"run `git worktree` through environments.worktrees.worktree_git: {offenders}"
