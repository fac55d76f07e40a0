"""The dashboard in headless Chromium (Playwright, Debian's /usr/bin/chromium): breakers, what each stage holds,
a task's detail, filters; no console error and no request outside the host; /docs renders with no internet.

The data is real: a pipeline (implementation, review, integration with its check) run by the attempt loop on the
simulator over HTTP, a promotion to qa, a review that ended no_provider, and the Claude breaker opened by five
failures through the shared breaker. The status API is a real uvicorn server on a free port.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import IN_CI, free_port
from pipeline_kit import detail, drain, make_context, workspace

from environments.promote import promote
from routing.permits import Permit
from simulator.server import BackgroundSimulator
from store import tokens
from store.db import session_scope
from tasks.context import Context, build_context
from tasks.submit import submit
from web.app import create_app

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 60_000  # generous: a loaded machine (load 15) renders slowly


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, redis_url, sqlite_url)


@pytest.fixture
def fleet_data(ctx: Context, server: BackgroundSimulator) -> dict[str, str]:
    """A landed and promoted pipeline, a failed review, and an open Claude breaker."""
    impl = submit({"kind": "pr_impl", "environment": "dev1", "title": "Add a farewell"}, context=ctx)
    drain(ctx)
    chain = detail(ctx, impl)["chain"]
    ids = {row["kind"]: row["id"] for row in chain}
    assert [row["status"] for row in chain] == ["succeeded"] * 3, chain
    promoted = promote(workspace(ctx), "dev1", "qa", database_url=ctx.database_url)
    assert promoted.status == "promoted", promoted.reason
    with httpx.Client(base_url=server.url, timeout=10) as sim:
        sim.post("/_sim/reset").raise_for_status()
        for provider in ("claude", "ollama"):
            sim.post(f"/_sim/providers/{provider}", json={"error_rate": 1.0, "error_status": 400}).raise_for_status()
        failed = submit(
            {"kind": "pr_review", "environment": "dev2", "branch": "feature/sample-2", "deadline_s": 0}, context=ctx
        )
        drain(ctx)
        sim.post("/_sim/reset").raise_for_status()
    assert detail(ctx, failed)["status"] == "no_provider"
    breakers = ctx.breakers()
    for _ in range(ctx.fleet.breaker.failure_threshold):
        permit = breakers.acquire("claude")
        assert isinstance(permit, Permit)
        breakers.failure(permit, "HTTP 529: overloaded")
    return {**ids, "failed": failed, "qa_commit": promoted.target_after}


@contextlib.contextmanager
def serve(ctx: Context) -> Iterator[str]:
    """The status API of ``ctx`` on a real uvicorn server on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the status API did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def base_url(ctx: Context) -> Iterator[str]:
    with serve(ctx) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; install it with: apt-get install -y chromium"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page whose console errors, page errors and requests outside the host are recorded; a request outside
    the host is also refused, so the page is as good as offline."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", lambda route: self._route(route, base_url))

    def _route(self, route: Any, base_url: str) -> None:
        url = route.request.url
        if url.startswith((base_url + "/", "data:")) or url == base_url:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self) -> None:
        self.context.close()


def rows_of(page: Any, table: str) -> list[str]:
    texts: list[str] = page.locator(f"#{table} tbody tr").all_inner_texts()
    return texts


def wait_rows(page: Any, table: str, check: Any) -> list[str]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        rows = rows_of(page, table)
        if check(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"#{table} never matched; last rows: {rows_of(page, table)}")


def test_the_dashboard_shows_breakers_stages_task_detail_and_filters(
    ctx: Context, fleet_data: dict[str, str], base_url: str, browser: Any
) -> None:
    watched = Watched(browser, base_url)
    page = watched.page
    page.goto(base_url + "/")

    claude = wait_rows(page, "breakers", lambda rows: any(r.startswith("claude") and "open" in r for r in rows))
    row = next(r for r in claude if r.startswith("claude"))
    assert "closed → open" in row and "529" in row

    environments = wait_rows(page, "environments", lambda rows: any(fleet_data["qa_commit"][:10] in r for r in rows))
    dev1 = next(r for r in environments if r.startswith("dev1"))
    assert "merge from task/" in dev1 and "promotion from dev" in dev1 and fleet_data["pr_integ"][:8] in dev1
    assert "nothing merged or promoted yet" in dev1  # staging: never promoted

    # filters: each narrows the list to what it names
    wait_rows(page, "tasks", lambda rows: len(rows) == 4)
    page.select_option("#filter-status", "no_provider")
    only = wait_rows(page, "tasks", lambda rows: len(rows) == 1 and "\tno_provider\t" in rows[0])
    assert fleet_data["failed"][:8] in only[0]
    page.select_option("#filter-status", "")
    wait_rows(page, "tasks", lambda rows: len(rows) == 4)
    page.select_option("#filter-kind", "pr_integ")
    integ = wait_rows(page, "tasks", lambda rows: len(rows) == 1 and "\tpr_integ\t" in rows[0])
    assert fleet_data["pr_integ"][:8] in integ[0]
    page.select_option("#filter-kind", "")
    wait_rows(page, "tasks", lambda rows: len(rows) == 4)
    page.select_option("#filter-environment", "dev2")
    dev2 = wait_rows(page, "tasks", lambda rows: len(rows) == 1 and "\tdev2/dev\t" in rows[0])
    assert fleet_data["failed"][:8] in dev2[0]
    page.select_option("#filter-environment", "")
    wait_rows(page, "tasks", lambda rows: len(rows) == 4)

    check_task_detail(page, ctx, base_url, fleet_data)
    assert watched.errors == [] and watched.outside == []
    watched.close()


