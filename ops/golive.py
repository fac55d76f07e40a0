"""``switchyard validate --report``: the go/no-go decision, from every staging-checklist item a machine can check.

Each item is measured live against the running fleet. :data:`ITEMS` is the one table of items: which are
critical (in which profiles) and why. The decision is GO only when every critical item passes and at least
:data:`NON_CRITICAL_PASS_RATE` of the others do (the checklist's section 13.1). Nothing here prints a secret:
details name settings and counts, never values, and the secret grep reports where a value was found, not it.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
from alembic.runtime.migration import MigrationContext
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import String, Text, func, select

from alerts.deliver import alert_urls
from ops import smoke as smoking
from providers.registry import available
from routing.breaker import Breakers
from routing.keys import provider_keys
from routing.permits import Permit
from routing.route import RouteRequest, candidates, choose_route
from store.costs import budget_status
from store.db import get_engine, session_scope
from store.migrate import head
from store.models import TERMINAL_STATUSES, Base, Task
from switchyard import logs, traces
from tasks.context import Context
from workers import health
from workers.restart import simulator_running

# The checklist's limits (staging validation checklist, section "Performance"): measured live, whatever profile.
LIMITS = {"routing_ms": 500.0, "health_ms": 100.0, "api_p95_ms": 1000.0, "api_p99_ms": 3000.0, "error_rate": 0.05}
NON_CRITICAL_PASS_RATE = 0.95
SAMPLES = 20  # requests per latency measurement
EVERY = frozenset({"development", "demo", "staging", "production"})
SHARED = frozenset({"staging", "production"})  # a shared host: security and logging items become critical
PLANTED = "sk-ant-golive-planted-0123456789abcdef"  # a key-shaped value no real key equals


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    critical_in: frozenset[str]
    why: str


class DrillQuiet(logging.Filter):
    """Drops the breaker's log lines about smoke's own breaker while the auto-disable drill runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return smoking.BREAKER_NAME not in record.getMessage()


# The one table: every item, whether it is critical (in which profiles), and why.
ITEMS: tuple[Item, ...] = (
    Item("config", "configuration valid", EVERY, "nothing starts on invalid settings or fleet file"),
    Item("migrations", "migrations current", EVERY, "workers write columns an old schema lacks"),
    Item("services", "services reachable", EVERY, "database, broker and state Redis carry every task"),
    Item("keys", "provider keys present", SHARED, "a ladder with no usable provider ends every task no_provider"),
    Item("smoke", "smoke passing", EVERY, "the checklist's first critical item: all smoke tests pass"),
    Item("routing_latency", "routing latency < 500 ms", frozenset(), "performance target, not a safety gate"),
    Item("health_latency", "health check < 100 ms", frozenset(), "performance target, not a safety gate"),
    Item("api_latency", "API p95 < 1 s, p99 < 3 s", frozenset(), "performance target, not a safety gate"),
    Item("json_logs", "JSON logs", SHARED, "shared hosts ship logs to a collector that parses them"),
    Item("masking", "secrets masked in logs", EVERY, "a planted key must never reach a log line"),
    Item("metrics", "metrics answer", frozenset(), "observability: useful, its absence is no risk"),
    Item("traces", "traces export", frozenset(), "observability: useful, its absence is no risk"),
    Item("faults", "fault injection recovers", frozenset(), "resilience drill; smoke covers the paths"),
    Item("auth", "API auth enforced (401 without a token)", SHARED, "anyone reaching the host could spend money"),
    Item("secret_logs", "no secret in log files", EVERY, "a leaked key is a security incident"),
    Item("secret_rows", "no secret in database rows", EVERY, "a leaked key is a security incident"),
    Item("error_rate", "task error rate < 5% (24 h)", EVERY, "the checklist's critical error-rate item"),
    Item("caps", "budget caps configured", EVERY, "the checklist's critical 'cost within budget' item"),
    Item("alerts", "alert lines and alert URLs configured", frozenset(), "without them spend is found late"),
    Item("auto_disable", "auto-disable tested", frozenset(), "a refused key must stop calls; drilled here"),
)


