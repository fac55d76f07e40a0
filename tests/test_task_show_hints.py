"""``tasks show`` says what a user can do next, also when the task itself succeeded but its chain stopped."""

from __future__ import annotations

from typing import Any

from cli.detail import show_detail, stopped_links
from cli.render import console

IMPL = "ac7fb48d-3298-47fa-b226-8a8f6f164895"
REVIEW = "37f5ba8b-6c0c-5a19-a24d-199c2d60f490"


def node(task_id: str, kind: str, status: str, parent: str | None, depth: int) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": kind,
        "status": status,
        "provider": "ollama",
        "parent_id": parent,
        "depth": depth,
        "depends_on": [],
        "summary": "",
        "this": task_id == IMPL,
    }


def shown(review_status: str) -> str:
    chain = [node(IMPL, "pr_impl", "succeeded", None, 0), node(REVIEW, "pr_review", review_status, IMPL, 1)]
    detail = {"id": IMPL, "kind": "pr_impl", "status": "succeeded", "chain": chain, "cost_usd": 0.0}
    with console.capture() as captured:
        show_detail(detail)
    return captured.get()


def test_a_succeeded_task_whose_review_ran_out_of_budget_says_to_resume_its_pipeline() -> None:
    text = " ".join(shown("budget_exhausted").split())
    assert f"its chain stopped at pr_review {REVIEW[:8]} (budget_exhausted); to go on: switchyard tasks resume" in text
    assert f"tasks resume {IMPL[:8]}" in text


def test_a_chain_that_went_through_gives_no_hint() -> None:
    assert "its chain stopped" not in shown("succeeded")
    assert "its chain stopped" not in shown("running")


def test_only_links_with_nothing_after_them_stopped_the_chain() -> None:
    first = node("a" * 36, "pr_integ", "failed", None, 0)
    again = node("b" * 36, "pr_integ", "succeeded", "a" * 36, 1)
    assert stopped_links([first, again]) == []
    assert stopped_links([first]) == [first]
