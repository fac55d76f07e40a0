"""Logs and traces in one process: the masking of every kind of secret, each profile's line format with the task
fields, and the span tree of a PR pipeline's first task recorded by the SDK's in-memory exporter (submitted
through the status API, run by a Celery worker consuming the real broker in this process)."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipeline_kit import fleet_file

from switchyard import logs, traces
from tasks.context import Context

SECRETS = [
    ("key sk-ant-api03-abcdefghijklmnop0123", "key sk-***"),
    ("openai sk-proj-AbCdEf0123456789xyz done", "openai sk-*** done"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: Bearer ***"),
    ("broker redis://user:hunter2secret@10.0.0.1:6379/0", "broker redis://user:***@10.0.0.1:6379/0"),
    ("db postgresql://app:p%40ss%21word@db/x", "db postgresql://app:***@db/x"),
    ("alert json://hooks.example.com/notify?x=1", "alert json://***"),
    ("alert slack://TOKENA/TOKENB/TOKENC/#ops", "alert slack://***"),
    ("alert mailtos://user:pw@mail.example.com", "alert mailtos://***"),
    ("hook https://hooks.slack.com/services/T0/B0/XYZ", "hook https://***"),
    ('{"x-api-key": "abcdef123456"}', '{"x-api-key": "***"}'),
    ("GET /v1?api_key=abcdef123456&x=1", "GET /v1?api_key=***&x=1"),
]
KEPT = [
    "task-0123abcd-4567 ran on codex",  # a word that merely contains "sk-"
    "input_tokens=1200 output_tokens=300 cost 0.0042",
    "GET http://127.0.0.1:8700/api/tasks?limit=10 200",
    "redis://127.0.0.1:6399/0 (no password)",
]


@pytest.mark.parametrize(("text", "masked"), SECRETS)
def test_mask_hides_each_kind_of_secret(text: str, masked: str) -> None:
    assert logs.mask(text) == masked


@pytest.mark.parametrize("text", KEPT)
def test_mask_keeps_ordinary_text(text: str) -> None:
    assert logs.mask(text) == text


def test_remembered_values_are_masked_whatever_they_look_like() -> None:
    logs.remember_secrets(["gateway-7f3a9c21e0", None, "abc"])  # too short to remember safely: "abc"
    assert logs.mask("token gateway-7f3a9c21e0 used, abc kept") == "token *** used, abc kept"
    assert logs.mask_data({"a": ["x gateway-7f3a9c21e0"], "n": 3}) == {"a": ["x ***"], "n": 3}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.clear()  # an in-process task run earlier in this thread (another test) left its fields bound
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.clear()
    structlog.reset_defaults()


@pytest.mark.parametrize("profile", ["staging", "production"])
@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_task_fields_and_mask_secrets(profile: str) -> None:
    out = io.StringIO()
    logs.configure(profile, stream=out)
    with logs.bound(task_id="t1", kind="pr_impl", environment="dev1", stage="dev", group="pr_impl"):
        logs.bind(provider="codex", attempt=2)
        logging.getLogger("celery.app.trace").info("Task %s succeeded with %s", "t1", "sk-ant-api03-zzzzzzzzzzzz")
        try:
            raise RuntimeError("upstream said: invalid x-api-key sk-proj-yyyyyyyyyyyy")
        except RuntimeError:
            logging.getLogger("tasks.worker").exception("task t1 crashed")
        structlog.get_logger("routing").warning("hold", url="redis://u:pw123456@h/0")
    logging.getLogger("kombu").info("after the task")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 4
    for line in lines[:3]:
        assert {k: line[k] for k in logs.TASK_FIELDS} == {
            "task_id": "t1", "kind": "pr_impl", "environment": "dev1", "stage": "dev", "group": "pr_impl",
            "provider": "codex", "attempt": 2,
        }  # fmt: skip
        assert {"level", "logger", "timestamp"} <= set(line)
    assert lines[0]["event"] == "Task t1 succeeded with sk-***"
    assert "invalid x-api-key sk-***" in lines[1]["exception"] and "yyyy" not in out.getvalue()
    assert lines[2]["url"] == "redis://u:***@h/0"
    assert "task_id" not in lines[3]  # the block ended: its fields are gone


@pytest.mark.usefixtures("restore_logging")
def test_development_prints_a_readable_console_line() -> None:
    out = io.StringIO()
    logs.configure("development", stream=out)
    with logs.bound(task_id="t2", kind="dev_task"):
        logging.getLogger("tasks.attempt").warning("deferred: Bearer abcdefgh1234")
    (line,) = out.getvalue().splitlines()
    assert not line.startswith("{")
    assert "deferred: Bearer ***" in line and "task_id=t2" in line and "kind=dev_task" in line
    assert "[warning" in line


def test_spans_cost_nothing_and_export_nothing_without_an_endpoint() -> None:
    assert not traces.enabled({})
    assert traces.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert traces.configure("switchyard-test", {}) is False


# --- the span tree, in this process ---------------------------------------------------------------------------

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def tracing() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    return EXPORTER


@pytest.fixture
def process_context(
    tmp_path: Path, server: object, redis_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Context]:
    """This process's context (the one a worker reads from the environment), on Redis, SQLite, the simulator."""
    from cli.envs import init_environments
    from environments.sample import make_sample_repo
    from tasks import telemetry
    from tasks.context import get_context

    env = {
        "SWITCHYARD_HOME": str(tmp_path / "home"),
        "SWITCHYARD_BROKER_URL": redis_url,
        "SWITCHYARD_DATABASE_URL": sqlite_url,
        "SWITCHYARD_SIMULATE": "true",
        "SWITCHYARD_SIMULATOR_URL": server.url,  # type: ignore[attr-defined]
        "SWITCHYARD_FLEET_FILE": str(fleet_file(tmp_path)),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(telemetry, "configure_logging", lambda *_: None)  # pytest keeps its log capture
    get_context.cache_clear()
    ctx = get_context()
    init_environments(ctx, str(make_sample_repo(tmp_path / "sample", feature_branches=1)), tmp_path / "ws", ["dev1"])
    yield ctx
    get_context.cache_clear()


def run_one(ctx: Context, task_id: str, kind: str) -> None:
    """Consume ``kind``'s queue with a Celery worker in this process until ``task_id`` is terminal."""
    from celery.contrib.testing.worker import start_worker

    import celeryconfig
    from store.db import session_scope
    from store.models import TERMINAL_STATUSES, Task
    from tasks.app import app

    # the process-wide app builds its configuration once: an earlier test in this process may have built it
    # from other settings, so this worker takes this test's broker explicitly
    app.conf.update(celeryconfig.build(ctx.settings, ctx.fleet))
    queue = ctx.fleet.group_for_kind(kind).queue
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], loglevel="WARNING"):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with session_scope(ctx.database_url) as session:
                task = session.get(Task, task_id)
                if task is not None and task.status in TERMINAL_STATUSES:
                    assert task.status == "succeeded", task.reason
                    return
            time.sleep(0.2)
    raise AssertionError(f"the {kind} task did not finish")


