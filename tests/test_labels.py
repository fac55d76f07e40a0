"""Pure parts of what Flower and the dashboard show: a message's labels, the exception of a task's end, and
which git range is a task's diff."""

from __future__ import annotations

import pickle

from tasks.labels import EndedWithout, labels
from web.diffs import diff_range


def test_a_message_is_labelled_with_kind_environment_stage_title_and_parent() -> None:
    shown = labels(
        task_id="t-1", kind="pr_review", environment="dev1", stage="qa", title="Check the login", parent_id="p-1"
    )
    assert shown.argsrepr == "('t-1',)"
    assert shown.kwargsrepr == "{'kind': 'pr_review', 'environment': 'dev1', 'stage': 'qa', 'title': 'Check the login'}"
    assert shown.options() == {"argsrepr": shown.argsrepr, "kwargsrepr": shown.kwargsrepr, "parent_id": "p-1"}
    orphan = labels(task_id="t-2", kind="plan", environment="dev1", stage="dev", title="x" * 300, parent_id=None)
    assert "parent_id" not in orphan.options() and "x" * 79 + "…" in orphan.kwargsrepr


def test_the_end_of_a_task_without_success_names_its_status_and_reason_and_survives_pickling() -> None:
    ended = EndedWithout("budget_exhausted", "the day's cap of $50 is reached")
    assert str(ended) == "budget_exhausted: the day's cap of $50 is reached"
    again = pickle.loads(pickle.dumps(ended))  # noqa: S301 - our own object, round-tripped
    assert (again.status, again.reason, str(again)) == (ended.status, ended.reason, str(ended))
    assert str(EndedWithout("failed", None)) == "failed: no reason recorded"


def test_a_tasks_diff_is_its_own_commits_its_merge_or_the_branch_it_reviewed() -> None:
    base = {"id": "t", "environment": "dev1", "stage": "dev", "merges": [], "payload": {}}
    impl = {**base, "kind": "pr_impl", "result": {"data": {"commit": "c3", "commits": ["c1", "c2", "c3"]}}}
    assert diff_range(impl, first_stage="dev") == ["c1^", "c3"]
    single = {**base, "kind": "dev_task", "result": {"data": {"commit": "c9"}}}
    assert diff_range(single, first_stage="dev") == ["c9^", "c9"]
    merge = {"task_id": "t", "base_sha": "b0", "merge_sha": "m1"}
    assert diff_range({**base, "kind": "pr_integ", "result": {"data": {}}, "merges": [merge]}, first_stage="dev") == [
        "b0",
        "m1",
    ]
    review = {**base, "kind": "pr_review", "stage": "qa", "result": None, "payload": {"branch": "feature/x"}}
    assert diff_range(review, first_stage="dev") == ["env/dev1-qa...feature/x"]
    assert diff_range({**base, "kind": "plan", "result": None}, first_stage="dev") is None
