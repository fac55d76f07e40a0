"""Bad input is refused at the door, before a row is written, a message is sent or a provider is paid.

The same bad payloads go through the three doors (Python ``submit``, ``POST /api/tasks``, the ``switchyard``
CLI) against a real workspace (sample repository, ``dev1``), SQLite and a real Redis broker. Each refusal must
name what was wrong (422 / InputError / exit 2) and leave no task row and no message on any queue; a good
payload through the same door is accepted, so every "nothing written" below can fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import NO_PROVIDER_KEYS, flushed_redis
from fastapi.testclient import TestClient

from cli import main
from cli.envs import init_environments
from environments.sample import make_sample_repo
from store.db import dispose_all, session_scope
from store.models import Task
from switchyard.errors import InputError
from switchyard.settings import Settings
from tasks.context import Context, build_context
from tasks.submit import submit
from web.app import create_app

SWITCHYARD = str(Path(sys.executable).parent / "switchyard")
QUEUES = ("high_level", "dev_workers", "pr_review", "pr_impl", "pr_integ")
NOBODY = str(uuid.uuid4())  # a well-formed id that no task has
BRANCH = "feature/sample-1"  # made by the sample repository

# (name, payload, what the message must say); every payload is one fix away from a good one
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("nul-in-branch", {"kind": "pr_review", "branch": f"{BRANCH}\x00"}, "branch 'feature/sample-1\\x00' has a"),
    ("nul-in-title", {"kind": "pr_impl", "title": "add\x00x"}, "title 'add\\x00x' has a control character (NUL)"),
    ("esc-in-description", {"kind": "dev_task", "title": "t", "description": "a\x1b[31m"}, "(ESC) at position 1"),
    ("c1-in-goal", {"kind": "plan", "goal": "ship\x85it"}, "goal 'ship\\x85it' has a control character (U+0085)"),
    ("newline-in-title", {"kind": "pr_impl", "title": "one\ntwo"}, "a title is one line"),
    ("control-in-environment", {"kind": "plan", "goal": "g", "environment": "dev\x011"}, "environment 'dev\\x011'"),
    ("space-in-provider", {"kind": "plan", "goal": "g", "avoid_providers": ["cla ude"]}, "has whitespace"),
    (
        "option-like-base-branch",
        {"kind": "pr_impl", "title": "t", "base_branches": ["--upload-pack=touch /tmp/pwned"]},
        "base_branches.0 '--upload-pack=touch /tmp/pwned' starts with '-', so git would read it as an option",
    ),
    ("option-like-branch", {"kind": "pr_review", "branch": "--output=/tmp/x"}, "starts with '-'"),
    ("bad-ref-branch", {"kind": "pr_integ", "branch": "feature/a..b"}, "has '..', which git does not allow"),
    ("missing-base-branch", {"kind": "pr_impl", "title": "t", "base_branches": ["feature/nope"]}, "does not exist"),
    ("option-like-task-id", {"kind": "plan", "goal": "g", "parent_id": "-x"}, "parent_id '-x' is not a task id"),
    (
        "review-of-nobody",
        {"kind": "pr_review", "branch": BRANCH, "review_of": NOBODY},
        f"review_of names task '{NOBODY}', which does not exist",
    ),
    ("parent-nobody", {"kind": "plan", "goal": "g", "parent_id": NOBODY}, f"parent_id names task '{NOBODY}'"),
    ("depends-on-nobody", {"kind": "dev_task", "title": "t", "depends_on": [NOBODY]}, "which does not exist"),
]
GOOD: dict[str, Any] = {
    "kind": "plan",
    "environment": "dev1",
    "goal": "first line\n\tsecond line, indented\r\n",  # prose keeps its tabs and line breaks
    "title": "a title\twith a tab",
}


def payload(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"environment": "dev1", **overrides}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """dev1 on the sample repository, SQLite, and a Redis broker whose queues the tests read."""
    root = tmp_path_factory.mktemp("door")
    database_url = f"sqlite:///{root / 'db.sqlite'}"
    settings = Settings(**NO_PROVIDER_KEYS, home=root / "home", database_url=database_url, broker_url=flushed_redis(13))
    ctx = build_context(settings)
    init_environments(ctx, str(make_sample_repo(root / "sample", feature_branches=1)), root / "workspace", ["dev1"])
    yield ctx
    dispose_all()


@pytest.fixture
def clean(door: Context) -> Context:
    """No tasks and no messages before the test."""
    with session_scope(door.database_url) as session:
        session.query(Task).delete()
    flushed_redis(13)
    return door


def written(ctx: Context) -> tuple[int, int]:
    """(task rows, messages on the group queues)."""
    with session_scope(ctx.database_url) as session:
        rows = session.query(Task).count()
    client = redis.Redis.from_url(ctx.settings.effective_broker_url)
    try:
        messages = sum(int(client.llen(queue)) for queue in QUEUES)
    finally:
        client.close()
    return rows, messages


def nothing_written(ctx: Context) -> None:
    assert written(ctx) == (0, 0)


@pytest.mark.integration
@pytest.mark.parametrize(("overrides", "message"), [(p, m) for _, p, m in BAD], ids=[name for name, _, _ in BAD])
def test_python_submit_refuses(clean: Context, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as refused:
        submit(payload(overrides), context=clean)
    assert message in str(refused.value)
    nothing_written(clean)


@pytest.mark.integration
@pytest.mark.parametrize(("overrides", "message"), [(p, m) for _, p, m in BAD], ids=[name for name, _, _ in BAD])
def test_http_refuses_with_422(clean: Context, overrides: dict[str, Any], message: str) -> None:
    with TestClient(create_app(clean)) as client:
        response = client.post("/api/tasks", json=payload(overrides))
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    nothing_written(clean)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/tasks/%00", "path.task_id: has a control character (NUL)"),
        ("/api/tasks/--all", "path.task_id: is not a task id"),
        ("/api/tasks?environment=dev%1B1", "query.environment: has a control character (ESC)"),
        ("/api/tasks?kind=launch", "query.kind: Input should be 'plan'"),
        ("/api/tasks?status=%00", "query.status: has a control character (NUL)"),
        ("/api/costs?since=0001-01-01T00:00:00%2B14:00", "query.since: Value error, is outside the years 1-9999"),
    ],
)
def test_paths_and_queries_are_checked_too(clean: Context, path: str, message: str) -> None:
    with TestClient(create_app(clean)) as client:
        response = client.get(path)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("body", [b"\xff\xfe{", b"{not json", b"[1, 2]", b'"a string"', b"null"])
def test_a_body_that_is_no_task_is_a_422(clean: Context, body: bytes) -> None:
    with TestClient(create_app(clean)) as client:
        response = client.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid request: ")
    nothing_written(clean)


@pytest.mark.integration
def test_every_door_lets_a_good_task_in(clean: Context) -> None:
    """The control: the same fixture writes a row and a message for a good payload, through each door."""
    task_id = submit(GOOD, context=clean)
    assert written(clean) == (1, 1)
    with TestClient(create_app(clean)) as client:
        response = client.post("/api/tasks", json=GOOD)
        assert response.status_code == 202, response.text
        assert client.get(f"/api/tasks/{task_id}").json()["payload"]["goal"] == GOOD["goal"].strip()
    review = {"kind": "pr_review", "environment": "dev1", "branch": BRANCH}
    submit(review, context=clean)
    assert written(clean) == (3, 3)


@pytest.mark.integration
def test_a_refused_review_never_reaches_a_provider(clean: Context) -> None:
    """The tester's case: a review of no task used to call Claude, be charged, then fail on a foreign key."""
    with pytest.raises(InputError, match="review_of names task"):
        submit({"kind": "pr_review", "environment": "dev1", "branch": BRANCH, "review_of": NOBODY}, context=clean)
    impl = submit({"kind": "pr_impl", "environment": "dev1", "title": "x", "pipeline": False}, context=clean)
    plan = submit({"kind": "plan", "environment": "dev1", "goal": "g"}, context=clean)
    with pytest.raises(InputError, match="a plan, not a pr_impl or dev_task"):
        submit({"kind": "pr_review", "environment": "dev1", "branch": BRANCH, "review_of": plan}, context=clean)
    submit({"kind": "pr_review", "environment": "dev1", "branch": BRANCH, "review_of": impl}, context=clean)
    assert written(clean) == (3, 3)


