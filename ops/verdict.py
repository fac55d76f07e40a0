"""The chaos suite's counts, as pure functions over rows read from SQL and samples taken while a fault ran.

Nothing here touches a database, a clock or a process: :mod:`ops.observe` gathers the rows, the driver
(:mod:`ops.chaos`) takes the samples, and these functions decide. The definitions, exactly:

* **lost** — accepted tasks (every id ``submit`` returned, and every task the fleet created under them:
  sub-tasks, reviews, integrations) that do not end with exactly one terminal status when the suite gives
  up waiting: no row, still non-terminal, seen with two different terminal statuses (or terminal, then
  active again), or ``rejected`` by the fleet itself because the broker was away (a follow-up whose send
  failed: the pipeline died silently). A follow-up the pipeline must have asked for but that has no row
  (a succeeded pipeline ``pr_impl`` without its review, an approving pipeline review without its
  integration) counts once too.
* **stuck** — tasks still non-terminal at the recovery deadline (90 s after the fault ended).
* **duplicate charges** — tasks that paid twice for one answer. A task needs one usable provider answer per
  step; once an attempt of it holds an answer that was stored and not rejected (``answered``: stored, the
  handler has not finished with it; ``succeeded``: used), every later *charged* attempt of the same task
  is a second payment for the work that answer already bought (a redelivery that called the provider
  again instead of continuing from the stored answer). Attempts that failed — an error, or an answer the
  handler found unusable, which moves the task to the next rung — are separate calls, each rightly
  charged once. A charge is a positive ``cost_micros`` on the attempt or a settled ``charged_micros`` in
  its ledger row. Free providers cost nothing and are not counted.
* **unrecorded charges** — provider answers paid for but not in the ledger: attempts on a paid provider
  that hold an answer (``answered``/``succeeded``, or a stored ``answer``) at $0; plus, from the provider's
  side, answers the simulator served on paid providers during the phase beyond the charged attempts that
  started in the phase (a call answered and then closed as lost at $0 leaves no answer in SQL, only in the
  provider's bill; a worker killed after the provider answered leaves the same).
* **time to recover** — from the end of the fault to the first moment every affected task (non-terminal
  when the fault began, or accepted while it lasted) is terminal or has moved on (its status or its
  attempt count changed: it runs again); None when some never did in the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TERMINAL = frozenset({"succeeded", "failed", "rejected", "budget_exhausted", "no_provider", "cancelled"})
STORED_ANSWER = frozenset({"answered", "succeeded"})
RECOVERY_DEADLINE_S = 90.0
BROKER_REJECTION = "broker unavailable"


@dataclass(frozen=True)
class TaskRow:
    id: str
    kind: str
    status: str
    parent_id: str | None = None
    reason: str | None = None
    pipeline: bool = False  # a pr_impl that asks for a review, or a review that belongs to a chain
    stage_is_first: bool = True
    verdict: str | None = None  # the review's verdict, for pr_review rows


@dataclass(frozen=True)
class AttemptRow:
    task_id: str
    attempt: int
    provider: str
    status: str
    cost_micros: int = 0
    charged_micros: int = 0  # the ledger row's settled charge
    has_answer: bool = False


Marker = tuple[str, int]  # (status, attempts so far)


@dataclass(frozen=True)
class Sample:
    """What the suite saw at ``t`` (seconds on its clock): each tracked task's status and attempt count."""

    t: float
    tasks: Mapping[str, Marker] = field(default_factory=dict)


def lost(
    accepted: Iterable[str],
    tasks: Sequence[TaskRow],
    samples: Sequence[Sample],
    follow_up_id: Callable[[str, str], str],
) -> list[str]:
    """Ids of accepted tasks without exactly one terminal status (and of missing follow-ups); see the module."""
    rows = {t.id: t for t in tasks}
    out = [i for i in dict.fromkeys(accepted) if i not in rows]
    for row in rows.values():
        broker_refused = row.status == "rejected" and (row.reason or "").startswith(BROKER_REJECTION)
        if row.status not in TERMINAL or broker_refused or not _one_terminal(row.id, samples):
            out.append(row.id)
    return out + missing_follow_ups(tasks, follow_up_id)


def _one_terminal(task_id: str, samples: Sequence[Sample]) -> bool:
    """False when the samples saw two terminal statuses, or a terminal status followed by an active one."""
    seen: str | None = None
    for sample in samples:
        marker = sample.tasks.get(task_id)
        if marker is None:
            continue
        status = marker[0]
        if seen is not None and status != seen:
            return False
        if status in TERMINAL:
            seen = status
    return True


def missing_follow_ups(tasks: Sequence[TaskRow], follow_up_id: Callable[[str, str], str]) -> list[str]:
    """Follow-up ids the pipeline must have created (uuid5 of the cause) that have no row."""
    ids = {t.id for t in tasks}
    expected = []
    for row in tasks:
        if row.status != "succeeded" or not row.pipeline:
            continue
        if row.kind == "pr_impl":
            expected.append(follow_up_id(row.id, "review"))
        elif row.kind == "pr_review" and row.verdict == "approve" and row.stage_is_first:
            expected.append(follow_up_id(row.id, "integrate"))
    return [i for i in expected if i not in ids]


