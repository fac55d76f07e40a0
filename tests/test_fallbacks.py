"""Why a task left its first choice, where people read it: the demo's "Tasks that fell back, and why" (which
tasks count as fallen back, and the reasons they show) and ``tasks show``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from cli.detail import show_detail
from cli.render import console
from store import repo
from store.costs import fallbacks
from store.db import session_scope
from store.migrate import ensure_schema
from store.models import BreakerTransition
from store.queries import task_detail
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE

FLEET = load_fleet(DEFAULT_FLEET_FILE)  # pr_review's ladder: claude, then ollama


def task(session: Session, task_id: str, attempts: list[tuple[str, str | None, str | None, str | None]]) -> None:
    """A pr_review whose attempts were (provider, error class, error, route note); it ends on the last one."""
    repo.create_task(
        session, task_id=task_id, kind="pr_review", group="pr_review", environment="dev1", stage="dev",
        title="", payload={},
    )  # fmt: skip
    for number, (provider, error_class, error, note) in enumerate(attempts, start=1):
        repo.begin_attempt(
            session, task_id=task_id, attempt=number, provider=provider, model="m", transport="api", route_note=note
        )
        failed = error_class is not None
        repo.finish_attempt(
            session, task_id=task_id, attempt=number, status="failed" if failed else "succeeded",
            error_class=error_class, error=error,
        )  # fmt: skip
    repo.finish_task(session, task_id=task_id, status="succeeded", provider=attempts[-1][0])


def why_of(url: str, fleet: Fleet, ids: list[str]) -> dict[str, str]:
    with session_scope(url) as session:
        return {row["id"]: row["why"] for row in fallbacks(session, fleet, ids)}


def test_only_tasks_that_left_their_first_choice_are_listed_with_refusals_failures_and_causes(
    sqlite_url: str,
) -> None:
    ensure_schema(sqlite_url)
    long = "HTTP 500 " + "word " * 40
    with session_scope(sqlite_url) as session:
        session.add(
            BreakerTransition(
                provider="claude", from_state="closed", to_state="open",
                cause="5 failures in a row; last: TransientError: claude: HTTP 500",
                at=datetime.now(UTC) - timedelta(seconds=5),
            )
        )  # fmt: skip
        task(session, "passed", [("ollama", None, None, "claude: breaker open (retry in 60s)")])
        refused = "claude: breaker open (retry in 59.9s); stopped after 1 try"
        task(session, "refused", [("claude", "ProviderUnavailable", refused, None), ("ollama", None, None, None)])
        task(session, "failed", [("claude", "TransientError", f"claude: {long}", None), ("ollama", None, None, None)])
        busy = "claude: all in-flight slots taken (retry in 1.0s)"
        task(session, "waited", [("claude", "ProviderUnavailable", busy, None), ("claude", None, None, None)])
        task(session, "first", [("claude", None, None, None)])

    why = why_of(sqlite_url, FLEET, ["passed", "refused", "failed", "waited", "first"])

    assert set(why) == {"passed", "refused", "failed"}  # "waited" and "first" ran on their first choice
    opened = "claude's breaker had opened: 5 failures in a row; last: TransientError: claude: HTTP 500"
    assert why["passed"] == f"passed over claude: breaker open (retry in 60s); {opened}"
    assert why["refused"] == f"claude refused: breaker open (retry in 59.9s); {opened}"
    failure = why["failed"]
    assert failure.startswith("claude failed: TransientError (claude: HTTP 500 word word")
    assert failure.endswith("word…)")  # cut between words, not inside one
    assert len(failure) < 160


def test_tasks_show_says_which_providers_an_attempt_passed_over_and_why(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    with session_scope(sqlite_url) as session:
        task(session, "passed", [("ollama", None, None, "claude: breaker open (retry in 60s)")])
        found = task_detail(session, "passed")
    assert found is not None
    with console.capture() as captured:
        show_detail(found)
    assert "attempt 1 on ollama, passed over: claude: breaker open (retry in 60s)" in captured.get()
