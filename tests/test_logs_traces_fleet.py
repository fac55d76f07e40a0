"""Logs and traces of a real fleet in the staging profile: `celery worker` processes, the status API and the
simulator started by the launcher, Redis and PostgreSQL.

Keys are planted in every input path (the provider keys in the settings, which the simulator echoes back in a
401's error body; a task's title and description; the broker URL's password) and every log file, every row of
the database, every key of the broker and the API's answers are searched for them. The same run exports its
spans over OTLP/HTTP to a receiver in this test: the trace of a PR pipeline runs from the API's submit span to
the worker's Celery task span and its route, hold, call and settle spans.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from conftest import REDIS_PORT, free_port, postgres_database, require_service
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pipeline_kit import fleet_file
from sqlalchemy import MetaData, create_engine, select

from cli.envs import init_environments
from environments.sample import make_sample_repo
from store import tokens
from store.db import session_scope
from store.models import TERMINAL_STATUSES, Task
from switchyard.settings import Settings
from tasks.context import Context, build_context
from workers import launcher

pytestmark = pytest.mark.integration

ANTHROPIC_KEY = "sk-ant-api03-Q7anthropicPLANTED0123456789abcdef"
OPENAI_KEY = "sk-proj-Z3openaiPLANTED0123456789abcdef"
BROKER_PASSWORD = "W9brokerPLANTEDpassword"
TITLE_KEY = "sk-ant-api03-K5titlePLANTED0123456789"
BEARER = "J2bearerPLANTEDtoken0123456789"
URL_PASSWORD = "V4urlPLANTEDpassword"
ALERT = "X8alertPLANTEDhook"
PLANTED = (ANTHROPIC_KEY, OPENAI_KEY, BROKER_PASSWORD, TITLE_KEY, BEARER, URL_PASSWORD, ALERT)
CORES = ("Q7anthropicPLANTED", "Z3openaiPLANTED", "W9brokerPLANTED", "K5titlePLANTED", "J2bearerPLANTED",
         "V4urlPLANTED", "X8alertPLANTED")  # fmt: skip
BROKER_USER = "switchyard-planted"
BROKER_DB = 12
SERVICES = {"simulator", "api", "worker-high_level", "worker-dev_workers", "worker-pr_review", "worker-pr_impl",
            "worker-pr_integ"}  # fmt: skip
QUOTED_KEY = re.compile(r"invalid x-api-key: (sk-)?\*\*\*")  # the simulator's 401 body, its key masked
CELERY_FORMAT = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+: (INFO|WARNING|ERROR)")
TASK_FIELDS = ("task_id", "kind", "environment", "stage", "group", "provider", "attempt")


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: every span posted to /v1/traces, as (service, span) pairs."""

    spans: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource.scope_spans:
                    self.spans += [(service, span) for span in scope.spans]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            found.add(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def planted_broker() -> str:
    """A Redis user whose password is planted, and the broker URL that carries it."""
    require_service("Redis", "127.0.0.1", REDIS_PORT)
    admin = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    admin.acl_setuser(
        BROKER_USER, enabled=True, reset=True, passwords=[f"+{BROKER_PASSWORD}"], keys=["*"], channels=["*"],
        commands=["+@all"],
    )  # fmt: skip
    redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=BROKER_DB).flushdb()
    admin.close()
    return f"redis://{BROKER_USER}:{BROKER_PASSWORD}@127.0.0.1:{REDIS_PORT}/{BROKER_DB}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, str]) -> Iterator[Context]:
    tmp_path = tmp_path_factory.mktemp("logs")
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    with postgres_database() as database_url:
        settings = Settings(
            profile="staging",
            home=tmp_path / "home",
            broker_url=planted_broker(),
            database_url=database_url,
            simulate=True,
            simulator_port=sim_port,
            api_port=free_port(),
            flower_port=free_port(),
            fleet_file=fleet_file(tmp_path),
            anthropic_api_key=ANTHROPIC_KEY,  # type: ignore[arg-type]
            anthropic_base_url=sim_url,
            openai_api_key=OPENAI_KEY,  # type: ignore[arg-type]
            openai_base_url=f"{sim_url}/v1",
            ollama_host=None,
        )
        ctx = build_context(settings)
        sample = make_sample_repo(tmp_path / "sample", feature_branches=2)
        init_environments(ctx, str(sample), tmp_path / "workspace", ["dev1"])
        import os

        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver[1], "OTEL_BSP_SCHEDULE_DELAY": "200"}
        launcher.up(settings, ctx.fleet, simulate=True, services=SERVICES, on_event=lambda _: None, base_env=env)
        try:
            yield ctx
        finally:
            launcher.down(settings, on_event=lambda _: None)
            admin = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
            admin.acl_deluser(BROKER_USER)
            admin.close()


