"""Promotion between stages against real git in tmp_path: the check runs on the source stage's tip in a
temporary worktree, the target fast-forwards only when it passes, a non-fast-forward is refused with the
reason, and every outcome is a row of ``promotions``. The Python API (what the demo calls) and the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import main
from cli.envs import init_environments
from environments.git import rev_parse, run_git
from environments.promote import promote, source_stage
from environments.sample import make_sample_repo
from store.db import dispose_all, session_scope
from store.models import Environment, Promotion
from switchyard.errors import InputError, NotFound
from switchyard.settings import load_settings
from tasks.context import Context, build_context


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    yield build_context(load_settings(home=tmp_path / "home", workspace=tmp_path / "ws"))
    dispose_all()


@pytest.fixture
def ws(ctx: Context, tmp_path: Path) -> Path:
    sample = make_sample_repo(tmp_path / "sample", feature_branches=0)
    init_environments(ctx, str(sample), tmp_path / "ws", ["dev1", "dev2"], check="make test")
    return tmp_path / "ws"


def sha(ws: Path, branch: str) -> str:
    return rev_parse(branch, cwd=ws / ".repo")


def land(ws: Path, env: str, name: str, text: str) -> str:
    """A commit on env/<env>, as an integration would leave it."""
    path = ws / env
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    run_git(["add", name], cwd=path)
    run_git(["-c", "commit.gpgsign=false", "commit", "-q", "-m", f"add {name}"], cwd=path)
    return rev_parse("HEAD", cwd=path)


def set_check(ctx: Context, env: str, command: str) -> None:
    with session_scope(ctx.database_url) as session:
        row = session.get(Environment, env)
        assert row is not None
        row.check_command = command


def rows(ctx: Context) -> list[tuple[str, str, str]]:
    with session_scope(ctx.database_url) as session:
        return [(p.environment, p.to_stage, p.status) for p in session.query(Promotion).order_by(Promotion.id)]


def test_a_passing_check_fast_forwards_the_next_stage_and_only_that(ctx: Context, ws: Path) -> None:
    tip = land(ws, "dev1", "app/extra.py", "X = 1\n")
    staging = sha(ws, "env/dev1-staging")

    result = promote(ws, "dev1", "qa", database_url=ctx.database_url)

    assert result.status == "promoted" and result.ok
    assert (result.source_branch, result.target_branch, result.from_stage) == ("env/dev1", "env/dev1-qa", "dev")
    assert sha(ws, "env/dev1-qa") == tip == result.target_after
    assert sha(ws, "env/dev1-staging") == staging  # the stage after is untouched
    assert result.check is not None and result.check.passed and "Ran 2 tests" in result.check.output
    assert result.reason.startswith(f"check `{result.check.command}` passed on env/dev1 at {tip[:12]} in ")
    assert result.reason.endswith(f"s; fast-forwarded env/dev1-qa by 1 commit(s) to {tip[:12]}")
    assert list((ws / ".promote").iterdir()) == []  # the temporary worktree is gone
    assert "promote" not in run_git(["worktree", "list"], cwd=ws / ".repo")

    assert promote(ws, "dev1", "staging", database_url=ctx.database_url).status == "promoted"
    assert sha(ws, "env/dev1-staging") == tip
    again = promote(ws, "dev1", "staging", database_url=ctx.database_url)
    assert again.status == "up_to_date" and again.ok and again.check is None
    assert rows(ctx) == [("dev1", "qa", "promoted"), ("dev1", "staging", "promoted"), ("dev1", "staging", "up_to_date")]


def test_a_failing_check_is_refused_with_its_exit_code_and_output(ctx: Context, ws: Path) -> None:
    land(ws, "dev1", "tests/test_broken.py", "import unittest\nclass T(unittest.TestCase):\n    def test_x(self):\n"
         "        self.fail('broken on purpose')\n")  # fmt: skip
    before = sha(ws, "env/dev1-qa")

    result = promote(ws, "dev1", "qa", database_url=ctx.database_url)

    assert result.status == "check_failed" and not result.ok
    assert result.check is not None and result.check.exit_code == 2
    assert "broken on purpose" in result.check.output
    assert result.reason.startswith("check `make test` failed on env/dev1 at") and "(exit code 2)" in result.reason
    assert sha(ws, "env/dev1-qa") == before == result.target_after
    with session_scope(ctx.database_url) as session:
        (row,) = session.query(Promotion).all()
        assert (row.status, row.check["exit_code"], row.check["passed"]) == ("check_failed", 2, False)
        assert "broken on purpose" in row.check["output"]
    assert list((ws / ".promote").iterdir()) == []


def test_the_check_runs_on_the_source_tip_not_on_the_working_copy(ctx: Context, ws: Path) -> None:
    land(ws, "dev2", "marker.txt", "committed\n")
    (ws / "dev2" / "uncommitted.txt").write_text("only in the working copy\n")
    set_check(ctx, "dev2", "sh -c 'test -f marker.txt && test ! -f uncommitted.txt'")
    assert promote(ws, "dev2", "qa", database_url=ctx.database_url).status == "promoted"
    set_check(ctx, "dev2", "false")
    land(ws, "dev2", "next.txt", "more\n")
    failed = promote(ws, "dev2", "qa", database_url=ctx.database_url)
    assert failed.status == "check_failed" and failed.check is not None and failed.check.exit_code == 1


def test_a_target_with_commits_of_its_own_is_refused_as_not_a_fast_forward(ctx: Context, ws: Path) -> None:
    land(ws, "dev1", "feature.txt", "dev work\n")
    repo = ws / ".repo"
    tree = rev_parse("env/dev1-qa", cwd=repo) + "^{tree}"
    stray = run_git(["commit-tree", tree, "-p", "env/dev1-qa", "-m", "hotfix made on qa"], cwd=repo).strip()
    run_git(["update-ref", "refs/heads/env/dev1-qa", stray], cwd=repo)
    set_check(ctx, "dev1", "true")

    result = promote(ws, "dev1", "qa", database_url=ctx.database_url)

    assert result.status == "not_fast_forward" and result.check is None  # refused before running the check
    assert "env/dev1-qa has 1 commit(s) that env/dev1 does not" in result.reason
    assert "hotfix made on qa" in result.reason
    assert sha(ws, "env/dev1-qa") == stray
    assert rows(ctx) == [("dev1", "qa", "not_fast_forward")]


def test_bad_stages_and_environments_are_refused(ctx: Context, ws: Path) -> None:
    assert source_stage(["dev", "qa", "staging"], "staging") == "qa"
    for stage in ("dev", "prod", ""):
        with pytest.raises(InputError, match="--to must be one of: qa, staging"):
            promote(ws, "dev1", stage, database_url=ctx.database_url)
    with pytest.raises(NotFound, match="unknown environment 'dev9'; this workspace has dev1, dev2"):
        promote(ws, "dev9", "qa", database_url=ctx.database_url)
    with session_scope(ctx.database_url) as session:
        session.delete(session.get(Environment, "dev2"))
    with pytest.raises(NotFound, match="'dev2' is not recorded in the database; run: switchyard env init"):
        promote(ws, "dev2", "qa", database_url=ctx.database_url)
    assert rows(ctx) == []


def test_promote_through_the_cli(
    ctx: Context, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("SWITCHYARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWITCHYARD_WORKSPACE", str(ws))
    land(ws, "dev1", "ok.txt", "fine\n")
    assert main(["env", "promote", "dev1", "--to", "qa", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["status"] == "promoted" and done["check"]["command"] == "make test"

    set_check(ctx, "dev1", "sh -c 'echo the check says no; exit 3'")
    land(ws, "dev1", "bad.txt", "no\n")
    assert main(["env", "promote", "dev1", "--to", "qa"]) == 1
    out = capsys.readouterr().out
    assert "check_failed" in out and "(exit code 3)" in out and "the check says no" in out
    assert main(["env", "promote", "dev1", "--to", "prod"]) == 2
    assert "--to must be one of: qa, staging" in capsys.readouterr().err