# The CLI: argv cannot carry NUL (execve refuses it), every other control character can.
CLI_BAD: list[tuple[str, list[str], str]] = [
    ("esc-in-title", ["pr_impl", "--title", "red\x1b[31m"], "title 'red\\x1b[31m' has a control character (ESC)"),
    ("newline-in-title", ["dev_task", "--title", "a\nb"], "a title is one line"),
    ("control-in-branch", ["pr_review", "--branch", "feature/\x01x"], "has a control character (U+0001)"),
    ("option-like-branch", ["pr_review", "--branch=--upload-pack=touch /tmp/pwned"], "starts with '-'"),
    ("missing-branch", ["pr_integ", "--branch", "feature/nope"], "branch 'feature/nope' does not exist"),
    ("depends-on-nobody", ["dev_task", "--title", "t", "--depends-on", NOBODY], "no such task"),
    ("control-in-depends-on", ["dev_task", "--title", "t", "--depends-on", "ab\x1b"], "no such task"),
    ("control-in-env", ["plan", "--goal", "g", "--env", "dev\x071"], "environment 'dev\\x071'"),
]


@pytest.fixture
def cli_env(clean: Context, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The variables that point the CLI at the fixture's workspace, database and broker (also set here, for
    the commands this process runs through ``cli.main``)."""
    settings = clean.settings
    ours = {
        "SWITCHYARD_HOME": str(settings.home),
        "SWITCHYARD_DATABASE_URL": clean.database_url,
        "SWITCHYARD_BROKER_URL": settings.effective_broker_url,
    }
    for key in [k for k in os.environ if k.startswith("SWITCHYARD_")]:
        monkeypatch.delenv(key)
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **ours}


def cli_args(args: list[str]) -> list[str]:
    kind, *rest = args
    return ["submit", kind, *rest, *([] if any(a.startswith("--env") for a in rest) else ["--env", "dev1"])]


@pytest.mark.integration
@pytest.mark.parametrize(("args", "message"), [(a, m) for _, a, m in CLI_BAD], ids=[name for name, _, _ in CLI_BAD])
def test_cli_refuses_with_exit_2(
    cli_env: dict[str, str], clean: Context, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Through ``cli.main``, the function the installed script calls (in this process: starting the script
    takes seconds on a loaded machine; the two tests below run it for real)."""
    assert main(cli_args(args)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "\x1b" not in err  # an escape the user typed is shown escaped, never sent to the terminal
    nothing_written(clean)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.integration
def test_the_installed_script_refuses_an_option_like_branch_and_takes_a_good_one(
    cli_env: dict[str, str], clean: Context
) -> None:
    done = cli(cli_env, *cli_args(["pr_review", "--branch=--upload-pack=touch /tmp/pwned"]))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "starts with '-', so git would read it as an option" in done.stderr and "Traceback" not in done.stderr
    nothing_written(clean)
    done = cli(cli_env, *cli_args(["pr_review", "--branch", BRANCH, "--json"]))
    assert done.returncode == 0, done.stderr
    assert written(clean) == (1, 1)


@pytest.mark.integration
def test_postgresql_without_tables_is_a_503_not_a_500(postgres_url: str, tmp_path: Path) -> None:
    """A 503 means a service is not there or not ready (here: before `switchyard db upgrade`), never bad input."""
    settings = Settings(**NO_PROVIDER_KEYS, home=tmp_path / "home", database_url=postgres_url, broker_url="")
    with TestClient(create_app(build_context(settings))) as client:
        response = client.get("/api/tasks")
        assert response.status_code == 503, response.text
        assert "ProgrammingError" in response.json()["error"]
        assert client.get("/api/tasks/%00").status_code == 422  # checked before the database is asked
