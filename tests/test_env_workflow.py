"""The environments' git workflow through the real CLI entry, against real git in tmp_path: ``env init`` and its
repairs, the eleven workflow commands on one and on all environments, confirmation of destructive commands,
name checks, and ``env clean-tasks``.

Most commands run in-process through ``cli.main`` (the script's own entry; importing it once saves
~2 s a call); the refusal of a destructive command with no terminal is also checked through the installed script.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cli import main
from environments.git import rev_parse, run_git
from environments.sample import make_sample_repo
from environments.worktrees import task_worktree
from store import repo
from store.db import dispose_all, session_scope
from store.models import Environment
from switchyard.settings import load_settings

ENVS = ["dev1", "dev2", "dev3"]
TODAY = f"{date.today():%Y%m%d}"
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code in (0, 1), self.err
        return json.loads(self.out)


Run = Callable[..., Done]


@pytest.fixture
def sy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    for key in list(os.environ):
        if key.startswith("SWITCHYARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    def run(*args: str) -> Done:
        code = main(list(args))
        captured = capsys.readouterr()
        return Done(code, captured.out, captured.err)

    yield run
    dispose_all()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return make_sample_repo(tmp_path / "sample", feature_branches=1)


@pytest.fixture
def ws(sy: Run, sample: Path, tmp_path: Path) -> Path:
    done = sy("env", "init", "--repo", str(sample), "--envs", ",".join(ENVS), "--workspace", str(tmp_path / "ws"))
    assert done.code == 0, done.err
    return tmp_path / "ws"


def git(path: Path, *args: str) -> str:
    return run_git(list(args), cwd=path).strip()


def commit_file(path: Path, name: str, text: str, message: str) -> str:
    (path / name).write_text(text)
    git(path, "add", name)
    git(path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", message)
    return rev_parse("HEAD", cwd=path)


def by_env(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["environment"]: row for row in rows}


def database_url(tmp_path: Path) -> str:
    return load_settings(home=tmp_path / "home").effective_database_url


# --- env init -------------------------------------------------------------------------------------------------


def test_init_records_ports_and_check_and_a_rerun_repairs_only_what_is_missing(
    sy: Run, sample: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    first = sy("env", "init", "--repo", str(sample), "--envs", "dev1,dev2,dev3", "--workspace", str(ws),
               "--check", "make test", "--json").json()  # fmt: skip
    assert any("cloned" in line for line in first["changes"])
    listed = {row["name"]: row for row in sy("env", "list", "--json").json()}
    assert {n: (r["port"], r["check_command"]) for n, r in listed.items()} == {
        "dev1": (8081, "make test"),
        "dev2": (8082, "make test"),
        "dev3": (8083, "make test"),
    }
    dev1 = ws / "dev1"
    local = commit_file(dev1, "NOTES.md", "local work\n", "local commit")
    (dev1 / "scratch.txt").write_text("uncommitted\n")
    shutil.rmtree(ws / "dev2")
    git(ws / ".repo", "branch", "-D", "env/dev3-staging")
    with session_scope(database_url(tmp_path)) as session:
        session.delete(session.get(Environment, "dev3"))

    again = sy("env", "init", "--repo", str(sample), "--envs", "dev1,dev2,dev3", "--workspace", str(ws), "--json")

    report = again.json()
    assert sorted(report["changes"]) == [
        f"dev2: working copy {ws / 'dev2'} on env/dev2",
        "dev3: branch env/dev3-staging at main",
        "dev3: recorded in SQL (port 8083, check 'make test')",
    ]
    assert report["kept"] == ["dev1: left as is (1 commit(s) not in main, 1 uncommitted file(s))"]
    assert rev_parse("HEAD", cwd=dev1) == local
    assert (dev1 / "scratch.txt").read_text() == "uncommitted\n"
    assert git(ws / "dev2", "symbolic-ref", "--short", "HEAD") == "env/dev2"
    assert git(ws / ".repo", "rev-parse", "env/dev3-staging") == git(ws / ".repo", "rev-parse", "main")
    assert sy("env", "list", "--json").json()[2]["check_command"] == "make test"  # kept without --check
    third = sy("env", "init", "--repo", str(sample), "--envs", "dev1,dev2,dev3", "--workspace", str(ws))
    assert third.code == 0 and "Nothing was missing; nothing changed." in third.out


def test_init_of_a_subset_keeps_the_other_environments(sy: Run, sample: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert sy("env", "init", "--repo", str(sample), "--envs", "dev1", "--workspace", str(ws)).code == 0
    done = sy("env", "init", "--repo", str(sample), "--envs", "dev4", "--workspace", str(ws), "--check", "false")
    assert done.code == 1 and "check 'false' on env/dev4 (dev4): FAILED (exit 1)" in done.out  # run once, shown
    assert "the environments are ready, but their check fails there" in done.err
    status = by_env(sy("env", "status", "--workspace", str(ws), "--json").json())
    assert set(status) == {"dev1", "dev4"}
    listed = {row["name"]: (row["port"], row["check_command"]) for row in sy("env", "list", "--json").json()}
    assert listed == {"dev1": (8081, "true"), "dev4": (8084, "false")}  # ports follow the fleet file


def test_init_keeps_a_working_copy_switched_to_a_feature_branch(sy: Run, ws: Path, sample: Path) -> None:
    assert sy("env", "feature", "dev1", "wip").code == 0
    report = sy("env", "init", "--repo", str(sample), "--envs", "dev1", "--workspace", str(ws), "--json").json()
    assert report["changes"] == []
    assert report["kept"] == [f"dev1: left as is (on feature/dev1/{TODAY}-wip)"]


# --- names ----------------------------------------------------------------------------------------------------


def test_unknown_environments_and_bad_names_are_refused_before_anything_runs(sy: Run, ws: Path) -> None:
    done = sy("env", "status", "dev1", "dev9")
    assert done.code == 2 and "unknown environment 'dev9'; this workspace has dev1, dev2, dev3" in done.err
    done = sy("env", "feature", "dev1", "dev2", "bad name")
    assert done.code == 2 and "branch name 'feature/" in done.err and "git does not allow" in done.err
    for bad in ("a..b", "x.lock", "sub/dir", ""):
        assert sy("env", "feature", "dev1", bad).code == 2, bad
    assert git(ws / "dev1", "symbolic-ref", "--short", "HEAD") == "env/dev1"
    done = sy("env", "sync")
    assert done.code == 2 and "name the environments to sync (e.g. dev1 dev2), or pass --all" in done.err
    assert "not both" in sy("env", "push", "dev1", "--all").err
    done = sy("env", "commit", "dev1", "-m", "  ")
    assert done.code == 2 and "the commit message is empty" in done.err
    done = sy("env", "reset", "dev1", "--to", "no-such-ref", "--yes")
    assert done.code == 2 and "--to 'no-such-ref' names no commit in dev1" in done.err


# --- the eleven commands on one environment -------------------------------------------------------------------


def test_status_log_and_diff_on_one_and_on_all(sy: Run, ws: Path) -> None:
    dev2 = ws / "dev2"
    (dev2 / "README.md").write_text("changed\n")
    (dev2 / "new.txt").write_text("new\n")
    every = by_env(sy("env", "status", "--json").json())
    assert set(every) == set(ENVS)
    assert every["dev1"] | {"head": None} == {
        "environment": "dev1",
        "command": "status",
        "ok": True,
        "message": "env/dev1: 0 ahead, 0 behind origin/main; clean",
        "undo": None,
        "branch": "env/dev1",
        "head": None,
        "base": "origin/main",
        "ahead": 0,
        "behind": 0,
        "dirty": [],
    }
    (one,) = sy("env", "status", "dev2", "--json").json()
    assert one["dirty"] == [{"status": " M", "path": "README.md"}, {"status": "??", "path": "new.txt"}]

    (logged,) = sy("env", "log", "dev2", "-n", "1", "--json").json()
    assert [c["subject"] for c in logged["commits"]] == ["Initial commit: greeter package with tests"]
    assert len(sy("env", "log", "--json").json()) == 3

    (changed,) = sy("env", "diff", "dev2", "--json").json()
    assert changed["files"][0]["path"] == "README.md" and changed["untracked"] == ["new.txt"]
    assert "+changed" in changed["text"]
    stat = sy("env", "diff", "dev2", "--stat")
    assert stat.code == 0 and "README.md" in stat.out and "+changed" not in stat.out

    # a commit on env/dev2: the diff against the base (origin/main) shows it with what is still uncommitted
    (dev2 / "committed.py").write_text("X = 1\n")
    git(dev2, "add", "committed.py")
    git(dev2, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "a commit")
    (against,) = sy("env", "diff", "dev2", "--json").json()
    assert {f["path"] for f in against["files"]} == {"README.md", "committed.py"}
    assert (against["base"], against["commits"]) == ("origin/main", 1)
    assert "+X = 1" in against["text"] and "+changed" in against["text"]
    assert against["message"].startswith("2 changed file(s) against origin/main (1 commit(s) since ")
    (only,) = sy("env", "diff", "dev2", "--uncommitted", "--json").json()
    assert [f["path"] for f in only["files"]] == ["README.md"] and "+X = 1" not in only["text"]


def test_feature_commit_push_pull_on_one_environment(sy: Run, ws: Path, sample: Path) -> None:
    dev1 = ws / "dev1"
    (made,) = sy("env", "feature", "dev1", "login-form", "--json").json()
    branch = f"feature/dev1/{TODAY}-login-form"
    assert made["branch"] == branch and git(dev1, "symbolic-ref", "--short", "HEAD") == branch
    assert sy("env", "feature", "dev1", "login-form").code == 1  # already exists

    (dev1 / "login.py").write_text("def login() -> None: ...\n")
    (dev1 / "README.md").unlink()
    (committed,) = sy("env", "commit", "dev1", "-m", "Add the login form", "--json").json()
    assert sorted(committed["files"]) == ["README.md", "login.py"]
    assert git(dev1, "log", "-1", "--format=%s") == "Add the login form" and git(dev1, "status", "--porcelain") == ""
    empty = sy("env", "commit", "dev1", "-m", "again")
    assert empty.code == 1 and "nothing to commit" in empty.out

    assert sy("env", "pull", "dev1").code == 1  # origin has no such branch yet
    pushed = sy("env", "push", "dev1")
    assert pushed.code == 0, pushed.out
    assert git(sample, "rev-parse", branch) == committed["sha"]

    git(sample, "checkout", "-q", branch)  # someone adds to the pushed branch upstream
    upstream = commit_file(sample, "more.py", "x = 1\n", "upstream addition")
    git(sample, "checkout", "-q", "main")
    (pulled,) = sy("env", "pull", "dev1", "--json").json()
    assert pulled["ok"] and rev_parse("HEAD", cwd=dev1) == upstream

    commit_file(dev1, "local.py", "y = 2\n", "local")
    git(sample, "checkout", "-q", branch)
    commit_file(sample, "other.py", "z = 3\n", "upstream again")
    git(sample, "checkout", "-q", "main")
    before = rev_parse("HEAD", cwd=dev1)
    diverged = sy("env", "pull", "dev1")
    assert diverged.code == 1 and "have diverged" in diverged.out
    assert rev_parse("HEAD", cwd=dev1) == before
    assert sy("env", "push", "dev1").code == 1  # origin refuses a non-fast-forward push


def test_sync_fast_forwards_environment_branches_and_refuses_diverged_ones(sy: Run, ws: Path, sample: Path) -> None:
    upstream = commit_file(sample, "CHANGELOG.md", "v2\n", "upstream release")
    assert sy("env", "feature", "dev2", "side").code == 0  # dev2's env branch is not checked out: moved by ref
    local = commit_file(ws / "dev3", "dev3.txt", "mine\n", "dev3 local")  # dev3 has its own commit: diverged

    outcomes = by_env(sy("env", "sync", "--all", "--json").json())

    assert outcomes["dev1"]["ok"] and git(ws / "dev1", "rev-parse", "HEAD") == upstream
    assert outcomes["dev2"]["ok"] and git(ws / ".repo", "rev-parse", "env/dev2") == upstream
    assert not outcomes["dev3"]["ok"]
    assert "env/dev3 and origin/main have diverged (env/dev3 has 1 commit(s)" in outcomes["dev3"]["message"]
    assert git(ws / ".repo", "rev-parse", "env/dev3") == local
    again = by_env(sy("env", "sync", "dev1", "--json").json())
    assert again["dev1"]["message"] == "env/dev1 is up to date with origin/main"


# --- destructive commands -------------------------------------------------------------------------------------


def test_destructive_commands_refuse_without_yes_when_not_interactive(sy: Run, ws: Path) -> None:
    dev1 = ws / "dev1"
    sy("env", "feature", "dev1", "x")
    head = commit_file(dev1, "f.txt", "1\n", "feature work")
    (dev1 / "junk.txt").write_text("junk\n")
    for command in ("clean", "rebase", "reset"):
        done = sy("env", command, "dev1")
        assert done.code == 2, command
        assert f"{command} is destructive and stdin is not a terminal to confirm it; pass --yes" in done.err
    assert "dev1: would remove (cannot be recovered): junk.txt" in sy("env", "clean", "dev1").err
    hint = f"undo afterwards with: git -C {dev1} reset --hard {head}"
    assert hint in sy("env", "reset", "dev1").err and hint in sy("env", "rebase", "dev1").err
    assert rev_parse("HEAD", cwd=dev1) == head and (dev1 / "junk.txt").exists()


def test_the_installed_script_refuses_a_destructive_command_without_a_terminal(ws: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_HOME=str(tmp_path / "home"), SWITCHYARD_WORKSPACE=str(ws))
    done = subprocess.run(
        [SWITCHYARD, "env", "reset", "--all"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pass --yes to reset dev1, dev2, dev3" in done.stderr and "Traceback" not in done.stderr
    assert "undo afterwards with: git -C" in done.stderr


def test_clean_removes_untracked_files_and_saves_tracked_changes(sy: Run, ws: Path) -> None:
    dev1 = ws / "dev1"
    (dev1 / "junk").mkdir()
    (dev1 / "junk" / "a.txt").write_text("a\n")
    (dev1 / "README.md").write_text("edited\n")
    (dev1 / "app" / "__pycache__").mkdir()
    (dev1 / "app" / "__pycache__" / "x.pyc").write_text("ignored files stay\n")
    (cleaned,) = sy("env", "clean", "dev1", "--yes", "--json").json()
    assert cleaned["untracked"] == ["junk/"] and cleaned["tracked"] == ["README.md"]
    assert git(dev1, "status", "--porcelain") == "" and not (dev1 / "junk").exists()
    assert (dev1 / "app" / "__pycache__" / "x.pyc").exists()
    assert "untracked files cannot be recovered" in cleaned["undo"]
    restore = cleaned["undo"].split("; discarded tracked changes: ")[1]
    subprocess.run(shlex.split(restore), check=True, capture_output=True)
    assert (dev1 / "README.md").read_text() == "edited\n"


def test_reset_moves_to_the_environment_branch_and_its_undo_works(sy: Run, ws: Path) -> None:
    dev1 = ws / "dev1"
    sy("env", "feature", "dev1", "doomed")
    work = commit_file(dev1, "w.txt", "work\n", "work")
    (dev1 / "README.md").write_text("uncommitted\n")
    (reset,) = sy("env", "reset", "dev1", "--yes", "--json").json()
    assert rev_parse("HEAD", cwd=dev1) == rev_parse("env/dev1", cwd=dev1) == reset["to"]
    assert git(dev1, "status", "--porcelain") == ""
    undo, restore = reset["undo"].split("; your uncommitted changes: ")
    assert undo == f"git -C {dev1} reset --hard {work}"
    for command in (undo, restore):
        subprocess.run(shlex.split(command), check=True, capture_output=True)
    assert rev_parse("HEAD", cwd=dev1) == work and (dev1 / "README.md").read_text() == "uncommitted\n"
    (to_ref,) = sy("env", "reset", "dev1", "--to", "feature/sample-1", "--yes", "--json").json()
    assert to_ref["to"] == rev_parse("feature/sample-1", cwd=dev1)


def test_rebase_replays_a_feature_branch_and_aborts_on_conflict(sy: Run, ws: Path, sample: Path) -> None:
    dev1 = ws / "dev1"
    on_env = sy("env", "rebase", "dev1", "--yes")
    assert on_env.code == 1 and "rebase works on a feature branch" in on_env.out
    sy("env", "feature", "dev1", "replay")
    old = commit_file(dev1, "feature.txt", "f\n", "feature")
    commit_file(sample, "upstream.txt", "u\n", "upstream")
    assert sy("env", "sync", "dev1").code == 0  # env/dev1 moves on
    (rebased,) = sy("env", "rebase", "dev1", "--yes", "--json").json()
    assert rebased["ok"] and rebased["undo"] == f"git -C {dev1} reset --hard {old}"
    assert git(dev1, "merge-base", "--is-ancestor", "env/dev1", "HEAD") == ""
    assert (dev1 / "upstream.txt").exists()

    commit_file(dev1, "README.md", "feature side\n", "feature edits README")
    commit_file(sample, "README.md", "upstream side\n", "upstream edits README")
    assert sy("env", "sync", "dev1").code == 0
    before = rev_parse("HEAD", cwd=dev1)
    conflict = sy("env", "rebase", "dev1", "--yes", "--json")
    (refused,) = conflict.json()
    assert conflict.code == 1 and refused["conflicts"] == ["README.md"] and "rebase was aborted" in refused["message"]
    assert rev_parse("HEAD", cwd=dev1) == before and git(dev1, "status", "--porcelain") == ""


# --- every command on every environment -----------------------------------------------------------------------


def test_each_of_the_eleven_commands_runs_on_all_environments(sy: Run, ws: Path) -> None:
    for name in ENVS:
        (ws / name / "wip.txt").write_text(f"{name}\n")
    expected = {
        ("status",): 0,
        ("diff",): 0,
        ("log", "-n", "2"): 0,
        ("feature", "--all", "everywhere"): 0,
        ("commit", "--all", "-m", "wip"): 0,
        ("push", "--all"): 0,
        ("pull", "--all"): 0,
        ("sync", "--all"): 0,
        ("rebase", "--all", "--yes"): 0,
        ("reset", "--all", "--yes"): 0,
        ("clean", "--all", "--yes"): 0,
    }
    for args, code in expected.items():
        done = sy("env", *args, "--json")
        assert done.code == code, (args, done.out, done.err)
        rows = done.json()
        assert [row["environment"] for row in rows] == ENVS, args
        assert all(row["command"] == args[0] for row in rows)
    for name in ENVS:
        assert git(ws / name, "symbolic-ref", "--short", "HEAD") == f"feature/{name}/{TODAY}-everywhere"
        assert rev_parse("HEAD", cwd=ws / name) == rev_parse(f"env/{name}", cwd=ws / name)  # after reset


# --- task worktrees -------------------------------------------------------------------------------------------


def test_clean_tasks_removes_kept_task_worktrees_but_not_active_ones(sy: Run, ws: Path, tmp_path: Path) -> None:
    with session_scope(database_url(tmp_path)) as session:
        for task_id, env, status in (("t-failed", "dev1", "failed"), ("t-run", "dev1", "running"),
                                     ("t-other", "dev2", "failed"), ("0000abcd-merged", "dev1", "failed")):  # fmt: skip
            repo.create_task(
                session, task_id=task_id, kind="dev_task", group="dev_workers", environment=env, stage="dev",
                title="t", payload={},
            )  # fmt: skip
            session.flush()
            repo.claim_task(session, task_id=task_id)
            if status == "failed":
                repo.finish_task(session, task_id=task_id, status="failed", reason="kept for inspection")
    for task_id, env in (("t-failed", "dev1"), ("t-run", "dev1"), ("t-other", "dev2")):
        path = task_worktree(ws, env, task_id, base_branch=f"env/{env}", branch=f"task/{task_id}")
        commit_file(path, f"{task_id}.txt", "work\n", f"work of {task_id}")
    merged = task_worktree(ws, "dev1", "0000abcd-merged", base_branch="env/dev1", branch="task/dev_task-0000abcd")
    commit_file(merged, "merged.txt", "merged\n", "merged work")
    git(ws / "dev1", "merge", "-q", "--ff-only", "task/dev_task-0000abcd")  # its work is in env/dev1
    listed = sy("env", "clean-tasks", "dev1", "--list", "--json").json()  # no question asked, nothing removed
    assert [row["task_id"] for row in listed["worktrees"]] == ["0000abcd-merged", "t-failed", "t-run"]
    assert listed["worktrees"][1] | {"path": ""} == {
        "task_id": "t-failed", "path": "", "environment": "dev1", "status": "failed", "branch": "task/t-failed",
        "active": False,
    }  # fmt: skip
    table_out = sy("env", "clean-tasks", "--list").out
    assert "t-failed" in table_out and "t-other" in table_out and "task/t-run" in table_out
    assert sy("env", "clean-tasks", "dev1").code == 2  # asks first; no terminal and no --yes

    done = sy("env", "clean-tasks", "dev1", "--yes", "--json").json()

    assert [row["task_id"] for row in done["removed"]] == ["0000abcd-merged", "t-failed"]
    assert [row["task_id"] for row in done["skipped"]] == ["t-run"]
    assert not (ws / ".tasks" / "t-failed").exists()
    assert (ws / ".tasks" / "t-run").exists() and (ws / ".tasks" / "t-other").exists()
    assert "task/t-failed" in git(ws / ".repo", "branch", "--list", "task/*")  # unmerged work stays
    assert done["branches"]["deleted"] == ["task/dev_task-0000abcd"]  # merged: nothing needs it
    assert "task/t-failed" not in done["branches"]["deleted"]
    assert "t-failed" not in git(ws / ".repo", "worktree", "list")
    assert sy("env", "clean-tasks", "dev9", "--yes").code == 2


def test_at_a_terminal_the_answer_decides(sy: Run, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev1 = ws / "dev1"
    (dev1 / "junk.txt").write_text("junk\n")

    def answer(text: str) -> None:
        stdin = io.StringIO(text)
        monkeypatch.setattr(stdin, "isatty", lambda: True, raising=False)
        monkeypatch.setattr(sys, "stdin", stdin)

    answer("n\n")
    declined = sy("env", "clean", "dev1")
    assert declined.code == 1 and "Nothing done." in declined.err and (dev1 / "junk.txt").exists()
    answer("y\n")
    accepted = sy("env", "clean", "dev1")
    assert accepted.code == 0 and not (dev1 / "junk.txt").exists()
    assert "untracked files cannot be recovered" in accepted.out
