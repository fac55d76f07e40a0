"""``switchyard smoke``: a running fleet checked end to end in under two minutes, leaving nothing behind.

Checks, each timed: every group's workers answer a Celery ping; the status API, its health, ``/metrics`` and
Flower answer; one task of each kind runs to ``succeeded`` in a scratch environment (``smoke-scratch``, a sample
repository of its own under the data directory); a budget hold is taken and released on one of those tasks;
a breaker opens against the simulator's failing calls and closes again once they succeed (a breaker of smoke's
own, so the fleet's breakers are never touched).

Against a simulated fleet every call goes to the simulator. ``--real`` is for a fleet on real providers: smoke
caps its scratch environment with a budget of its own (``REAL_CAP_USD`` a day) for the run. Cleanup, always:
the scratch tasks (with their attempts, spend rows and results; with ``--real`` they stay, the record of money
really spent), the scratch environment's rows and directory, that budget, smoke's breaker keys and any simulator
fault it left. The budget counters of the current windows keep what the scratch tasks were charged.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import delete, select

from environments.sample import make_sample_repo
from environments.workspace import ensure_workspace
from environments.workspace import record as record_environment
from routing.breaker import Breakers
from routing.keys import provider_keys
from routing.ledger import Ledger
from routing.permits import Permit
from store.db import session_scope
from store.models import TERMINAL_STATUSES, BudgetOverride, Environment, Task
from store.tokens import create_token, revoke_token
from switchyard.errors import NotYetSent, ServiceUnavailable
from switchyard.fleet_models import SCRATCH_ENVIRONMENT, BreakerPolicy
from tasks.context import Context
from tasks.send import prepare_database
from tasks.submit import submit
from workers import health
from workers.launcher import fleet_status
from workers.restart import simulator_running

KINDS = ("plan", "dev_task", "pr_impl", "pr_review", "pr_integ")
REAL_CAP_USD = 0.50  # --real: what the scratch environment may spend in a day, during the run
SCRATCH_PORT = 65000  # the scratch environment's recorded port (nothing listens on it)
BREAKER_NAME = "smoke-breaker"  # smoke's own breaker: its keys are apart from every provider's
HTTP_TIMEOUT_S = 10.0


@dataclass
class Check:
    """One line of the smoke table: passed (True), failed (False) or skipped (None), with how long it took."""

    name: str
    ok: bool | None
    seconds: float
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2)}


@dataclass
class SmokeRun:
    checks: list[Check] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks) and not self.left_behind

    def timed(self, name: str, body: Callable[[], str]) -> Check:
        """Run ``body`` (it returns a detail, or raises to fail) and record it."""
        began = time.monotonic()
        try:
            detail, ok = body(), True
        except Exception as exc:  # noqa: BLE001 - a failing check is a row of the table, not a crash
            detail, ok = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300], False
        check = Check(name, ok, time.monotonic() - began, detail)
        self.checks.append(check)
        return check

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.as_json() for c in self.checks], "left_behind": self.left_behind}


class FleetNotRunning(ServiceUnavailable):
    """Nothing of the fleet answers: smoke has nothing to check (exit 3)."""


@contextmanager
def api_token(ctx: Context, given: str | None) -> Iterator[str | None]:
    """The token the HTTP checks send: the one given; else, when the API asks for one, a read token made for this
    run (``smoke-<random>``) and revoked when it ends, so a smoke needs no token handed to it and leaves none."""
    if given or not ctx.settings.api_auth_on:
        yield given
        return
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    with session_scope(ctx.database_url) as session:
        plain = create_token(session, name=name, scope="read")
    try:
        yield plain
    finally:
        with session_scope(ctx.database_url) as session:
            revoke_token(session, name=name)


def auth_headers(token: str | None) -> dict[str, str]:
    """The status API's headers: a bearer token when one is given (``--token`` or SWITCHYARD_API_TOKEN)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def api_url(ctx: Context) -> str:
    host = ctx.settings.host
    host = "127.0.0.1" if host in {"0.0.0.0", "", "::"} else (f"[{host}]" if ":" in host else host)  # noqa: S104
    return f"http://{host}:{ctx.settings.api_port}"


def flower_url(ctx: Context) -> str:
    return api_url(ctx).rsplit(":", 1)[0] + f":{ctx.settings.flower_port}"


