"""How ``submit --wait`` sums up a chain (store.chains.chain_end): never an empty "why"."""

from __future__ import annotations

from typing import Any

from store.chains import chain_end


def link(kind: str, status: str = "succeeded", summary: str = "", depth: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{kind}-0000-0000",
        "kind": kind,
        "status": status,
        "summary": summary,
        "depth": depth,
        "pipeline": True,
        "merge_sha": None,
        "merge_target": None,
        "follow_ups_owed": False,
        **extra,
    }


def test_a_submitted_integration_that_merged_has_landed_where_and_at_which_commit() -> None:
    integ = link("pr_integ", summary="feature/dev1/x merged", merge_sha="a240d9d6ff75", merge_target="env/dev1")
    end = chain_end([integ])
    assert (end["outcome"], end["why"], end["ok"]) == ("landed", "merged into env/dev1 at a240d9d6ff", True)


def test_a_review_of_a_branch_ends_succeeded_with_its_verdict_not_an_empty_why() -> None:
    end = chain_end([link("pr_review", summary="approve: small and consistent")])
    assert (end["outcome"], end["why"], end["complete"]) == ("succeeded", "approve: small and consistent", True)


def test_a_failed_link_still_says_which_and_why() -> None:
    end = chain_end([link("pr_review", "budget_exhausted", "no provider within budget")])
    assert (end["outcome"], end["ok"]) == ("failed", False)
    assert end["why"] == "pr_review pr_revie budget_exhausted: no provider within budget"


def test_a_failed_submitted_integration_did_not_land() -> None:
    end = chain_end([link("pr_integ", "failed", "check failed")])
    assert end["outcome"] == "failed"
    assert "check failed" in end["why"]


def test_a_chain_followed_from_its_review_that_merged_has_landed() -> None:
    """`tasks resume --wait` of a pr_impl whose review had stopped follows the review: it ends merged."""
    review = link("pr_review", summary="approve: fine")
    integ = link("pr_integ", depth=1, merge_sha="e4f80fcf2a11", merge_target="env/dev4")
    end = chain_end([review, integ])
    assert (end["outcome"], end["why"]) == ("landed", "merged into env/dev4 at e4f80fcf2a")
