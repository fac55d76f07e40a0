"""The chaos suite's counts (ops/verdict.py): pure functions over rows and samples."""

from __future__ import annotations

from ops.verdict import (
    AttemptRow,
    Sample,
    TaskRow,
    Verdict,
    branches_intact,
    duplicate_charges,
    lost,
    missing_follow_ups,
    stuck,
    time_to_recover,
    unrecorded_charges,
)


def fid(task_id: str, step: str) -> str:
    return f"{task_id}:{step}"


def free(provider: str) -> bool:
    return provider == "ollama"


def sample(t: float, **tasks: tuple[str, int]) -> Sample:
    return Sample(t, tasks)


# --- lost -------------------------------------------------------------------------------------------------


def test_every_accepted_task_terminal_once_is_not_lost() -> None:
    rows = [TaskRow("a", "dev_task", "succeeded"), TaskRow("b", "plan", "failed")]
    samples = [sample(1, a=("running", 1), b=("queued", 0)), sample(2, a=("succeeded", 1), b=("failed", 1))]
    assert lost(["a", "b"], rows, samples, fid) == []


def test_accepted_without_a_row_is_lost() -> None:
    assert lost(["a", "ghost"], [TaskRow("a", "dev_task", "succeeded")], [], fid) == ["ghost"]


def test_non_terminal_at_give_up_is_lost() -> None:
    rows = [TaskRow("a", "dev_task", "running"), TaskRow("b", "dev_task", "queued"), TaskRow("c", "x", "deferred")]
    assert lost(["a", "b", "c"], rows, [], fid) == ["a", "b", "c"]


def test_two_terminal_statuses_seen_is_lost() -> None:
    rows = [TaskRow("a", "dev_task", "failed")]
    samples = [sample(1, a=("succeeded", 1)), sample(2, a=("failed", 2))]
    assert lost(["a"], rows, samples, fid) == ["a"]


def test_terminal_then_active_again_is_lost() -> None:
    rows = [TaskRow("a", "dev_task", "succeeded")]
    samples = [sample(1, a=("succeeded", 1)), sample(2, a=("running", 2)), sample(3, a=("succeeded", 2))]
    assert lost(["a"], rows, samples, fid) == ["a"]


def test_a_follow_up_rejected_for_the_broker_is_lost_other_rejections_are_not() -> None:
    rows = [
        TaskRow("a", "pr_review", "rejected", reason="broker unavailable: Connection refused"),
        TaskRow("b", "pr_review", "rejected", reason="budget blocked"),
    ]
    assert lost(["a", "b"], rows, [], fid) == ["a"]


def test_missing_pipeline_follow_ups_are_lost() -> None:
    rows = [
        TaskRow("impl", "pr_impl", "succeeded", pipeline=True),
        TaskRow("impl2", "pr_impl", "succeeded", pipeline=True),
        TaskRow("impl2:review", "pr_review", "succeeded", parent_id="impl2", pipeline=True, verdict="approve"),
        TaskRow("solo", "pr_impl", "succeeded", pipeline=False),
        TaskRow("failed", "pr_impl", "failed", pipeline=True),
        TaskRow("comment", "pr_review", "succeeded", pipeline=True, verdict="comment"),
        TaskRow("later", "pr_review", "succeeded", pipeline=True, verdict="approve", stage_is_first=False),
    ]
    assert missing_follow_ups(rows, fid) == ["impl:review", "impl2:review:integrate"]
    assert lost([r.id for r in rows], rows, [], fid) == ["impl:review", "impl2:review:integrate"]


# --- stuck ------------------------------------------------------------------------------------------------


def test_stuck_reads_the_first_sample_at_the_deadline() -> None:
    samples = [sample(10, a=("running", 1), b=("queued", 0)), sample(95, a=("running", 1), b=("succeeded", 1))]
    assert stuck(samples, 90) == ["a"]
    assert stuck(samples, 5) == ["a", "b"]


def test_stuck_uses_the_last_sample_when_the_suite_stopped_early() -> None:
    assert stuck([sample(10, a=("succeeded", 1))], 90) == []
    assert stuck([], 90) == []


# --- duplicate charges ------------------------------------------------------------------------------------


def test_one_charged_success_is_no_duplicate() -> None:
    attempts = [AttemptRow("a", 1, "claude", "succeeded", cost_micros=900)]
    assert duplicate_charges(attempts, free) == []


def test_failed_then_charged_success_is_no_duplicate() -> None:
    attempts = [
        AttemptRow("a", 1, "claude", "failed", cost_micros=800),  # an unusable answer: the next rung is right
        AttemptRow("a", 2, "ollama", "succeeded"),
        AttemptRow("b", 1, "claude", "failed"),
        AttemptRow("b", 2, "claude", "succeeded", cost_micros=700),
    ]
    assert duplicate_charges(attempts, free) == []


def test_charged_again_after_a_success_is_a_duplicate() -> None:
    attempts = [
        AttemptRow("a", 2, "claude", "succeeded", cost_micros=900),
        AttemptRow("a", 1, "claude", "succeeded", cost_micros=900),  # order by attempt number, not row order
    ]
    assert duplicate_charges(attempts, free) == ["a"]


def test_charged_again_after_a_stored_answer_is_a_duplicate_even_if_the_second_fails() -> None:
    attempts = [
        AttemptRow("a", 1, "codex", "answered", charged_micros=500),
        AttemptRow("a", 2, "codex", "failed", cost_micros=500),
    ]
    assert duplicate_charges(attempts, free) == ["a"]