def require_fleet(ctx: Context) -> None:
    """Raise :class:`FleetNotRunning` when no process of this profile's fleet is alive or the broker is away."""
    alive = [s.name for s in fleet_status(ctx.settings) if s.alive]
    problem = health.broker_ok(ctx.settings.effective_broker_url)
    if not alive or problem is not None:
        raise FleetNotRunning(
            f"the fleet of profile {ctx.settings.profile!r} is not running"
            + (f" ({problem})" if problem else "")
            + "; start it with: switchyard up --detach"
        )


def run(ctx: Context, *, real: bool = False, timeout: float = 110.0, token: str | None = None) -> SmokeRun:
    """Every check against the running fleet of ``ctx``; ``timeout`` bounds the wait for the scratch tasks."""
    require_fleet(ctx)
    smoke = SmokeRun()
    deadline = time.monotonic() + timeout
    worker_checks(ctx, smoke)
    with api_token(ctx, token) as sent:
        http_checks(ctx, smoke, sent)
    simulated = simulator_running(ctx.settings)
    if not simulated and not real:
        smoke.checks.append(
            Check("tasks end to end", False, 0.0, "the fleet runs real providers: pass --real to let smoke spend "
                  f"up to ${REAL_CAP_USD:.2f} in its scratch environment, or run the fleet with --simulate")
        )  # fmt: skip
    else:
        with scratch(ctx, smoke, real=real):
            ids = submit_scratch(ctx, smoke)
            if ids:
                follow_scratch(ctx, smoke, ids, deadline)
                smoke.timed("budget hold taken and released", lambda: hold_and_release(ctx, ids[0]))
    if simulated:
        smoke.timed("breaker opens and recovers (simulator)", lambda: breaker_drill(ctx))
    else:
        smoke.checks.append(Check("breaker opens and recovers (simulator)", None, 0.0, "skipped: no simulator"))
    return smoke


def worker_checks(ctx: Context, smoke: SmokeRun) -> None:
    """Per group: the workers consuming its queue, and a Celery ping each of them answers."""
    timeout = ctx.settings.health_thresholds.inspect_timeout_s
    app = health.control_app(ctx.settings, ctx.fleet)
    try:
        began = time.monotonic()
        by_group = health.workers_by_group(app, ctx.fleet, timeout)
        missing = [g for g, nodes in by_group.items() if not nodes]
        if missing:  # a worker busy starting a task can miss one inspect window: ask once more, longer
            by_group.update(health.workers_by_group(app, ctx.fleet, timeout * 3))
        nodes = sorted({n for ns in by_group.values() for n in ns})
        answered = health.ping_nodes(app, nodes, timeout * 2) if nodes else set()
        spent = time.monotonic() - began
        for group, members in by_group.items():
            pinged = [n for n in members if n in answered]
            ok = bool(members) and len(pinged) == len(members)
            detail = f"{len(pinged)}/{len(members)} answered ping" if members else f"no worker consumes {group}"
            smoke.checks.append(Check(f"workers answer: {group}", ok, spent, detail))
    finally:
        app.close()


def http_checks(ctx: Context, smoke: SmokeRun, token: str | None) -> None:
    base, headers = api_url(ctx), auth_headers(token)

    def get(url: str, **kw: Any) -> httpx.Response:
        response = httpx.get(url, timeout=HTTP_TIMEOUT_S, **kw)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered HTTP {response.status_code}")
        return response

    def api() -> str:
        body = get(f"{base}/api/tasks?limit=1", headers=headers).json()
        return f"GET /api/tasks: {len(body) if isinstance(body, list) else 'ok'}"

    def healthy() -> str:
        body = get(f"{base}/api/multi-env/health", headers=headers).json()
        if not body.get("ok"):
            raise RuntimeError(f"health says not ok: {sorted(k for k, c in body['checks'].items() if not c['ok'])}")
        return "database and broker ok"

    def metrics() -> str:
        text = get(f"{base}/metrics", headers=headers).text
        families = metric_families(text)
        if not families:
            raise RuntimeError("/metrics has no switchyard_ metric")
        return f"{len(families)} switchyard_ metrics"

    def flower() -> str:
        # ``status=1``: the workers Flower's event stream sees alive (plain /api/workers is the cache of an inspect
        # Flower ran at its start, before the workers were up: "0 workers known" on a fleet just started)
        auth = ctx.settings.flower_credentials
        seen = get(f"{flower_url(ctx)}/api/workers?status=1", auth=auth).json()
        alive = sum(1 for up in seen.values() if up)
        return f"{alive} workers seen alive" + (" (with its login)" if auth else " (no login: local profile)")

    smoke.timed("status API answers", api)
    smoke.timed("health answers", healthy)
    smoke.timed("/metrics answers", metrics)
    smoke.timed("Flower answers", flower)