@dataclass
class Outcome:
    item: Item
    ok: bool
    detail: str
    seconds: float
    critical: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.item.key,
            "title": self.item.title,
            "critical": self.critical,
            "why": self.item.why,
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Report:
    profile: str
    outcomes: list[Outcome]
    at: str

    @property
    def critical_failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.critical and not o.ok]

    @property
    def non_critical_rate(self) -> float:
        rest = [o for o in self.outcomes if not o.critical]
        return sum(o.ok for o in rest) / len(rest) if rest else 1.0

    @property
    def go(self) -> bool:
        return not self.critical_failed and self.non_critical_rate >= NON_CRITICAL_PASS_RATE

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": "GO" if self.go else "NO-GO",
            "profile": self.profile,
            "at": self.at,
            "critical_failed": [o.item.key for o in self.critical_failed],
            "non_critical_pass_rate": round(self.non_critical_rate, 4),
            "required_non_critical_pass_rate": NON_CRITICAL_PASS_RATE,
            "items": [o.as_json() for o in self.outcomes],
        }

    def markdown(self) -> str:
        lines = [
            f"# Go/no-go: {'GO' if self.go else 'NO-GO'}",
            "",
            f"Profile `{self.profile}`, {self.at}. GO needs every critical item and >= "
            f"{NON_CRITICAL_PASS_RATE:.0%} of the others; the others pass at {self.non_critical_rate:.0%}.",
            "",
            "| item | critical | result | seconds | detail |",
            "|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            detail = o.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {o.item.title} | {'yes' if o.critical else 'no'} | {'PASS' if o.ok else 'FAIL'} "
                f"| {o.seconds:.2f} | {detail} |"
            )
        if self.critical_failed:
            lines += ["", "Critical items failing: " + ", ".join(o.item.title for o in self.critical_failed)]
        return "\n".join(lines) + "\n"


class Failed(Exception):
    """An item's check failed: the message is its detail."""


def build(ctx: Context, *, token: str | None = None, smoke_timeout: float = 110.0, real: bool = False) -> Report:
    """Every item of :data:`ITEMS` measured against the running fleet of ``ctx`` (``real``: smoke --real)."""
    with smoking.api_token(ctx, token) as sent:  # the API asks for a token: a read token for this report
        return Report(ctx.settings.profile, measure(Probes(ctx, sent, smoke_timeout, real=real), ctx), now())


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def measure(probes: Probes, ctx: Context) -> list[Outcome]:
    outcomes = []
    for item in ITEMS:
        began = time.monotonic()
        try:
            detail, ok = getattr(probes, item.key)(), True
        except Exception as exc:  # noqa: BLE001 - a failing item is a row of the report
            first = str(exc).splitlines()[0] if str(exc) else ""
            detail, ok = (first if isinstance(exc, Failed) else f"{type(exc).__name__}: {first}"), False
        critical = ctx.settings.profile in item.critical_in
        outcomes.append(Outcome(item, ok, logs.mask(detail)[:400], time.monotonic() - began, critical))
    return outcomes


