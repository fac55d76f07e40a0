"""Workspaces and worktrees against real git in tmp_path: init, repair, name checks, task worktrees."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from environments.git import (
    ahead_behind,
    changed_files,
    check_branch_name,
    redact_url,
    rev_parse,
    run_git,
    user_identity,
)
from environments.layout import METADATA_FILE, read_config
from environments.sample import make_sample_repo
from environments.workspace import EnvironmentInfo, ensure_workspace, init_workspace, list_environments
from environments.worktrees import list_worktrees, remove_task_worktree, task_worktree
from switchyard.errors import GitError, InputError, NotFound

ENVS = ["dev1", "dev2", "dev3", "dev4", "dev5"]
STAGES = ["dev", "qa", "staging"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_repo(tmp_path_factory.mktemp("sample") / "greeter")


def init(sample: Path, workspace: Path, envs: list[str] = ENVS) -> list[EnvironmentInfo]:
    return init_workspace(str(sample), workspace, envs, STAGES, base_port=8081, check_command="make test")


def branches(repo: Path) -> dict[str, str]:
    out = run_git(["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"], cwd=repo)
    return dict(line.split() for line in out.splitlines())


def test_sample_repo_has_main_and_feature_branches_each_adding_one_file(sample: Path) -> None:
    heads = branches(sample)
    assert {"main", *(f"feature/sample-{i}" for i in range(1, 6))} == set(heads)
    for i in range(1, 6):
        added = run_git(["diff", "--name-status", "main", f"feature/sample-{i}"], cwd=sample)
        assert added == f"A\tapp/feature_{i}.py\n"
    tests = subprocess.run(
        ["python3", "-m", "unittest", "discover", "-s", "tests"], cwd=sample, capture_output=True, check=False
    )
    assert tests.returncode == 0, tests.stderr


def test_sample_repo_is_deterministic(tmp_path: Path, sample: Path) -> None:
    again = make_sample_repo(tmp_path / "again")
    assert branches(again) == branches(sample)


def test_init_creates_worktrees_branches_and_ports(tmp_path: Path, sample: Path) -> None:
    envs = init(sample, tmp_path / "ws")
    assert [(e.name, e.port, e.branch) for e in envs] == [(n, 8081 + i, f"env/{n}") for i, n in enumerate(ENVS)]
    repo = tmp_path / "ws" / ".repo"
    heads = branches(repo)
    main = heads["main"]
    for env in envs:
        n = env.name
        assert env.stages == [("dev", f"env/{n}"), ("qa", f"env/{n}-qa"), ("staging", f"env/{n}-staging")]
        assert all(heads[branch] == main for _, branch in env.stages)
        assert (env.path / "app" / "greeting.py").is_file()
        assert run_git(["symbolic-ref", "--short", "HEAD"], cwd=env.path).strip() == env.branch
        assert env.check_command == "make test"
        assert env.repository == str(sample.resolve())
    assert run_git(["config", "remote.origin.url"], cwd=repo).strip() == str(sample.resolve())
    assert list_environments(tmp_path / "ws") == envs


def test_rerun_repairs_what_is_missing_and_moves_nothing(tmp_path: Path, sample: Path) -> None:
    ws = tmp_path / "ws"
    init(sample, ws)
    dev1 = ws / "dev1"
    (dev1 / "NOTES.md").write_text("work in progress\n")
    run_git(["add", "NOTES.md"], cwd=dev1)
    run_git(["commit", "-q", "-m", "notes"], cwd=dev1)
    moved = rev_parse("HEAD", cwd=dev1)
    run_git(["worktree", "remove", "--force", str(ws / "dev2")], cwd=ws / ".repo")  # a clean removal
    shutil.rmtree(ws / "dev3")  # a directory deleted behind git's back
    run_git(["branch", "-D", "env/dev4-qa"], cwd=ws / ".repo")
    before = branches(ws / ".repo")

    init(sample, ws)

    after = branches(ws / ".repo")
    assert after["env/dev1"] == moved != after["main"]
    assert after["env/dev4-qa"] == after["main"]
    assert {k: v for k, v in after.items() if k != "env/dev4-qa"} == before
    for name in ("dev2", "dev3"):
        assert run_git(["symbolic-ref", "--short", "HEAD"], cwd=ws / name).strip() == f"env/{name}"
    assert (dev1 / "NOTES.md").read_text() == "work in progress\n"


@pytest.mark.parametrize(
    ("envs", "message"),
    [
        (["Dev1"], "environment name 'Dev1'"),
        (["dev 1"], "environment name 'dev 1'"),
        (["../x"], "environment name '../x'"),
        (["dev1", "dev1"], "must be unique"),
        ([], "at least one environment"),
    ],
)
def test_init_refuses_bad_environment_names(tmp_path: Path, sample: Path, envs: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        init(sample, tmp_path / "ws", envs)
    assert not (tmp_path / "ws").exists()


def test_init_refuses_unknown_base_branch_and_other_origin(tmp_path: Path, sample: Path) -> None:
    with pytest.raises(InputError, match="base branch 'nope' does not exist"):
        init_workspace(
            str(sample),
            tmp_path / "ws",
            ["dev1"],
            STAGES,
            base_port=8081,
            check_command="t",
            base_branch="nope",
        )
    assert not (tmp_path / "ws" / ".repo").exists()  # the failed init left nothing bound to the source
    other = make_sample_repo(tmp_path / "other", feature_branches=0)
    init(other, tmp_path / "ws", ["dev1"])  # so the same workspace can take another repository
    init(sample, tmp_path / "ws2", ["dev1"])
    with pytest.raises(InputError, match=r"holds a clone of .* pass --workspace DIR"):
        init(other, tmp_path / "ws2", ["dev1"])
    with pytest.raises(InputError, match="does not exist; give the path of a git repository or its URL"):
        init(tmp_path / "missing", tmp_path / "ws3", ["dev1"])


@pytest.mark.parametrize("name", ["has space", "a..b", "-x", "end/", "x.lock", "a~b", "HEAD", "@{-1}", ""])
def test_invalid_branch_names_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(InputError, match="branch name") as info:
        check_branch_name(name)
    assert "e.g." in str(info.value)


def test_valid_branch_names_pass() -> None:
    assert check_branch_name("feature/login-form") == "feature/login-form"
    assert check_branch_name("task/42.fix_it") == "task/42.fix_it"


def test_run_git_failure_carries_command_and_stderr(tmp_path: Path) -> None:
    with pytest.raises(GitError) as info:
        run_git(["rev-parse", "--verify", "no-such-ref"], cwd=tmp_path)
    assert info.value.command == ["git", "rev-parse", "--verify", "no-such-ref"]
    assert "not a git repository" in info.value.stderr


@pytest.fixture
def workspace(tmp_path: Path, sample: Path) -> Path:
    init(sample, tmp_path / "ws", ["dev1", "dev2"])
    return tmp_path / "ws"


def test_task_worktree_create_reuse_remove(workspace: Path) -> None:
    path = task_worktree(workspace, "dev1", "t-1", base_branch="env/dev1", branch="task/t-1")
    assert path == workspace / ".tasks" / "t-1"
    assert run_git(["symbolic-ref", "--short", "HEAD"], cwd=path).strip() == "task/t-1"
    (path / "scratch.txt").write_text("kept across redelivery\n")

    again = task_worktree(workspace, "dev1", "t-1", base_branch="env/dev1", branch="task/t-1")
    assert again == path and (path / "scratch.txt").exists()

    remove_task_worktree(workspace, "t-1")
    assert not path.exists()
    assert path.resolve() not in list_worktrees(workspace / ".repo")
    assert "task/t-1" in branches(workspace / ".repo")
    remove_task_worktree(workspace, "t-1")  # already gone: nothing to do

    task_worktree(workspace, "dev1", "t-1", base_branch="env/dev1", branch="task/t-1")
    remove_task_worktree(workspace, "t-1", keep_branch=False)
    assert "task/t-1" not in branches(workspace / ".repo")


def test_task_worktree_refuses_bad_input(workspace: Path) -> None:
    with pytest.raises(NotFound, match="unknown environment 'dev9'"):
        task_worktree(workspace, "dev9", "t-1", base_branch="env/dev1", branch="task/t-1")
    with pytest.raises(InputError, match=r"task id '\.\./escape'"):
        task_worktree(workspace, "dev1", "../escape", base_branch="env/dev1", branch="task/x")
    with pytest.raises(InputError, match="branch 'env/nope' does not exist"):
        task_worktree(workspace, "dev1", "t-2", base_branch="env/nope", branch="task/t-2")
    with pytest.raises(InputError, match="branch name 'bad branch'"):
        task_worktree(workspace, "dev1", "t-3", base_branch="env/dev1", branch="bad branch")
    task_worktree(workspace, "dev1", "t-4", base_branch="env/dev1", branch="task/t-4")
    with pytest.raises(InputError, match="already a worktree on task/t-4"):
        task_worktree(workspace, "dev1", "t-4", base_branch="env/dev1", branch="task/other")


def test_eight_threads_create_task_worktrees_at_once(workspace: Path) -> None:
    barrier = threading.Barrier(8)

    def create(i: int) -> Path:
        barrier.wait()
        return task_worktree(workspace, "dev2", f"par-{i}", base_branch="env/dev2", branch=f"task/par-{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(create, range(8)))  # re-raises the first failure
    assert paths == [workspace / ".tasks" / f"par-{i}" for i in range(8)]
    registered = list_worktrees(workspace / ".repo")
    for i in range(8):
        assert registered[(workspace / ".tasks" / f"par-{i}").resolve()] == f"task/par-{i}"


def test_a_rerun_for_some_environments_keeps_the_others_and_their_settings(tmp_path: Path, sample: Path) -> None:
    ws = tmp_path / "ws"
    first = ensure_workspace(str(sample), ws, ["dev1", "dev2"], STAGES, base_port=8081, check_command="make test")
    assert len(first.changes) == 1 + 2 * 3 and first.kept == []
    report = ensure_workspace(
        str(sample), ws, ["dev5"], STAGES, base_port=8081, check_command="true", ports={"dev5": 8085}
    )
    assert report.changes == [
        f"dev5: working copy {ws.resolve() / 'dev5'} on env/dev5 (new branch from main)",
        "dev5: branch env/dev5-qa at main",
        "dev5: branch env/dev5-staging at main",
    ]
    assert [(e.name, e.port, e.check_command) for e in report.environments] == [
        ("dev1", 8081, "make test"),
        ("dev2", 8082, "make test"),
        ("dev5", 8085, "true"),
    ]
    kept = ensure_workspace(str(sample), ws, ["dev1"], STAGES, base_port=8081, check_command="other")
    assert kept.changes == [] and kept.environments[0].check_command == "make test"
    replaced = ensure_workspace(
        str(sample), ws, ["dev1"], STAGES, base_port=8081, check_command="other", replace_check=True
    )
    assert [e.check_command for e in replaced.environments] == ["other", "make test", "true"]


def test_a_workspace_file_from_before_per_environment_settings_still_reads(tmp_path: Path, sample: Path) -> None:
    ws = tmp_path / "ws"
    init(sample, ws, ["dev1", "dev2"])
    path = ws / METADATA_FILE
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in {"ports", "check_commands"}}
    path.write_text(json.dumps(raw))
    assert [(e.port, e.check_command) for e in list_environments(ws)] == [(8081, "make test"), (8082, "make test")]
    path.write_text(json.dumps({**raw, "surprise": 1}))
    with pytest.raises(InputError, match="is not a workspace file Switchyard wrote"):
        read_config(ws)


def test_git_helpers_for_status(tmp_path: Path, sample: Path) -> None:
    ws = tmp_path / "ws"
    init(sample, ws, ["dev1"])
    dev1 = ws / "dev1"
    run_git(["mv", "README.md", "READ.md"], cwd=dev1)
    (dev1 / "Makefile").write_text("changed\n")
    (dev1 / "new dir").mkdir()
    (dev1 / "new dir" / "a b.txt").write_text("x\n")
    assert changed_files(cwd=dev1) == [(" M", "Makefile"), ("R ", "READ.md"), ("??", "new dir/a b.txt")]
    assert changed_files(cwd=dev1, untracked=False) == [(" M", "Makefile"), ("R ", "READ.md")]
    assert ahead_behind("env/dev1", "feature/sample-1", cwd=dev1) == (0, 1)
    assert user_identity(cwd=dev1).name  # the user's, or Switchyard's when none is configured


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:ghp_secret@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("/srv/git/repo", "/srv/git/repo"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
