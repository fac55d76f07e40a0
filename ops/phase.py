"""One row of the chaos table: submit a batch, inject the fault while the rest is submitted, sample the tasks
until they settle or the recovery deadline passes, then read the rows and count (:mod:`ops.verdict`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy.exc import SQLAlchemyError

from ops import observe, verdict
from ops.faults import Fault, FaultKit
from ops.verdict import Sample, Verdict
from ops.workload import Submitted, requests_for, submit_some
from tasks.pipeline import follow_up_id

SAMPLE_S = 1.0
PACE_S = 0.2


@dataclass
class Sampler:
    """Samples of the tracked tasks, at most one per :data:`SAMPLE_S` unless forced; a database that does not
    answer (a PostgreSQL outage) gives no sample, not an error."""

    kit: FaultKit
    submitted: Submitted
    samples: list[Sample] = field(default_factory=list)

    def take(self, *, force: bool = False) -> Sample | None:
        now = self.kit.clock()
        if not force and self.samples and now - self.samples[-1].t < SAMPLE_S:
            return None
        try:
            tasks = observe.tracked(self.kit.fleet.ctx, self.submitted.ids)
        except SQLAlchemyError:
            return None
        self.samples.append(Sample(now, tasks))
        return self.samples[-1]


class FaultThread(threading.Thread):
    """Runs the fault's ``inject`` beside the submissions; keeps when it began, and what it raised."""

    def __init__(self, fault: Fault, kit: FaultKit) -> None:
        super().__init__(name=f"chaos-{fault.name}", daemon=True)
        self.fault, self.kit = fault, kit
        self.began: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.began = self.fault.inject(self.kit)
        except Exception as exc:  # noqa: BLE001 -- reported in the fault's row
            self.error = exc


def calm(kit: FaultKit) -> None:
    """Between faults: the simulator healed and every breaker closed, so each row starts from the same state."""
    ctx = kit.fleet.ctx
    for provider in ctx.fleet.providers:
        httpx.post(f"{kit.fleet.simulator_url}/_sim/providers/{provider}/heal", timeout=10).raise_for_status()
        ctx.breakers().reset(provider, "chaos suite: next fault")


def run_phase(kit: FaultKit, fault: Fault, count: int, *, recovery_s: float = verdict.RECOVERY_DEADLINE_S) -> Verdict:
    skipped = fault.skip_reason(kit)
    if skipped:
        return Verdict(fault.name, 0, 0, 0, 0, 0, None, skipped=skipped)
    fleet, ctx = kit.fleet, kit.fleet.ctx
    calm(kit)
    heads, bill_before = observe.env_branches(fleet.workspace), observe.answered_calls(fleet.simulator_url)
    since = datetime.now(UTC)
    requests = requests_for(fault.mix, count, ctx.fleet.environments.names, fault.name)
    submitted = Submitted()
    sampler = Sampler(kit, submitted)
    half = len(requests) // 2
    submit_some(ctx, requests[:half], submitted, each=lambda: None)
    sampler.take(force=True)
    thread = FaultThread(fault, kit)
    thread.start()

    def pace() -> None:
        sampler.take()
        kit.sleep(PACE_S)

    submit_some(ctx, requests[half:], submitted, each=pace)
    while thread.is_alive():
        sampler.take()
        kit.sleep(PACE_S)
    end = kit.clock()
    began = thread.began if thread.began is not None else end
    wait_to_settle(kit, sampler, end + recovery_s)
    crashed = tuple(fleet.dead())
    row = count_phase(
        kit,
        fault,
        sampler=sampler,
        began=began,
        end=end,
        heads=heads,
        bill_before=bill_before,
        since=since,
        error=thread.error,
        crashed=crashed,
    )
    for name in crashed:  # counted in the row (read first), then started again: the next fault needs a whole fleet
        kit.log(f"  {name} exited by itself during {fault.name}; restarting it")
        fleet.restart(name)
    return row


def wait_to_settle(kit: FaultKit, sampler: Sampler, deadline: float) -> None:
    """Sample until every tracked task is terminal with its follow-ups made, or ``deadline`` (the suite gives up)."""
    while True:
        sample = sampler.take(force=True)
        if sample is not None and all(s in verdict.TERMINAL for s, _ in sample.tasks.values()):
            rows = observe.task_rows(kit.fleet.ctx, sample.tasks)
            if not verdict.missing_follow_ups(rows, follow_up_id):
                return
        if kit.clock() > deadline:
            return
        kit.sleep(SAMPLE_S)


def count_phase(
    kit: FaultKit,
    fault: Fault,
    *,
    sampler: Sampler,
    began: float,
    end: float,
    heads: dict[str, str | None],
    bill_before: dict[str, int],
    since: datetime,
    error: BaseException | None,
    crashed: tuple[str, ...],
) -> Verdict:
    fleet, ctx = kit.fleet, kit.fleet.ctx
    ids = list(sampler.samples[-1].tasks) if sampler.samples else list(sampler.submitted.ids)
    tasks, attempts = observe.task_rows(ctx, ids), observe.attempt_rows(ctx, ids)
    bill = observe.bill_between(bill_before, observe.answered_calls(fleet.simulator_url))

    def free(provider: str) -> bool:
        config = ctx.fleet.providers.get(provider)
        return config is not None and config.free

    before = {branch: sha for branch, sha in heads.items() if sha}
    return Verdict(
        fault=fault.name,
        tasks=len(tasks),
        lost=len(verdict.lost(sampler.submitted.ids, tasks, sampler.samples, follow_up_id)),
        stuck=len(verdict.stuck(sampler.samples, end + verdict.RECOVERY_DEADLINE_S)),
        duplicate_charges=len(verdict.duplicate_charges(attempts, free)),
        unrecorded_charges=verdict.unrecorded_charges(
            attempts, free, bill, in_window=observe.attempt_rows(ctx, since=since)
        ),
        recover_s=verdict.time_to_recover(sampler.samples, began, end),
        failed=sum(1 for t in tasks if t.status in verdict.TERMINAL and t.status != "succeeded"),
        broken_branches=tuple(
            verdict.branches_intact(before, observe.env_branches(fleet.workspace), observe.ancestry(fleet.workspace))
        ),
        refused=sampler.submitted.refused,
        failures_allowed=fault.failures_allowed,
        crashed=crashed,
        error=None if error is None else f"{type(error).__name__}: {error}",
    )