def wait_text(page: Any, element_id: str, text: str) -> None:
    page.wait_for_function(f"document.getElementById({element_id!r}).textContent.includes({text!r})", timeout=WAIT_MS)


def check_task_detail(page: Any, ctx: Context, base_url: str, fleet_data: dict[str, str]) -> None:
    """The integration's merge and check output, the implementation's diff, the review's comment, the failed
    review's attempts, and retry and cancel from the detail."""
    page.locator(f"#tasks tbody tr[data-id='{fleet_data['pr_integ']}']").click()
    page.wait_for_selector("#task-detail:not([hidden])", timeout=WAIT_MS)
    page.wait_for_function(f"document.getElementById('detail-id').textContent === '{fleet_data['pr_integ']}'")
    merges = page.inner_text("#detail-merges")
    assert "merged" in merges and "check passed" in merges
    check = detail(ctx, fleet_data["pr_integ"])["merges"][-1]["check"]
    assert page.inner_text("#detail-merges pre.check-output").startswith(f"$ {check['command']}")
    assert "ollama" in page.inner_text("#detail-attempts")

    page.goto(f"{base_url}/#task/{fleet_data['pr_impl']}")
    page.wait_for_function(f"document.getElementById('detail-id').textContent === '{fleet_data['pr_impl']}'")
    page.wait_for_function("document.getElementById('detail-diff').textContent.includes('diff --git')")
    reviews = page.inner_text("#detail-reviews")
    assert "approve" in reviews and page.locator("#detail-reviews .comment").count() >= 1
    assert page.locator("#detail-chain li").count() == 3

    page.goto(f"{base_url}/#task/{fleet_data['failed']}")
    page.wait_for_function(f"document.getElementById('detail-id').textContent === '{fleet_data['failed']}'")
    head = page.inner_text("#detail-head")
    assert "no_provider" in head and "no provider for pr_review" in head  # the status and its stored reason
    assert page.locator("#detail-attempts tbody tr").count() == 2  # claude, then ollama: both refused the call
    assert page.locator("#detail-tries tbody tr").count() >= 2

    # acting on it from its detail: retried (queued again: no worker runs here), then cancelled
    assert page.is_hidden("#do-cancel") and page.is_visible("#do-retry")
    page.click("#do-retry")
    wait_text(page, "action-result", "retry: no_provider → queued")
    assert detail(ctx, fleet_data["failed"])["status"] == "queued"
    page.wait_for_selector("#do-cancel:not([hidden])", timeout=WAIT_MS)
    page.click("#do-cancel")
    wait_text(page, "action-result", "cancel: queued → cancelled")
    assert [a["action"] for a in detail(ctx, fleet_data["failed"])["actions"]] == ["retry", "cancel"]


def test_the_api_docs_render_with_no_internet(ctx: Context, base_url: str, browser: Any) -> None:
    watched = Watched(browser, base_url)
    page = watched.page
    page.goto(base_url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=WAIT_MS)
    assert "Switchyard" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/tasks/{task_id}/retry" in p for p in paths) and any("/api/breakers" in p for p in paths)
    assert watched.outside == [] and watched.errors == []
    watched.close()


def test_with_auth_on_the_dashboard_asks_for_a_token_and_then_shows_the_fleet(ctx: Context, browser: Any) -> None:
    """A wrong token brings the form back with the API's reason; a read token shows the fleet and keeps working
    after a reload (sessionStorage); an action it may not do shows the 403's reason."""
    task = submit({"kind": "pr_impl", "environment": "dev1", "title": "Add a farewell"}, context=ctx)  # queued
    with session_scope(ctx.database_url) as session:
        token = tokens.create_token(session, name="browser", scope="read")
    authed = build_context(ctx.settings.model_copy(update={"api_auth": "on"}))
    with serve(authed) as url:
        watched = Watched(browser, url)
        page = watched.page
        page.goto(url + "/")
        page.wait_for_selector("#auth:not([hidden])", timeout=WAIT_MS)
        wait_text(page, "auth-reason", "this API needs a token")
        assert rows_of(page, "groups") == []  # nothing shown without a token

        for wrong, reason in ((tokens.PREFIX + "B" * 43, "unknown or revoked"), ("hunter2", "malformed")):
            page.fill("#auth-token", wrong)
            page.click("#auth-submit")
            page.wait_for_selector("#auth:not([hidden])", timeout=WAIT_MS)
            wait_text(page, "auth-reason", reason)

        page.fill("#auth-token", token)
        page.click("#auth-submit")
        groups = wait_rows(page, "groups", lambda rows: len(rows) == len(ctx.fleet.groups))
        assert sorted(r.split("\t")[0] for r in groups) == sorted(g.name for g in ctx.fleet.groups)
        wait_rows(page, "environments", lambda rows: any(r.startswith("dev1") for r in rows))
        wait_rows(page, "tasks", lambda rows: len(rows) == 1 and task[:8] in rows[0])
        assert page.is_hidden("#auth")
        assert page.evaluate("sessionStorage.getItem('switchyard.token')") == token

        page.reload()
        wait_rows(page, "groups", lambda rows: len(rows) == len(ctx.fleet.groups))
        assert page.is_hidden("#auth")

        page.goto(f"{url}/#task/{task}")
        page.wait_for_selector("#do-cancel:not([hidden])", timeout=WAIT_MS)
        page.click("#do-cancel")
        wait_text(page, "action-result", "cancel refused: this route needs a token of scope 'submit'")
        wait_text(page, "auth-forbidden", "needs a token of scope 'submit'")
        assert detail(ctx, task)["status"] == "queued"  # refused: nothing changed
        # the browser logs each refused request; anything else would be a script error
        assert [e for e in watched.errors if "status of 401" not in e and "status of 403" not in e] == []
        assert watched.outside == []
        watched.close()
