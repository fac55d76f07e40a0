"""Schemathesis over the status API's own ``/openapi.json``: thousands of generated requests, no 5xx.

The app runs in this process (ASGI) on a real database (SQLite, then PostgreSQL), a real Redis broker and a
real workspace (the sample repository as ``dev1``), so a request that passes validation goes all the way: git is asked
whether the branch exists, the row is written and the message sent. Each operation is fuzzed with data that
fits its schema (positive) and data that does not (negative); some generated submissions are pointed at
``dev1`` and an existing branch or task, so the checks behind the schema are reached too. Every response
must be below 500 and match what the schema documents: its status code, content type and body.

Checks: no 5xx, and the status code, content type and body the schema documents. Not ``negative_data_rejection``:
pydantic's lax coercions accept some schema-violating input on purpose (a Unix time for ``since``, "1" for 1).

The numbers per operation and mode are in EXAMPLES (about 2,400 cases on each of SQLite and PostgreSQL; SHARE
scales them per database); the run prints how many cases each one ran (``pytest -s``). Measured on the shared
2-core machine at a load average of 13-18: 2,374 cases on SQLite, 266 s of fuzzing, 337 s in all; on PostgreSQL
1,198 cases took 30 s at a load of 12; the time scales with the load, and EXAMPLES is the knob.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import NO_PROVIDER_KEYS, flushed_redis, postgres_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.envs import init_environments
from environments.sample import make_sample_repo
from simulator.server import BackgroundSimulator
from store import tokens
from store.db import dispose_all, session_scope
from switchyard.settings import Settings
from tasks.context import build_context
from tasks.send import prepare_database
from tasks.submit import submit
from web.app import create_app

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402 - after the importorskip that names what is missing
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

BRANCH = "feature/sample-1"
# Cases per operation: the ones with input get thousands between them; the rest have one possible request
EXAMPLES = {
    ("POST", "/api/tasks"): {GenerationMode.POSITIVE: 800, GenerationMode.NEGATIVE: 400},
    ("GET", "/api/tasks"): {GenerationMode.POSITIVE: 300, GenerationMode.NEGATIVE: 150},
    ("GET", "/api/tasks/{task_id}"): {GenerationMode.POSITIVE: 250, GenerationMode.NEGATIVE: 125},
    ("GET", "/api/costs"): {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 125},
}
SHARE = {"sqlite": 1.0, "postgresql": 1.0}  # of EXAMPLES, per database (the knob if one dialect grows slow)
WITHOUT_INPUT = {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 0}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
RAN: Counter[tuple[str, str, str]] = Counter()
ADMIN_HEADERS: dict[str, str] = {}  # the admin token of the database being fuzzed


@pytest.fixture(scope="module", params=list(SHARE))
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, server: BackgroundSimulator
) -> Iterator[tuple[Any, str, str]]:
    """The loaded schema of an app on dev1 with auth on, the id of a pr_impl task that exists, and the database's
    name. Every request carries an admin token (ADMIN_HEADERS), so the admin routes are fuzzed too (the simulator
    ones against the simulator over HTTP); tests/test_auth.py checks the 401s and 403s."""
    root = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{root / 'db.sqlite'}"
        else:
            database = stack.enter_context(postgres_database())
        settings_ = Settings(
            **NO_PROVIDER_KEYS,
            home=root / "home",
            database_url=database,
            broker_url=flushed_redis(12),
            api_auth="on",
            simulator_url=server.url,
        )
        ctx = build_context(settings_)
        prepare_database(database)
        with session_scope(database) as session:
            ADMIN_HEADERS["Authorization"] = "Bearer " + tokens.create_token(session, name="fuzz", scope="admin")
        sample = str(make_sample_repo(root / "sample", feature_branches=1))
        init_environments(ctx, sample, root / "workspace", ["dev1"])
        impl = submit({"kind": "pr_impl", "environment": "dev1", "title": "seed"}, context=ctx)
        submit({"kind": "pr_review", "environment": "dev1", "branch": BRANCH, "review_of": impl}, context=ctx)
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(ctx)), impl, request.param
        flushed_redis(12)
        dispose_all()


def operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def aimed(case: Any, seed_task: str, env: bool, branch: bool, known_id: bool) -> Any:
    """Point some generated requests at what exists, so the checks behind the schema run too."""
    if isinstance(case.body, dict) and case.operation.method.upper() == "POST":
        if env:
            case.body["environment"] = "dev1"
        if branch and "branch" in case.body:
            case.body["branch"] = BRANCH
        if known_id and "review_of" in case.body:
            case.body["review_of"] = seed_task
    if known_id and case.path_parameters and "task_id" in case.path_parameters:
        case.path_parameters["task_id"] = seed_task
    case.headers = {**(case.headers or {}), **ADMIN_HEADERS}
    return case


def fuzz(operation: Any, seed_task: str, mode: GenerationMode, count: int, database: str) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    flags = st.booleans()

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), env=flags, branch=flags, known_id=flags)
    def run(case: Any, env: bool, branch: bool, known_id: bool) -> None:
        RAN[(database, label, mode.value)] += 1
        aimed(case, seed_task, env, branch, known_id).call_and_validate(checks=CHECKS)

    run()


@pytest.mark.integration
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(api: tuple[Any, str, str], mode: GenerationMode) -> None:
    schema, seed_task, database = api
    share = SHARE[database]
    started = time.monotonic()
    fuzzed = 0
    for operation in operations(schema):
        key = (operation.method.upper(), operation.path)
        count = EXAMPLES.get(key, WITHOUT_INPUT)[mode]
        if key in EXAMPLES:
            count = int(count * share)
        if count:
            fuzz(operation, seed_task, mode, count, database)
            fuzzed += 1
    ran = {label: n for (db, label, m), n in RAN.items() if m == mode.value and db == database}
    total = sum(ran.values())
    lines = [f"  {label}: {n}" for label, n in sorted(ran.items())]
    print(
        f"\nschemathesis {database} {mode.value}: {total} cases in {time.monotonic() - started:.0f}s\n"
        + "\n".join(lines)
    )
    # every operation with input ran at least half its budget (hypothesis stops early only when it runs out
    # of distinct cases, which these schemas do not)
    for (method, path), budget in EXAMPLES.items():
        assert ran.get(f"{method} {path}", 0) >= int(budget[mode] * share) // 2, (method, path, ran)
    assert fuzzed >= len(EXAMPLES)
