"""Submission payloads are refused at the edge with a message that says what and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.errors import InputError
from switchyard.fleet import load_fleet
from tasks.schemas import check_against_fleet, parse_request

FLEET = load_fleet(Path(__file__).resolve().parent.parent / "switchyard.toml")


def check(data: dict[str, object]) -> None:
    check_against_fleet(parse_request(data), FLEET)


def test_good_requests_pass() -> None:
    check({"kind": "pr_review", "environment": "dev1", "branch": "feature/x"})
    check({"kind": "plan", "environment": "dev5", "stage": "qa", "goal": "ship it"})
    check({"kind": "pr_impl", "environment": "dev2", "title": "add x"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "pr_reviews", "environment": "dev1"}, r"kind: Input should be 'plan'"),
        (
            {"kind": "pr_review", "environment": "dev9", "branch": "b"},
            r"unknown environment 'dev9'; known: dev1",
        ),
        (
            {"kind": "pr_review", "environment": "dev1", "stage": "prod", "branch": "b"},
            r"unknown stage 'prod'",
        ),
        ({"kind": "pr_review", "environment": "dev1"}, r"pr_review needs branch"),
        ({"kind": "plan", "environment": "dev1"}, r"plan needs goal"),
        ({"kind": "dev_task", "environment": "dev1", "title": "x", "colour": 1}, r"colour: unknown field"),
        (
            {"kind": "pr_integ", "environment": "dev1", "branch": "b", "stage": "qa"},
            r"merges into the 'dev' stage",
        ),
        (
            {"kind": "dev_task", "environment": "dev1", "title": "x", "description": "y" * 20001},
            r"limit is 20000",
        ),
        (
            {"kind": "dev_task", "environment": "dev1", "title": "t" * 201},
            r"title: String should have at most 200",
        ),
        ({"environment": "dev1"}, r"kind: Field required"),
    ],
)
def test_bad_requests_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check(data)