def metric_families(text: str) -> list[str]:
    """The switchyard_ metrics a Prometheus text declares (a family without samples yet still counts)."""
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE switchyard_")]


def scratch_dir(ctx: Context) -> Path:
    return ctx.settings.data_dir / SCRATCH_ENVIRONMENT


@contextmanager
def scratch(ctx: Context, smoke: SmokeRun, *, real: bool) -> Iterator[None]:
    """The scratch environment (and with ``real`` its budget) for the block; everything removed after it."""
    try:
        smoke.timed("scratch environment made", lambda: make_scratch(ctx, real=real))
        yield
    finally:
        smoke.left_behind += remove_scratch(ctx, keep_tasks=real)


def make_scratch(ctx: Context, *, real: bool) -> str:
    root = scratch_dir(ctx)
    if root.exists():  # an interrupted run's leftovers
        remove_scratch(ctx)
    sample = make_sample_repo(root / "sample-repo", feature_branches=2)
    report = ensure_workspace(
        str(sample),
        root / "workspace",
        [SCRATCH_ENVIRONMENT],
        ctx.fleet.environments.stages,
        base_port=SCRATCH_PORT,
        check_command="true",
        ports={SCRATCH_ENVIRONMENT: SCRATCH_PORT},
    )
    prepare_database(ctx.database_url)
    (info,) = [e for e in report.environments if e.name == SCRATCH_ENVIRONMENT]
    with session_scope(ctx.database_url) as session:
        record_environment(session, info)
    if real:
        Ledger(ctx.database_url, ctx.fleet).set_budget(
            scope="environment", target=SCRATCH_ENVIRONMENT, window="day", cap_usd=REAL_CAP_USD, action="block"
        )
        return f"{root} (capped at ${REAL_CAP_USD:.2f} a day for the run)"
    return str(root)


def remove_scratch(ctx: Context, *, keep_tasks: bool = False) -> list[str]:
    """Remove the scratch environment, its tasks, its budget; what could not be removed (tasks still running).

    ``keep_tasks`` (``--real``): the tasks and their spend rows stay, the record of money really spent."""
    left: list[str] = []
    with session_scope(ctx.database_url) as session:
        open_tasks = session.scalars(
            select(Task.id).where(Task.environment == SCRATCH_ENVIRONMENT, Task.status.notin_(TERMINAL_STATUSES))
        ).all()
        if open_tasks:
            left.append(f"{len(open_tasks)} scratch task(s) still running: {', '.join(t[:8] for t in open_tasks)}")
        else:
            if not keep_tasks:
                session.execute(delete(Task).where(Task.environment == SCRATCH_ENVIRONMENT))
            session.execute(delete(Environment).where(Environment.name == SCRATCH_ENVIRONMENT))
        session.execute(
            delete(BudgetOverride).where(
                BudgetOverride.scope == "environment", BudgetOverride.target == SCRATCH_ENVIRONMENT
            )
        )
    if not open_tasks:
        shutil.rmtree(scratch_dir(ctx), ignore_errors=True)
        if scratch_dir(ctx).exists():
            left.append(f"{scratch_dir(ctx)} could not be removed")
    return left


def requests() -> list[dict[str, Any]]:
    """One task of each kind in the scratch environment."""
    env = SCRATCH_ENVIRONMENT
    return [
        {"kind": "dev_task", "environment": env, "title": "Smoke: tidy the README"},
        {"kind": "plan", "environment": env, "goal": "Smoke: add a health endpoint"},
        {"kind": "pr_impl", "environment": env, "title": "Smoke: greet by environment", "description": "A note."},
        {"kind": "pr_review", "environment": env, "branch": "feature/sample-1", "title": "Smoke: review sample 1"},
        {"kind": "pr_integ", "environment": env, "branch": "feature/sample-2", "title": "Smoke: merge sample 2"},
    ]


def submit_scratch(ctx: Context, smoke: SmokeRun) -> list[str]:
    ids: list[str] = []

    def send() -> str:
        for request in requests():
            try:
                ids.append(submit(request, context=ctx))
            except NotYetSent as exc:
                ids.append(exc.task_id)
                raise
        return f"{len(ids)} tasks submitted"

    smoke.timed("scratch tasks submitted", send)
    return ids


def tracked(ctx: Context, ids: list[str]) -> list[Task]:
    """The submitted tasks and everything they led to (sub-tasks, reviews, integrations)."""
    with session_scope(ctx.database_url) as session:
        rows = list(session.scalars(select(Task).where(Task.environment == SCRATCH_ENVIRONMENT)))
        session.expunge_all()
    return rows if rows else []