def stuck(samples: Sequence[Sample], deadline: float) -> list[str]:
    """Tasks non-terminal in the first sample at or after ``deadline`` (the last sample, if none is)."""
    if not samples:
        return []
    at = next((s for s in samples if s.t >= deadline), samples[-1])
    return sorted(i for i, (status, _) in at.tasks.items() if status not in TERMINAL)


def charged(attempt: AttemptRow) -> bool:
    return attempt.cost_micros > 0 or attempt.charged_micros > 0


def duplicate_charges(attempts: Sequence[AttemptRow], free: Callable[[str], bool]) -> list[str]:
    """Tasks with a charged attempt after one that already held a stored, usable answer (see the module)."""
    out = []
    for task_id, mine in _by_task(attempts).items():
        answered = False
        for attempt in mine:
            if answered and charged(attempt) and not free(attempt.provider):
                out.append(task_id)
                break
            answered = answered or attempt.status in STORED_ANSWER
    return out


def unrecorded_charges(
    attempts: Sequence[AttemptRow],
    free: Callable[[str], bool],
    billed: Mapping[str, int],
    *,
    in_window: Sequence[AttemptRow] | None = None,
) -> int:
    """Answered paid ``attempts`` at $0, plus the simulator's paid answers (``billed``, per provider, during the
    phase) beyond the charged attempts that started in the phase (``in_window``, of any task: a task left over
    from an earlier fault that runs now is billed now too; default ``attempts``)."""
    paid = [a for a in attempts if not free(a.provider)]
    at_zero = sum(1 for a in paid if (a.status in STORED_ANSWER or a.has_answer) and not charged(a))
    window = attempts if in_window is None else in_window
    beyond = 0
    for provider, answers in billed.items():
        if free(provider):
            continue
        recorded = sum(1 for a in window if a.provider == provider and charged(a))
        beyond += max(0, answers - recorded)
    return at_zero + beyond


def time_to_recover(samples: Sequence[Sample], fault_start: float, fault_end: float) -> float | None:
    """Seconds from ``fault_end`` until every affected task was terminal or had moved on; None if never."""
    before = [s for s in samples if s.t <= fault_start]
    baseline = dict(before[-1].tasks) if before else {}
    affected = {i: m for i, m in baseline.items() if m[0] not in TERMINAL}
    for sample in samples:
        if fault_start < sample.t <= fault_end:
            for task_id, marker in sample.tasks.items():
                if task_id not in baseline and marker[0] not in TERMINAL:
                    affected.setdefault(task_id, marker)
    recovered_at: dict[str, float] = {}
    for sample in samples:
        for task_id, first in affected.items():
            now = sample.tasks.get(task_id)
            if task_id not in recovered_at and now is not None and _moved_on(first, now):
                recovered_at[task_id] = sample.t
    if len(recovered_at) < len(affected):
        return None
    return max(0.0, max(recovered_at.values(), default=fault_end) - fault_end)


def _moved_on(first: Marker, now: Marker) -> bool:
    return now[0] in TERMINAL or (now != first and now[0] != "queued")


def branches_intact(
    before: Mapping[str, str], after: Mapping[str, str | None], is_ancestor: Callable[[str, str], bool]
) -> list[str]:
    """Environment branches that are no longer a valid commit, or whose history did not fast-forward."""
    broken = []
    for branch, old in before.items():
        new = after.get(branch)
        if not new or not (new == old or is_ancestor(old, new)):
            broken.append(branch)
    return broken


def _by_task(attempts: Iterable[AttemptRow]) -> dict[str, list[AttemptRow]]:
    out: dict[str, list[AttemptRow]] = {}
    for attempt in sorted(attempts, key=lambda a: (a.task_id, a.attempt)):
        out.setdefault(attempt.task_id, []).append(attempt)
    return out


@dataclass(frozen=True)
class Verdict:
    """One row of the chaos table."""

    fault: str
    tasks: int
    lost: int
    stuck: int
    duplicate_charges: int
    unrecorded_charges: int
    recover_s: float | None
    failed: int = 0
    broken_branches: tuple[str, ...] = ()
    refused: int = 0  # submissions the fleet refused (never accepted, so never lost)
    failures_allowed: bool = True  # False where every task had a healthy next rung: then a failure fails the row
    crashed: tuple[str, ...] = ()  # services that exited by themselves during the fault (fails the row)
    skipped: str | None = None
    error: str | None = None  # the fault could not be injected as meant: the row fails

    @property
    def ok(self) -> bool:
        """All zeros, recovered under the deadline, every environment branch intact (a skipped row passes)."""
        if self.skipped:
            return True
        if self.error or self.crashed:
            return False
        counts = (self.lost, self.stuck, self.duplicate_charges, self.unrecorded_charges, len(self.broken_branches))
        if not self.failures_allowed and self.failed:
            return False
        return not any(counts) and self.recover_s is not None and self.recover_s < RECOVERY_DEADLINE_S
