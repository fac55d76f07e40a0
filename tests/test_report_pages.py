"""The HTML report file and the dashboard's ``/costs`` view, opened in headless Chromium (Playwright driving
Debian's ``chromium``): every chart renders (an SVG in its place), the console has no errors, and the page asks
no other host for anything (the file: nothing but itself; ``/costs``: only the status API)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from conftest import free_port
from report_kit import Job, Try, fleet, write

from reports.charts import html_report
from reports.report import cost_report
from store.db import dispose_all, session_scope
from store.migrate import ensure_schema
from switchyard.settings import Settings
from switchyard.usage import Usage
from tasks.context import build_context
from web.app import create_app

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
FLEET = fleet()
USAGE = Usage(input_tokens=4000, cached_input_tokens=1000, cache_write_tokens=300, output_tokens=900)
CHARTS = ("spend_per_day", "spend_by_group", "actual_vs_baseline", "burn_down_0", "burn_down_1")


@pytest.fixture
def seeded(sqlite_url: str) -> Iterator[str]:
    ensure_schema(sqlite_url)
    now = datetime.now(UTC)
    jobs = [
        Job(kind=kind, env=env, tries=[Try(provider, USAGE, now - timedelta(hours=hours))])
        for hours, (kind, env, provider) in enumerate(
            [
                ("pr_review", "dev1", "claude"),
                ("pr_impl", "dev2", "codex"),
                ("dev_task", "dev3", "ollama"),
                ("plan", "dev1", "claude"),
                ("pr_impl", "dev1", "codex"),
            ]
        )
    ]
    with session_scope(sqlite_url) as session:
        write(session, FLEET, jobs)
    yield sqlite_url
    dispose_all()


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def _open(browser: object, url: str) -> tuple[object, list[str], list[str]]:
    page = browser.new_page()  # type: ignore[attr-defined]
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    for name in CHARTS:
        page.wait_for_selector(f"#chart-{name} svg", timeout=60_000)
    return page, requests, errors


def test_the_html_report_is_one_offline_file_whose_charts_render(seeded: str, browser: object, tmp_path: Path) -> None:
    with session_scope(seeded) as session:
        report = cost_report(session, FLEET, now=datetime.now(UTC), since="2d", by="group")
    path = tmp_path / "report.html"
    path.write_text(html_report(report), encoding="utf-8")
    text = path.read_text()
    assert "http://" not in text.split("<script>")[0] and "cdn" not in text.lower().split("<script>")[0]
    page, requests, errors = _open(browser, path.as_uri())
    assert errors == []
    assert requests == [path.as_uri()]  # nothing else: not a script, not a font, not a data file
    bars = page.locator("#chart-spend_per_day svg path, #chart-spend_per_day svg rect").count()  # type: ignore[attr-defined]
    assert bars > 0
    assert "pr_review" in page.inner_text("table")  # type: ignore[attr-defined]


def test_the_costs_view_draws_the_same_charts_from_the_status_api(seeded: str, browser: object, tmp_path: Path) -> None:
    context = build_context(Settings(database_url=seeded, home=tmp_path / "home", fleet_file=ROOT / "switchyard.toml"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        origin = f"http://127.0.0.1:{port}"
        page, requests, errors = _open(browser, f"{origin}/costs")
        page.wait_for_selector("#spend tbody tr", timeout=60_000)  # type: ignore[attr-defined]
        assert errors == []
        assert requests and all(url.startswith(origin + "/") for url in requests), requests
        assert f"{origin}/costs/vega.js" in requests
        assert "total" in page.inner_text("#savings")  # type: ignore[attr-defined]
        assert "reconciled" in page.inner_text("#lines")  # type: ignore[attr-defined]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