@pytest.mark.usefixtures("restore_logging")
def test_a_line_logged_inside_a_span_names_its_trace(tracing: InMemorySpanExporter) -> None:
    out = io.StringIO()
    logs.configure("production", stream=out)
    with traces.span("route") as span:
        logging.getLogger("routing.router").info("chose codex")
    logging.getLogger("routing.router").info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside


@pytest.mark.integration
def test_span_tree_of_a_pr_pipeline_from_submit_to_settle(
    tracing: InMemorySpanExporter, process_context: Context
) -> None:
    from web.app import create_app

    ctx = process_context
    tracing.clear()
    body = {"kind": "pr_impl", "environment": "dev1", "title": "greeting"}
    answer = TestClient(create_app(ctx)).post("/api/tasks", json=body)
    assert answer.status_code == 202, answer.text
    run_one(ctx, answer.json()["id"], "pr_impl")

    spans = tracing.get_finished_spans()
    (submit,) = [s for s in spans if s.name == "submit"]
    tree = [s for s in spans if s.context.trace_id == submit.context.trace_id]
    parent = {s.context.span_id: s.parent.span_id if s.parent else None for s in tree}
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in tree:
        by_name.setdefault(s.name, []).append(s)

    def path(span: ReadableSpan) -> list[str]:
        names, at = [], parent[span.context.span_id]
        while at is not None:
            names.append(next(s.name for s in tree if s.context.span_id == at))
            at = parent[at]
        return names[::-1]

    run = by_name["run/switchyard.pr_impl"][0]
    # FastAPI's own request span (when the installed FastAPI traces itself) above the submit, then Celery's
    assert path(run)[-2:] == ["submit", "apply_async/switchyard.pr_impl"]
    assert path(run)[0] in {"POST /api/tasks", "submit"}
    assert path(by_name["route"][0]) == [*path(run), run.name]
    assert path(by_name["hold"][0]) == [*path(run), run.name, "route"]
    assert path(by_name["call"][0]) == [*path(run), run.name]
    assert path(by_name["settle"][0]) == [*path(run), run.name]
    call = by_name["call"][0].attributes or {}
    assert call["switchyard.provider"] == "codex" and call["switchyard.model"]
    assert int(call["switchyard.output_tokens"]) > 0 and float(call["switchyard.cost_usd"]) > 0  # type: ignore[arg-type]
    assert by_name["route"][0].attributes["switchyard.provider"] == "codex"  # type: ignore[index]
    # the pipeline goes on in the same trace: the review is published from inside the run
    assert path(by_name["apply_async/switchyard.pr_review"][0]) == [*path(run), run.name]
