"""A check runs exactly as in a clone of the user's repository: through ``sh -c``, with a documented
environment, and with no configuration file of the project the workspace happens to live in (here a parent
directory whose ``pyproject.toml`` would break any pytest run that found it). Runs the installed `switchyard`
script, real git and the real pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from environments.checks import check_environment, parse_check_command, run_check
from environments.layout import configs_above, tasks_dir, work_root
from switchyard.errors import InputError

BIN = Path(sys.executable).parent
SWITCHYARD = str(BIN / "switchyard")
POISON = '[tool.pytest.ini_options]\naddopts = "--no-such-option-from-a-parent"\n'


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def user_repo(root: Path, *, src_layout: bool) -> Path:
    """A user's small repository with tests and no pytest configuration of its own: flat (the test beside the
    package, so plain `pytest` imports it) or a src layout (tests/ needs `PYTHONPATH=src`)."""
    repo = root / "myproject"
    package = repo / "src" / "greet" if src_layout else repo / "greet"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def hello(name: str) -> str:\n    return f'hello {name}'\n")
    tests = repo / "tests" if src_layout else repo
    tests.mkdir(exist_ok=True)
    (tests / "test_greet.py").write_text(
        "from greet import hello\n\n\ndef test_hello() -> None:\n    assert hello('ada') == 'hello ada'\n"
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "first")
    return repo


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory like Switchyard's own checkout: a pyproject.toml whose pytest options break a run."""
    outer = tmp_path / "someproject"
    outer.mkdir()
    (outer / "pyproject.toml").write_text(POISON)
    return outer


def cli_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    base.update(
        SWITCHYARD_HOME=str(tmp_path / "home"),
        PATH=f"{BIN}{os.pathsep}{base.get('PATH', os.defpath)}",  # the user's shell, its venv active
        COLUMNS="200",
    )
    return base


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHYARD, *args], env=cli_env(tmp_path), capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(("src_layout", "command"), [(False, "pytest"), (True, "PYTHONPATH=src pytest")])
def test_env_init_runs_the_check_once_as_in_a_clone(
    tmp_path: Path, project: Path, src_layout: bool, command: str
) -> None:
    repo = user_repo(tmp_path, src_layout=src_layout)
    workspace = project / ".switchyard" / "workspace"  # inside the project, as `./.switchyard` would be
    done = cli(tmp_path, "env", "init", "--repo", str(repo), "--workspace", str(workspace), "--envs", "dev1,dev2",
               "--check", command)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"check {command!r} on env/dev1 (dev1, dev2): passed in " in done.stdout
    assert done.stderr.count("running the check") == 1  # once for both environments: one command, one commit

    promoted = cli(tmp_path, "env", "promote", "dev1", "--to", "qa", "--workspace", str(workspace))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert promoted.stdout.count("up_to_date") == 1  # nothing new on dev1: no check needed, and it says so


def test_the_check_finds_no_configuration_above_it(tmp_path: Path, project: Path) -> None:
    repo = user_repo(tmp_path, src_layout=False)
    workspace = project / ".switchyard" / "workspace"
    done = cli(tmp_path, "env", "init", "--repo", str(repo), "--workspace", str(workspace), "--envs", "dev1",
               "--check", "pytest -p no:cacheprovider", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    root = work_root(workspace)
    assert project not in root.parents and configs_above(root) == []
    assert tasks_dir(workspace) == root / ".tasks"
    import json

    check = json.loads(done.stdout)["checks"][0]
    assert check["passed"] and check["exit_code"] == 0 and check["duration_s"] > 0
    assert "configfile:" not in check["output"]  # pytest found no configuration file: the clone has none
    rootdir = next(line for line in check["output"].splitlines() if line.startswith("rootdir: "))
    assert str(project) not in rootdir


def test_a_failing_check_at_init_is_reported_and_can_be_skipped(tmp_path: Path, project: Path) -> None:
    repo = user_repo(tmp_path, src_layout=True)  # plain `pytest` cannot import a src layout
    workspace = project / "ws"
    done = cli(tmp_path, "env", "init", "--repo", str(repo), "--workspace", str(workspace), "--envs", "dev1",
               "--check", "pytest")  # fmt: skip
    assert done.returncode == 1
    assert "check 'pytest' on env/dev1 (dev1): FAILED (exit 2) in " in done.stdout
    assert "ModuleNotFoundError" in done.stdout and "the environments are ready" in done.stderr
    again = cli(tmp_path, "env", "init", "--repo", str(repo), "--workspace", str(workspace), "--no-check-run")
    assert again.returncode == 0 and "running the check" not in again.stderr


def test_a_check_command_the_shell_cannot_parse_is_refused_at_init(tmp_path: Path) -> None:
    repo = user_repo(tmp_path, src_layout=False)
    done = cli(tmp_path, "env", "init", "--repo", str(repo), "--workspace", str(tmp_path / "ws"),
               "--check", "pytest && (")  # fmt: skip
    assert done.returncode == 2 and "is not valid sh" in done.stderr
    assert not (tmp_path / "ws").exists()  # nothing made
    with pytest.raises(InputError, match="empty"):
        parse_check_command("  ")
    with pytest.raises(InputError, match="one line"):
        parse_check_command("make\nrm -rf /")


def test_a_check_sees_only_its_documented_environment(tmp_path: Path) -> None:
    worker = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8", "SWITCHYARD_HOME": "/x",
              "ANTHROPIC_API_KEY": "sk-secret", "PYTHONPATH": "/switchyard", "VIRTUAL_ENV": "/venv"}  # fmt: skip
    env = check_environment(tmp_path, worker)
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8",
                   "GIT_TERMINAL_PROMPT": "0", "PWD": str(tmp_path)}  # fmt: skip
    command = 'test -z "$SWITCHYARD_HOME$PYTHONPATH$ANTHROPIC_API_KEY" && X=1 sh -c \'echo "x=$X" > out.txt\''
    result = run_check(tmp_path, command, timeout_s=60)
    assert result.passed, result.output
    assert (tmp_path / "out.txt").read_text() == "x=1\n"  # sh -c: assignments, &&, quoting, redirection