def secret_values(ctx: Context) -> list[tuple[str, str]]:
    """(setting name, value) of every secret this profile knows; values of 6+ characters only."""
    s = ctx.settings
    pairs: list[tuple[str, str | None]] = [
        ("ANTHROPIC_API_KEY", s.anthropic_api_key.get_secret_value() if s.anthropic_api_key else None),
        ("OPENAI_API_KEY", s.openai_api_key.get_secret_value() if s.openai_api_key else None),
        ("SWITCHYARD_ALERT_URLS", s.alert_urls.get_secret_value() if s.alert_urls else None),
        ("flower password", s.flower_credentials[1] if s.flower_credentials else None),
        ("broker password", s.broker_password if s.embedded_broker else None),
    ]

    pairs += [("alert URL", url) for url in alert_urls(s, ctx.fleet)]
    return [(name, value) for name, value in pairs if value and len(value) >= 6]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Probes:
    """One method per item key; each returns a detail or raises (:class:`Failed` with the reason)."""

    def __init__(self, ctx: Context, token: str | None, smoke_timeout: float, *, real: bool = False) -> None:
        self.ctx, self.token, self.smoke_timeout, self.real = ctx, token, smoke_timeout, real
        self.smoke_run: smoking.SmokeRun | None = None

    # --- configuration and services -----------------------------------------------------------------------

    def config(self) -> str:
        fleet = self.ctx.fleet
        return f"settings and {fleet.source} valid for profile {self.ctx.settings.profile!r}"

    def migrations(self) -> str:

        with get_engine(self.ctx.database_url).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current != head():
            raise Failed(f"database at {current}, code at {head()}: run `switchyard db upgrade`")
        return f"at head {current}"

    def services(self) -> str:

        s = self.ctx.settings
        problems = [
            p
            for p in (
                health.database_ok(self.ctx.database_url),
                health.broker_ok(s.effective_broker_url),
                health.broker_ok(s.effective_state_url),
            )
            if p
        ]
        if problems:
            raise Failed("; ".join(problems))
        return "database, broker and state Redis answer"

    def keys(self) -> str:

        used = sorted({p for group in self.ctx.fleet.groups for p in group.ladder})
        missing = {p: why for p in used if (why := available(p, self.ctx.settings))}
        if missing and not simulator_running(self.ctx.settings):
            raise Failed("; ".join(f"{p}: {why}" for p, why in missing.items()))
        if missing:
            return f"simulated fleet: no key needed ({', '.join(missing)} have none)"
        return f"usable: {', '.join(used)}"

    def smoke(self) -> str:
        self.smoke_run = smoking.run(self.ctx, real=self.real, timeout=self.smoke_timeout, token=self.token)
        failed = [c.name for c in self.smoke_run.checks if c.ok is False] + self.smoke_run.left_behind
        if failed:
            raise Failed(f"failed: {', '.join(failed)}")
        return f"{sum(c.ok is True for c in self.smoke_run.checks)} checks passed"

    # --- latency ------------------------------------------------------------------------------------------

    def routing_latency(self) -> str:

        router = self.ctx.router()
        timings = []
        stage = self.ctx.fleet.environments.stages[0]
        environment = self.ctx.fleet.environments.names[0]
        for group in self.ctx.fleet.groups:
            for kind in group.kinds:
                request = RouteRequest(kind, group.name, environment, stage, prompt_chars=4000)
                began = time.perf_counter()
                router.forget_state()
                names = [name for name, _ in candidates(self.ctx.fleet, group, kind)]
                choose_route(
                    request,
                    self.ctx.fleet,
                    router.provider_states(names),
                    router.budget_states(request),
                    router.today(),
                )
                timings.append((time.perf_counter() - began) * 1000)
        worst = max(timings)
        if worst >= LIMITS["routing_ms"]:
            raise Failed(f"slowest decision {worst:.0f} ms (limit {LIMITS['routing_ms']:.0f} ms)")
        return f"{len(timings)} decisions, slowest {worst:.1f} ms, median {statistics.median(timings):.1f} ms"

    def _timed_gets(self, path: str) -> list[float]:
        headers = smoking.auth_headers(self.token)
        url = smoking.api_url(self.ctx) + path
        timings = []
        with httpx.Client(timeout=10.0, headers=headers) as client:
            client.get(url)  # the connection made once, as a monitor keeps it
            for _ in range(SAMPLES):
                began = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise Failed(f"GET {path} answered HTTP {response.status_code}")
        return timings

    def health_latency(self) -> str:
        timings = self._timed_gets("/api/multi-env/health")
        median = statistics.median(timings)
        if median >= LIMITS["health_ms"]:
            raise Failed(f"median {median:.0f} ms over {SAMPLES} requests (limit {LIMITS['health_ms']:.0f} ms)")
        return f"median {median:.1f} ms over {SAMPLES} requests"

    def api_latency(self) -> str:
        timings = self._timed_gets("/api/tasks?limit=20")
        p95, p99 = percentile(timings, 0.95), percentile(timings, 0.99)
        if p95 >= LIMITS["api_p95_ms"] or p99 >= LIMITS["api_p99_ms"]:
            raise Failed(f"p95 {p95:.0f} ms, p99 {p99:.0f} ms (limits 1000 / 3000 ms)")
        return f"p95 {p95:.1f} ms, p99 {p99:.1f} ms over {SAMPLES} requests"

    # --- logs, metrics, traces ----------------------------------------------------------------------------

    def _log_files(self) -> list[Path]:
        return sorted(self.ctx.settings.log_dir.glob("*.log"))

    def json_logs(self) -> str:
        """The fleet's own log files (workers, API): their recent lines are JSON objects."""
        if self.ctx.settings.profile == "development":
            raise Failed("development logs a console format; staging and production log JSON lines")
        checked, bad = 0, []
        for path in self._log_files():
            if path.stem in ("broker", "simulator"):  # valkey's own format; the simulator is a test double
                continue
            for line in path.read_text(errors="replace").splitlines()[-20:]:
                if not line.startswith("{"):
                    continue  # a child's raw stderr (a library's print) is not a log record
                checked += 1
                try:
                    json.loads(line)
                except ValueError:
                    bad.append(path.name)
        if bad or not checked:
            raise Failed(f"not JSON: {sorted(set(bad))}" if bad else "no log line found under the log directory")
        return f"{checked} recent lines of {len(self._log_files())} log files parse as JSON"

    def masking(self) -> str:
        """A line with a planted key through the real logging pipeline (formatter and masking filter), to a file."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probe.log"
            handler = logging.FileHandler(path)
            handler.setFormatter(logs.formatter(self.ctx.settings.profile))
            handler.addFilter(logs.MaskSecrets())
            logger = logging.getLogger("switchyard.golive.probe")
            logger.propagate, logger.level = False, logging.INFO
            logger.addHandler(handler)
            try:
                logger.info("calling with x-api-key=%s and Authorization: Bearer %s", PLANTED, PLANTED[7:])
            finally:
                logger.removeHandler(handler)
                handler.close()
            written = path.read_text()
        if PLANTED in written or PLANTED[7:] in written:
            raise Failed("the planted key reached the log file unmasked")
        if logs.MASK not in written:
            raise Failed("the line was written without the mask")
        return "planted key masked in the written line (as x-api-key and in the Authorization header)"

    def metrics(self) -> str:
        response = httpx.get(
            smoking.api_url(self.ctx) + "/metrics", headers=smoking.auth_headers(self.token), timeout=10.0
        )
        families = smoking.metric_families(response.text)
        if response.status_code != 200 or not families:
            raise Failed(f"/metrics answered HTTP {response.status_code} with {len(families)} switchyard_ metrics")
        return f"{len(families)} switchyard_ metrics: {', '.join(families)}"

    def traces(self) -> str:
        """A span through switchyard.traces into the SDK's in-memory exporter; over OTLP too when an endpoint is
        set (the export's result is checked)."""

        memory = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with traces.span("route", kind="golive"):
            pass
        names = [span.name for span in memory.get_finished_spans()]
        if "route" not in names:
            raise Failed("no span reached the exporter")
        if not traces.enabled():
            return "spans recorded (in-memory exporter); set OTEL_EXPORTER_OTLP_ENDPOINT to export them"

        result = OTLPSpanExporter().export(memory.get_finished_spans())
        if result is not SpanExportResult.SUCCESS:
            raise Failed("the OTLP endpoint refused the export")
        return "spans recorded and exported over OTLP"

    # --- resilience ---------------------------------------------------------------------------------------

    def faults(self) -> str:
        run = self.smoke_run
        drill = [c for c in (run.checks if run else []) if c.name.startswith("breaker")]
        if not drill:
            raise Failed("smoke did not run the breaker drill")
        if drill[0].ok is None:
            raise Failed(f"not run: {drill[0].detail}")
        if not drill[0].ok:
            raise Failed(drill[0].detail)
        return drill[0].detail

    def auto_disable(self) -> str:
        """smoke's own breaker is disabled (as a refused key does), refuses calls, and comes back when enabled."""

        client = redis.Redis.from_url(self.ctx.settings.effective_state_url, socket_timeout=5)
        keys = provider_keys(smoking.BREAKER_NAME)
        breakers = Breakers(client, self.ctx.fleet.breaker, {})
        # the drill's own "ALERT: provider smoke-breaker disabled" is no alert: kept off the report's stderr
        quiet, breaker_log = DrillQuiet(), logging.getLogger(Breakers.__module__)
        breaker_log.addFilter(quiet)
        try:
            breakers.disable(smoking.BREAKER_NAME, "golive: a refused key")
            if isinstance(breakers.acquire(smoking.BREAKER_NAME), Permit):
                raise Failed("a disabled breaker still gave a permit")
            breakers.enable(smoking.BREAKER_NAME, "golive: drill over")
            permit = breakers.acquire(smoking.BREAKER_NAME)
            if not isinstance(permit, Permit):
                raise Failed(f"no permit after enabling: {permit}")
            breakers.release(permit)
            return "disabled breaker refused calls; enabled again"
        finally:
            breaker_log.removeFilter(quiet)
            client.delete(keys.breaker, keys.inflight, keys.calls, keys.probes, keys.models)
            client.close()

    # --- security -----------------------------------------------------------------------------------------

    def auth(self) -> str:
        response = httpx.get(smoking.api_url(self.ctx) + "/api/tasks?limit=1", timeout=10.0)
        if response.status_code != 401:
            raise Failed(f"GET /api/tasks without a token answered HTTP {response.status_code}, not 401")
        return "GET /api/tasks without a token: 401"

    def secret_logs(self) -> str:
        found = []
        secrets = secret_values(self.ctx)
        for path in self._log_files():
            content = path.read_text(errors="replace")
            found += [f"{name} in {path.name}" for name, value in secrets if value in content]
            if PLANTED in content:
                found.append(f"a key-shaped planted value in {path.name}")
            found += [f"an API key in {path.name}" for _ in _key_shaped(content)][:1]
        if found:
            raise Failed("found: " + ", ".join(found))
        return f"{len(secrets)} secret values and key shapes absent from {len(self._log_files())} log files"

    def secret_rows(self) -> str:
        secrets = secret_values(self.ctx)
        found, scanned = [], 0
        with session_scope(self.ctx.database_url) as session:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text)]
                if not columns:
                    continue
                for row in session.execute(select(*columns)):
                    scanned += 1
                    blob = " ".join(str(v) for v in row if v)
                    found += [f"{name} in {table.name}" for name, value in secrets if value in blob]
                    if any(True for _ in _key_shaped(blob)):
                        found.append(f"an API key in {table.name}")
        if found:
            raise Failed("found: " + ", ".join(sorted(set(found))))
        return f"{scanned} rows scanned, no secret value or key shape"

    # --- money --------------------------------------------------------------------------------------------

    def error_rate(self) -> str:
        since = datetime.now(UTC) - timedelta(hours=24)

        with session_scope(self.ctx.database_url) as session:
            counts = dict(
                session.execute(
                    select(Task.status, func.count())
                    .where(Task.status.in_(TERMINAL_STATUSES), Task.created_at >= since)
                    .group_by(Task.status)
                ).all()
            )
        total = sum(counts.values())
        failed = sum(n for status, n in counts.items() if status not in {"succeeded", "cancelled"})
        rate = failed / total if total else 0.0
        if rate >= LIMITS["error_rate"]:
            raise Failed(f"{failed} of {total} tasks ended badly in 24 h ({rate:.1%}; limit 5%)")
        return f"{failed} of {total} tasks ended badly in 24 h ({rate:.1%})"

    def caps(self) -> str:

        with session_scope(self.ctx.database_url) as session:
            rows = budget_status(session, self.ctx.fleet)
        blocking = [r for r in rows if r["cap_usd"] is not None]
        if not blocking:
            raise Failed("no budget cap: add [[budgets]] to the fleet file or run `switchyard budget set`")
        return f"{len(blocking)} budgets capped"

    def alerts(self) -> str:

        with session_scope(self.ctx.database_url) as session:
            rows = budget_status(session, self.ctx.fleet)
        lines = [r for r in rows if r["alert_usd"] is not None]
        urls = alert_urls(self.ctx.settings, self.ctx.fleet)
        if not lines or not urls:
            missing = ([] if lines else ["no budget has an alert line"]) + (
                [] if urls else ["no alert URL (SWITCHYARD_ALERT_URLS or [alerts] urls)"]
            )
            raise Failed("; ".join(missing))
        return f"{len(lines)} alert lines, {len(urls)} alert URLs"


def _key_shaped(content: str) -> Iterable[str]:
    """API keys that look like real ones (Anthropic's and OpenAI's shapes), the masked form excluded."""

    return (m.group(0) for m in re.finditer(r"(?<![A-Za-z0-9_-])sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}", content))