def follow_scratch(ctx: Context, smoke: SmokeRun, ids: list[str], deadline: float) -> None:
    """Wait (until ``deadline``) for every scratch task to end; then one row per kind."""
    began = time.monotonic()
    while True:
        rows = tracked(ctx, ids)
        if all(r.status in TERMINAL_STATUSES for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    spent = time.monotonic() - began
    for kind in KINDS:
        mine = [r for r in rows if r.kind == kind]
        bad = [f"{r.id[:8]} {r.status}" for r in mine if r.status != "succeeded"]
        ok = bool(mine) and not bad
        detail = f"{len(mine)} succeeded" if ok else (f"not succeeded: {', '.join(bad)}" if mine else "none ran")
        smoke.checks.append(Check(f"{kind} end to end", ok, spent, detail))


def hold_and_release(ctx: Context, task_id: str) -> str:
    """A hold on a scratch task (an attempt number no worker uses), released at once."""
    with session_scope(ctx.database_url) as session:
        task = session.get(Task, task_id)
        group, stage = (task.group, task.stage) if task else ("", "")
    ledger = Ledger(ctx.database_url, ctx.fleet)
    provider = next(iter(ctx.fleet.providers))
    model = ctx.fleet.providers[provider].default_model
    held = ledger.hold(
        task_id=task_id,
        attempt=9999,
        provider=provider,
        model=model,
        group=group,
        environment=SCRATCH_ENVIRONMENT,
        stage=stage,
        micros=1000,
    )
    if not ledger.release(task_id=task_id, attempt=9999, reason="switchyard smoke"):
        raise RuntimeError("the hold was not found held when releasing it")
    return f"held $0.001 against {len(held.budgets)} budget(s), released"


def breaker_drill(ctx: Context) -> str:
    """Smoke's own breaker (threshold 2, open 1 s) over real calls to the simulator: the next two calls fail
    (the simulator's fail_next), the breaker opens, the half-open probe succeeds, it closes."""

    sim = ctx.settings.effective_simulator_url.rstrip("/")
    provider = "ollama"
    model = ctx.fleet.providers[provider].default_model if provider in ctx.fleet.providers else "llama3.2"
    policy = BreakerPolicy(failure_threshold=2, open_seconds=1.0, half_open_probes=1)
    client = redis.Redis.from_url(ctx.settings.effective_state_url, socket_timeout=5)
    breakers = Breakers(client, policy, {})
    keys = provider_keys(BREAKER_NAME)
    client.delete(keys.breaker, keys.inflight, keys.calls, keys.probes, keys.models)

    def call() -> bool:
        body = {"model": model, "messages": [{"role": "user", "content": "smoke"}], "stream": False}
        return httpx.post(f"{sim}/api/chat", json=body, timeout=HTTP_TIMEOUT_S).status_code == 200

    def state() -> str:
        return str(breakers.status([BREAKER_NAME])[BREAKER_NAME].state)

    try:
        control = httpx.post(f"{sim}/_sim/providers/{provider}", json={"fail_next": 2}, timeout=HTTP_TIMEOUT_S)
        control.raise_for_status()
        for _ in range(2):
            permit = breakers.acquire(BREAKER_NAME)
            if not isinstance(permit, Permit):
                raise RuntimeError(f"no permit while closed: {permit}")
            if call():
                raise RuntimeError("the simulator answered a call it was told to fail")
            breakers.failure(permit, "smoke: simulated failure")
        if state() != "open":
            raise RuntimeError(f"the breaker is {state()} after two failures, not open")
        time.sleep(policy.open_seconds + 0.2)
        probe = breakers.acquire(BREAKER_NAME)
        if not isinstance(probe, Permit) or not probe.probe:
            raise RuntimeError(f"no half-open probe after {policy.open_seconds}s: {probe}")
        if not call():
            raise RuntimeError("the simulator failed the probe call")
        breakers.success(probe)
        breakers.flush()
        if state() != "closed":
            raise RuntimeError(f"the breaker is {state()} after a good probe, not closed")
        return "opened after 2 failed calls, closed after the probe"
    finally:
        left = httpx.get(f"{sim}/_sim/state", timeout=HTTP_TIMEOUT_S).json()["providers"][provider]
        if left.get("fail_next"):
            httpx.post(f"{sim}/_sim/providers/{provider}", json={"fail_next": 0}, timeout=HTTP_TIMEOUT_S)
        client.delete(keys.breaker, keys.inflight, keys.calls, keys.probes, keys.models)
        client.close()