def settled(ctx: Context, first: str, timeout: float = 240.0) -> list[Task]:
    """Every task once ``first`` and its follow-ups are all terminal (no new task for a few polls)."""
    deadline, quiet, seen = time.monotonic() + timeout, 0, -1
    while time.monotonic() < deadline:
        with session_scope(ctx.database_url) as session:
            tasks = session.query(Task).all()
            session.expunge_all()
        done = all(t.status in TERMINAL_STATUSES for t in tasks) and any(t.id == first for t in tasks)
        quiet = quiet + 1 if done and len(tasks) == seen else 0
        seen = len(tasks)
        if quiet >= 8:
            return tasks
        time.sleep(0.5)
    raise AssertionError(f"tasks did not settle: {[(t.kind, t.status) for t in tasks]}")


@pytest.fixture(scope="module")
def pipeline(fleet: Context) -> dict[str, Any]:
    """A PR pipeline submitted over HTTP with secrets in its title and description, while Claude answers 401
    (its error body quotes the key it was sent)."""
    settings = fleet.settings
    sim = settings.effective_simulator_url
    httpx.post(f"{sim}/_sim/providers/claude", json={"error_rate": 1.0, "error_status": 401}).raise_for_status()
    api = f"http://{settings.host}:{settings.api_port}"
    body = {
        "kind": "pr_impl",
        "environment": "dev1",
        "title": f"greeting, key {TITLE_KEY}",
        "description": f"call it with Authorization: Bearer {BEARER} at https://deploy:{URL_PASSWORD}@example.com "
        f"and tell json://hooks.example/{ALERT} or slack://T000/B000/{ALERT}",
    }
    with session_scope(fleet.database_url) as session:  # staging: the API asks for a token
        auth = {"Authorization": "Bearer " + tokens.create_token(session, name="planted", scope="admin")}
    answer = httpx.post(f"{api}/api/tasks", json=body, headers=auth, timeout=60)
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["id"]
    tasks = settled(fleet, task_id)
    return {"id": task_id, "tasks": tasks, "api": api, "answers": [answer.text], "auth": auth}


def found_in(text: str) -> list[str]:
    return [core for core in CORES if core in text]


def test_no_planted_secret_in_logs_rows_broker_or_answers(fleet: Context, pipeline: dict[str, Any]) -> None:
    settings, api = fleet.settings, pipeline["api"]
    kinds = {t.kind: t for t in pipeline["tasks"]}
    assert "pr_review" in kinds, [(t.kind, t.status) for t in pipeline["tasks"]]  # the pipeline went on

    # the planted keys did travel: claude's 401 quoted the key, masked wherever it was written
    logs = {path.name: path.read_text() for path in sorted(settings.log_dir.glob("*.log"))}
    assert {"worker-pr_impl.log", "worker-pr_review.log", "api.log", "simulator.log"} <= set(logs)
    assert QUOTED_KEY.search(logs["worker-pr_review.log"])
    leaks = {name: found_in(text) for name, text in logs.items() if found_in(text)}
    assert leaks == {}

    engine = create_engine(settings.effective_database_url)
    meta = MetaData()
    meta.reflect(engine)
    rows: dict[str, str] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            rows[table.name] = "\n".join(repr(tuple(row)) for row in conn.execute(select(table)))
    engine.dispose()
    for masked in ("key sk-***", "Bearer ***", "deploy:***@", "json://***", "slack://***"):
        assert masked in rows["tasks"], masked
    assert QUOTED_KEY.search(rows["attempts"])
    assert {name: found_in(text) for name, text in rows.items() if found_in(text)} == {}

    broker = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=BROKER_DB)
    values = []
    for key in broker.scan_iter(count=1000):
        kind = broker.type(key).decode()
        read = {
            "string": lambda k: [broker.get(k)],
            "list": lambda k: broker.lrange(k, 0, -1),
            "hash": lambda k: [b for kv in broker.hgetall(k).items() for b in kv],
            "set": lambda k: list(broker.smembers(k)),
            "zset": lambda k: [m for m, _ in broker.zrange(k, 0, -1, withscores=True)],
            "stream": lambda k: [repr(broker.xrange(k))],
        }[kind]
        values += [key, *read(key)]
    broker.close()
    assert values, "the broker holds keys (queues, breakers, bindings)"
    text = "\n".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
    assert found_in(text) == []

    answers = list(pipeline["answers"])
    paths = [p for p in httpx.get(f"{api}/openapi.json").json()["paths"] if "{" not in p and p != "/"]
    for path in paths:
        answers.append(httpx.get(f"{api}{path}", headers=pipeline["auth"], timeout=30).text)
    for task in pipeline["tasks"]:
        answers.append(httpx.get(f"{api}/api/tasks/{task.id}", headers=pipeline["auth"], timeout=30).text)
    assert any("sk-***" in a for a in answers)
    assert [found_in(a) for a in answers if found_in(a)] == []