def test_an_uncharged_or_free_call_after_an_answer_is_no_duplicate() -> None:
    attempts = [
        AttemptRow("a", 1, "claude", "answered", cost_micros=500),
        AttemptRow("a", 2, "claude", "failed"),  # closed without a charge
        AttemptRow("b", 1, "claude", "succeeded", cost_micros=500),
        AttemptRow("b", 2, "ollama", "succeeded"),
    ]
    assert duplicate_charges(attempts, free) == []


# --- unrecorded charges -----------------------------------------------------------------------------------


def test_answered_paid_attempt_at_zero_is_unrecorded() -> None:
    attempts = [
        AttemptRow("a", 1, "claude", "succeeded"),
        AttemptRow("b", 1, "claude", "failed", has_answer=True),
        AttemptRow("c", 1, "ollama", "succeeded"),  # free
        AttemptRow("d", 1, "codex", "failed"),  # no answer: an error, nothing to pay
        AttemptRow("e", 1, "codex", "succeeded", charged_micros=10),  # the ledger has it
    ]
    assert unrecorded_charges(attempts, free, {}) == 2


def test_answers_billed_beyond_the_charged_attempts_are_unrecorded() -> None:
    attempts = [AttemptRow("a", 1, "claude", "succeeded", cost_micros=5), AttemptRow("b", 1, "codex", "failed")]
    assert unrecorded_charges(attempts, free, {"claude": 1, "codex": 0, "ollama": 40}) == 0
    assert unrecorded_charges(attempts, free, {"claude": 3, "codex": 1}) == 3
    assert unrecorded_charges(attempts, free, {"claude": 0}) == 0  # more charged than billed is not negative


def test_the_bill_is_read_against_every_attempt_that_started_in_the_phase() -> None:
    mine = [AttemptRow("a", 1, "claude", "succeeded", cost_micros=5)]
    leftover = AttemptRow("old", 2, "claude", "succeeded", cost_micros=5)  # an earlier fault's task, run now
    assert unrecorded_charges(mine, free, {"claude": 2}) == 1
    assert unrecorded_charges(mine, free, {"claude": 2}, in_window=[*mine, leftover]) == 0


# --- time to recover --------------------------------------------------------------------------------------


def test_recovery_is_measured_from_the_fault_end_to_the_last_affected_task() -> None:
    samples = [
        sample(0, a=("running", 1), b=("queued", 0), done=("succeeded", 1)),
        sample(12, a=("running", 1), b=("queued", 0), c=("queued", 0)),
        sample(20, a=("running", 1), b=("running", 1), c=("queued", 0)),
        sample(40, a=("running", 2), b=("succeeded", 1), c=("succeeded", 1)),
    ]
    assert time_to_recover(samples, fault_start=5, fault_end=15) == 25


def test_a_task_stuck_running_on_the_same_attempt_never_recovers() -> None:
    samples = [sample(0, a=("running", 1)), sample(50, a=("running", 1))]
    assert time_to_recover(samples, fault_start=1, fault_end=1) is None


def test_nothing_affected_recovers_at_once() -> None:
    samples = [sample(0, a=("succeeded", 1)), sample(10, a=("succeeded", 1))]
    assert time_to_recover(samples, fault_start=5, fault_end=5) == 0


def test_recovered_before_the_fault_ended_counts_as_zero() -> None:
    samples = [sample(0, a=("queued", 0)), sample(3, a=("succeeded", 1))]
    assert time_to_recover(samples, fault_start=1, fault_end=10) == 0


# --- branches and the verdict -----------------------------------------------------------------------------


def test_branches_must_stay_valid_and_fast_forward() -> None:
    history = {("a", "b"), ("a", "c")}
    before = {"env/dev1": "a", "env/dev2": "a", "env/dev3": "a", "env/dev4": "b"}
    after: dict[str, str | None] = {"env/dev1": "a", "env/dev2": "b", "env/dev3": None, "env/dev4": "c"}
    assert branches_intact(before, after, lambda old, new: (old, new) in history) == ["env/dev3", "env/dev4"]


def test_verdict_passes_only_with_zeros_and_a_recovery_under_90_s() -> None:
    good = Verdict("x", 10, 0, 0, 0, 0, 12.0, failed=3)
    assert good.ok
    assert not Verdict("x", 10, 1, 0, 0, 0, 12.0).ok
    assert not Verdict("x", 10, 0, 0, 0, 1, 12.0).ok
    assert not Verdict("x", 10, 0, 0, 0, 0, 90.0).ok
    assert not Verdict("x", 10, 0, 0, 0, 0, None).ok
    assert not Verdict("x", 10, 0, 0, 0, 0, 1.0, broken_branches=("env/dev1",)).ok
    assert Verdict("x", 0, 0, 0, 0, 0, None, skipped="no helper").ok
    assert not Verdict("x", 10, 0, 0, 0, 0, 1.0, error="no check ran").ok
    assert not Verdict("storm", 10, 0, 0, 0, 0, 1.0, failed=2, failures_allowed=False).ok
    assert Verdict("storm", 10, 0, 0, 0, 0, 1.0, failures_allowed=False).ok
    assert not Verdict("broker", 10, 0, 0, 0, 0, 1.0, crashed=("worker-pr_impl",)).ok