def test_worker_logs_are_json_lines_with_the_task_fields(fleet: Context, pipeline: dict[str, Any]) -> None:
    lines = (fleet.settings.log_dir / "worker-pr_impl.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]  # every logged line is JSON
    assert not [line for line in lines if CELERY_FORMAT.match(line)]  # none in Celery's own format
    assert len(records) >= 5
    mine = [r for r in records if r.get("task_id") == pipeline["id"]]
    assert mine, "the task's lines carry its id"
    done = [r for r in mine if r["logger"] == "celery.app.trace" and "succeeded" in r["event"]]
    assert done, [r["event"] for r in mine]
    assert all(field in done[0] for field in TASK_FIELDS), done[0]
    assert (done[0]["kind"], done[0]["environment"], done[0]["group"], done[0]["provider"]) == (
        "pr_impl", "dev1", "pr_impl", "codex",
    )  # fmt: skip
    assert all(r["kind"] == "pr_impl" for r in mine)


def test_the_trace_runs_from_submit_into_the_worker(
    fleet: Context, pipeline: dict[str, Any], receiver: tuple[Receiver, str]
) -> None:
    found = receiver[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with found.lock:
            names = {s.name for _, s in found.spans}
        if {"submit", "run/switchyard.pr_impl", "settle"} <= names:
            break
        time.sleep(0.5)
    with found.lock:
        spans = list(found.spans)
    submit = [(svc, s) for svc, s in spans if s.name == "submit"]
    assert submit, sorted({s.name for _, s in spans})
    service, root = submit[0]
    assert service == "switchyard-api"
    trace = [(svc, s) for svc, s in spans if s.trace_id == root.trace_id]
    by_id = {s.span_id: s for _, s in trace}
    names = {s.name: s for _, s in trace}
    publish = names["apply_async/switchyard.pr_impl"]
    run = names["run/switchyard.pr_impl"]
    assert publish.parent_span_id == root.span_id
    assert run.parent_span_id == publish.span_id  # the context crossed the broker in the message headers
    assert {svc for svc, s in trace if s is run} == {"switchyard-worker"}
    lines = (fleet.settings.log_dir / "worker-pr_impl.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(r.get("trace_id") == root.trace_id.hex() for r in records if r.get("task_id") == pipeline["id"])

    def under_run(span: Any) -> bool:
        while span.parent_span_id:
            if span.parent_span_id == run.span_id:
                return True
            span = by_id[span.parent_span_id]
        return False

    for name in ("route", "hold", "call", "settle"):
        assert any(s.name == name and under_run(s) for _, s in trace), name
    call = next(s for _, s in trace if s.name == "call" and under_run(s))
    attrs = {a.key: a.value for a in call.attributes}
    assert attrs["switchyard.provider"].string_value == "codex"
    assert attrs["switchyard.model"].string_value
    assert attrs["switchyard.output_tokens"].int_value > 0
    assert attrs["switchyard.cost_usd"].double_value > 0
