"""The shared attempt loop every task kind runs, from claiming the task to its one terminal status.

    claim → recover (a redelivery: close calls a dead worker left open, act again on a stored answer)
          → gate (wait for an earlier merge, a dependency) → prompt
          → route (choose + hold, :mod:`routing.router`) → call under retries and breaker (:mod:`routing.guard`)
          → settle the hold to the real cost → the kind's handler acts on the answer
          → result row + terminal status → :func:`tasks.pipeline.after_terminal`

Every answer is stored before anything else can fail: the attempt's row is ``running`` while its call is
open, ``answered`` (with the answer, usage and cost) as soon as the answer arrives, then settled in the ledger;
the handler's outcome is stored with the attempt's verdict. When the database is away at that moment, the
answer waits (in memory and in the state Redis, :mod:`routing.parked`) and storing is tried again until the
task's time limit is near, instead of failing. What a redelivery does with what it finds is
:func:`tasks.claim.recover`'s to say.

Attempts are numbered 1, 2, … per task across runs. A provider that fails past its retries, refuses the
request (400, 413, 422: too large or malformed for it), does not know the model (404: the model is also
marked unusable for every worker, :mod:`routing.marks`) or answers with something unusable is excluded for
the rest of the run and the router picks the next rung, then a free provider when the kind allows it; no
rung restarts another's retry cycle. When nothing can serve the task now, it is deferred (Celery retry with
a countdown) until its deadline, then ends ``no_provider`` or ``budget_exhausted`` with every reason. Each try
inside an attempt (a call tenacity made) is recorded with its start, end and error (:mod:`tasks.tries`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from opentelemetry.trace import Span
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from providers.base import Provider, ProviderRequest, ProviderResponse
from providers.registry import build_provider
from routing.breaker import PermitRequest
from routing.parked import ParkedAnswer, ParkedAnswers
from routing.route import Refusal, Route, RouteRequest
from routing.router import UNAVAILABLE_RETRY_S, Place, Routed, Router
from routing.state import connect_state
from store import alerts, outbox, repo
from store import pipeline as rows
from store.db import session_on, session_scope
from store.models import Attempt
from switchyard import logs, traces
from switchyard.errors import (
    BadAnswer,
    HoldExceeded,
    ModelNotFound,
    PatchRejected,
    ProviderError,
    ProviderUnavailable,
    ServiceUnavailable,
    SwitchyardError,
    TransientError,
)
from tasks import pipeline
from tasks.claim import Claimed, Resumed, claim_with_attempts, finished_task, recover, store_outcome
from tasks.context import Context
from tasks.kinds import HANDLERS
from tasks.kinds.base import LANDING, Answer, Outcome, Prompt, TaskInfo
from tasks.plans import update_plan
from tasks.storing import Keeper, priced
from tasks.tries import TryLog

log = logging.getLogger(__name__)
ProviderFactory = Callable[[str, Context, str], Provider]
Guard = Callable[[str, Callable[[], ProviderResponse], PermitRequest | None], ProviderResponse]
GATE_COUNTDOWN_S = 2.0  # waiting for another task (an earlier merge, a dependency): look again soon


def default_factory(name: str, ctx: Context, transport: str) -> Provider:
    """One client per provider and transport per process: SDK clients keep their connection pools warm."""
    return ctx.part(
        f"provider:{name}:{transport}", lambda: build_provider(name, ctx.settings, ctx.fleet, transport=transport)
    )


def recovery_wait(exc: Exception, longest: float) -> float | None:
    """How long until a failure like ``exc`` may be gone (a busy provider, an open breaker, a transient error),
    or None when waiting cannot cure it (a disabled provider, an unusable answer)."""
    if isinstance(exc, ProviderUnavailable):
        return None if exc.retry_in_s is None else min(exc.retry_in_s, longest)
    return longest if isinstance(exc, TransientError) else None


class TaskFailed(SwitchyardError):
    """Ends the task with ``status`` and the reason; raised inside the loop only. ``failures``: what each rung
    that was tried in this run failed with (an alert when there are any: the task failed on every rung)."""

    def __init__(self, status: str, reason: str, failures: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.failures = failures


class TakenOver(Exception):
    """This run lost its task's lease (its renewals came too late, e.g. the database was away longer than a
    lease) and another worker took the task over: this run stops without acting or finishing the task."""


class Truncated(Exception):
    """An answer cut by the output limit its hold was sized to (:mod:`routing.sizing`): it is paid for and its
    attempt closed as failed; the task asks once more with the kind's whole output cap held."""

    def __init__(self, provider: str, limit: int) -> None:
        super().__init__(f"{provider}: the answer reached its output limit ({limit} tokens held)")


class Deferred(Exception):
    """The task waits ``countdown_s`` and runs again; its row says ``deferred`` with the reason."""

    def __init__(self, reason: str, countdown_s: float) -> None:
        super().__init__(reason)
        self.countdown_s = countdown_s


@dataclass
class Runner:
    """Runs one task. Side effects (provider construction, routing, the guarded call, sleeping, the clock)
    are parameters, so tests can replace what they must and keep the rest real."""

    ctx: Context
    make_provider: ProviderFactory = default_factory
    sleep: Callable[[float], None] = time.sleep
    router: Router | None = None  # default: the context's (ledger in SQL, breakers in the state Redis)
    guard: Guard | None = None  # default: the context's guarded call with ``sleep``
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    parked: ParkedAnswers | None = None  # default: answers waiting for the database park in the state Redis
    owns: Callable[[], bool] = lambda: True  # whether this run still holds the task's lease (tasks/lease.py)
    _router: Router = field(init=False)
    _guard: Guard = field(init=False)
    _parked: ParkedAnswers = field(init=False)
    _task: TaskInfo | None = field(default=None, init=False)
    _began: datetime | None = field(default=None, init=False)
    _assists: list[tuple[int, Answer]] = field(default_factory=list, init=False)  # stored, for a redelivery
    _last: int = field(default=0, init=False)  # the task's last attempt number (this run holds its lease)
    _last_cut: bool = field(default=False, init=False)  # that attempt was an answer cut short (Truncated)
    _claimed: list[Attempt] = field(default_factory=list, init=False)  # its attempts, as read by the claim
    _verdict: tuple[int, str] | None = field(default=None, init=False)  # (attempt, status) stored with the end
    _written: set[int] = field(default_factory=set, init=False)  # attempts whose row the hold's transaction wrote

    def __post_init__(self) -> None:
        self._router = self.router or self.ctx.router()
        self._guard = self.guard or self.ctx.guard(sleep=self.sleep)
        url = self.ctx.settings.effective_state_url
        self._parked = self.parked or self.ctx.part("parked", lambda: ParkedAnswers(connect_state(url)))

    def run(self, task_id: str, claimed: Claimed | None = None) -> str:
        """Run ``task_id`` to a terminal status and return it; raises :class:`Deferred` when it must wait.
        ``claimed``: the task and its attempts as claimed already, in the transaction that took its lease
        (:func:`tasks.claim.claim_in`); None claims it here."""
        self._began = self.now()
        # one transaction: the claim and the look at what a dead worker left (and the lease, when claimed)
        task, self._claimed = claimed if claimed is not None else claim_with_attempts(self.ctx, task_id)
        last = max(self._claimed, key=lambda a: a.attempt, default=None)
        self._last = 0 if last is None else last.attempt
        self._last_cut = last is not None and last.error_class == Truncated.__name__  # its retry holds the whole cap
        self._verdict = None
        self._written = set()
        if task is None:  # a redelivery of a finished task: make sure its follow-ups went out (idempotent)
            finished = finished_task(self.ctx, task_id)
            if finished is not None:
                self._after(*finished)
            return "finished already"
        self._task = task
        logs.clear()  # this thread's lines carry this task's fields now (switchyard/logs.py)
        logs.bind(task_id=task.id, kind=task.kind, environment=task.environment, stage=task.stage, group=task.group)
        try:
            route, outcome = self._work(task)
        except TakenOver:
            return self._taken_over(task)
        except ServiceUnavailable as exc:  # the ledger or the shared state is away: fail closed, try again soon
            self._defer(task, f"{type(exc).__name__}: {exc}", UNAVAILABLE_RETRY_S)
        except TaskFailed as exc:
            return self._finish(task, exc.status, str(exc), failures=exc.failures)
        except (ProviderError, PatchRejected) as exc:  # an assist call failed inside act: the task's problem
            return self._finish(task, "failed", f"{type(exc).__name__}: {exc}")
        except SwitchyardError as exc:
            return self._finish(task, "failed", f"{type(exc).__name__}: {exc}")
        return self._succeed(task, route, outcome)

    def _work(self, task: TaskInfo) -> tuple[Route, Outcome]:
        handler = HANDLERS[task.kind]
        resumed = recover(self.ctx, task, self._router.ledger, self._parked, self._claimed)
        self._assists = list(resumed.assists) if resumed else []
        if resumed:
            if resumed.outcome is not None:  # the outcome was stored with its verdict: finish from it
                return resumed.route, resumed.outcome
            route, outcome = self._act_on(task, resumed)
            if outcome is not None:
                return route, outcome
        else:
            wait = handler.gate(self.ctx, task)
            if wait:
                self._defer(task, wait, GATE_COUNTDOWN_S)
        return self._ladder(task, handler.prompt(self.ctx, task))

    # --- the ladder ------------------------------------------------------------------------------------

    def _ladder(self, task: TaskInfo, prompt: Prompt) -> tuple[Route, Outcome]:
        excluded: set[str] = set()
        waits: list[float] = []  # failures that waiting can cure: when to look again
        failures: list[str] = []
        full = False  # the whole output cap held: once an answer was cut short, for the one retry
        for _ in range(len(self.ctx.fleet.providers) + 2):  # one more for that retry
            number, cut = self._next(task)
            full = full or cut  # also after a deferral: the retry the budget had no room for yet
            decision = self._router.route(self._request(task, prompt, excluded, full), self._place(task, number))
            if isinstance(decision, Refusal):
                self._refuse(task, decision, failures, retry_in=min(waits) if waits else None)
            try:
                return decision, self._attempt(task, number, decision, prompt)
            except Truncated as exc:  # a route holding the whole cap never raises it: one retry, never a loop
                log.info("task %s attempt %s: %s", task.id, number, exc)
                full = True
            except (ProviderError, PatchRejected) as exc:
                if isinstance(exc, ModelNotFound):
                    self._router.mark_unusable(decision.provider, decision.model, f"{type(exc).__name__}: {exc}")
                excluded.add(decision.provider)
                self._router.forget_state()
                wait = recovery_wait(exc, self.ctx.fleet.limits.max_defer_countdown_s)
                if wait is not None:
                    waits.append(wait)
                failures.append(f"{decision.provider}: {type(exc).__name__}: {exc}")
        raise TaskFailed("no_provider", "every provider failed: " + "; ".join(failures), tuple(failures))

    def _request(self, task: TaskInfo, prompt: Prompt, excluded: set[str], full: bool = False) -> RouteRequest:
        return RouteRequest(
            kind=task.kind,
            group=task.group,
            environment=task.environment,
            stage=task.stage,
            prompt_chars=len(prompt.system) + len(prompt.prompt),
            excluded=frozenset(excluded),
            avoid=frozenset(task.request.avoid_providers),
            avoid_why=avoid_reasons(task),
            full_output=full,
        )

    def _place(self, task: TaskInfo, number: int) -> Place:
        """Where the attempt's money is held; the attempt's row (``running``) is written in the hold's
        transaction, so a held attempt always has its row and a refused one never has."""

        def begin(route: Route, conn: Connection) -> None:
            with session_on(conn) as session:
                _begin_attempt(session, task, number, route)
            self._written.add(number)

        return Place(task.id, number, task.group, task.environment, task.stage, begin=begin)

    def _next_number(self, task: TaskInfo) -> int:
        return self._last + 1

    def _next(self, task: TaskInfo) -> tuple[int, bool]:
        """The next attempt's number, and whether the last one was an answer cut short (:class:`Truncated`): both
        known since the claim read the task's attempts (no transaction of its own: the task's lease keeps every
        other run from writing one meanwhile)."""
        return self._last + 1, self._last_cut

    def _refuse(self, task: TaskInfo, refusal: Refusal, failures: list[str], *, retry_in: float | None) -> NoReturn:
        """Defer while the deadline allows it, else end the task with the refusal's status and reason.

        ``retry_in`` is when a provider that failed in this run may work again (the router counts a provider
        that already failed this run as out for good, so its hint comes from here)."""
        reason = refusal.reason + (f"; failed in this run: {'; '.join(failures)}" if failures else "")
        waits = [w for w in (refusal.retry_in_s, retry_in) if w is not None]
        deadline = (task.created_at or self.now()) + timedelta(seconds=self._deadline_s(task))
        if waits and self.now() + timedelta(seconds=min(waits)) < deadline:
            self._defer(task, reason, min(waits))
        raise TaskFailed(refusal.status, reason, tuple(failures))

    def _deadline_s(self, task: TaskInfo) -> int:
        return task.request.deadline_s if task.request.deadline_s is not None else self.ctx.fleet.limits.task_deadline_s

    def _defer(self, task: TaskInfo, reason: str, countdown_s: float) -> NoReturn:
        countdown = min(max(countdown_s, 1.0), float(self.ctx.fleet.limits.max_defer_countdown_s))
        with session_scope(self.ctx.database_url) as session:
            repo.set_deferred(session, task_id=task.id, reason=reason[:4000])
        log.info("task %s (%s) deferred %.0fs: %s", task.id, task.kind, countdown, reason)
        raise Deferred(reason, countdown)

    # --- one attempt -----------------------------------------------------------------------------------

    def _attempt(self, task: TaskInfo, number: int, route: Routed, prompt: Prompt) -> Outcome:
        answer = self._call(task, number, route, prompt)
        if not self.owns():  # the answer is stored: the worker that took the task over acts on it, not this one
            raise TakenOver(task.id)
        return self._judge(task, number, answer)

    def _taken_over(self, task: TaskInfo) -> str:
        log.error("task %s: another worker took it over (this run lost its lease); this run stops here", task.id)
        return "taken over"

    def _act_on(self, task: TaskInfo, resumed: Resumed) -> tuple[Route, Outcome | None]:
        """Act again on the answer a dead worker stored (no second call, no second charge)."""
        number, route, answer = resumed.number, resumed.route, resumed.answer
        try:
            return route, self._judge(task, number, answer)
        except (BadAnswer, PatchRejected):
            return route, None  # unusable after all: the ladder goes on from the next attempt

    def _judge(self, task: TaskInfo, number: int, answer: Answer) -> Outcome:
        try:
            outcome = HANDLERS[task.kind].act(self.ctx, task, answer, self)
        except SwitchyardError as exc:  # unusable answers move to the next rung; the rest end the task
            self._mark(task, number, "failed", exc)
            raise
        answered = outcome.status in ("succeeded", LANDING)  # a plan whose sub-tasks were submitted: answered well
        verdict = "succeeded" if answered else "failed"
        if self.owns():  # stored with the task's end, in one transaction (_succeed, _park)
            self._verdict = (number, verdict)
        else:  # the run that took the task over finishes from the stored outcome
            self._mark(task, number, verdict, None, outcome)
        return outcome

    def _call(self, task: TaskInfo, number: int, route: Routed, prompt: Prompt) -> Answer:
        request, provider = self._prepare(task, number, route, prompt)
        tries = TryLog(self.ctx.database_url, task.id, number, route.provider, self.now)
        logs.bind(provider=route.provider, attempt=number)
        try:
            with traces.span("call", provider=route.provider, model=route.model, attempt=number) as span:
                response = self._guard(route.provider, tries.wrap(lambda: provider.call(request)), route.permit)
                _annotate_call(span, priced(self.ctx.fleet, route, response, self.now().date()))
        except ProviderError as exc:
            self._close_failed(task, number, exc)
            raise
        finally:
            if self.make_provider is not default_factory:  # the default's clients live as long as the process
                provider.close()
        try:
            self._charge(task, number, route, response, tries)
        finally:
            self.ctx.breakers().flush()  # the success verdict, sent when the call answered, has arrived by now
        limit = request.max_output_tokens
        if response.cut_short and route.transport == "api" and limit < self._cap(task):
            truncated = Truncated(route.provider, limit)
            self._mark(task, number, "failed", truncated)
            raise truncated
        return Answer(response.text, route.provider, route.model, route.transport, request.workdir)

    def _prepare(self, task: TaskInfo, number: int, route: Routed, prompt: Prompt) -> tuple[ProviderRequest, Provider]:
        """The provider request, the attempt's row (``calling``) and the client, before the call. When any of it
        fails no call is made: the route's permit and hold go back at once (not when the lease runs out or the
        sweeper comes), and a row already written is closed as failed."""
        begun = number in self._written  # with the hold (see _place); a router without a ledger of ours: here
        if begun:
            self._last = max(self._last, number)
        try:
            request = self._provider_request(task, route, prompt)
            if not begun:
                with session_scope(self.ctx.database_url) as session:
                    _begin_attempt(session, task, number, route)
                begun = True
                self._last = max(self._last, number)
            return request, self.make_provider(route.provider, self.ctx, route.transport)
        except BaseException as exc:
            route.cancel()
            with suppress(SwitchyardError):  # a ledger that is away leaves the hold to the sweeper
                self._router.ledger.release(task_id=task.id, attempt=number, reason=f"no call: {type(exc).__name__}")
            if begun and isinstance(exc, Exception):
                self._mark(task, number, "failed", exc)
            raise

    def _provider_request(self, task: TaskInfo, route: Route, prompt: Prompt) -> ProviderRequest:
        handler = HANDLERS[task.kind]
        workdir = handler.workdir(self.ctx, task) if route.transport == "cli" else None
        return ProviderRequest(
            model=route.model,
            system=prompt.system,
            prompt=prompt.prompt,
            max_output_tokens=route.max_output_tokens or self._cap(task),
            timeout_s=self.ctx.fleet.limits.provider_timeout_s,
            metadata={"task_id": task.id, "kind": task.kind},
            workdir=workdir,
            environment=task.environment,
            max_cost_usd=route.max_cost_micros / 1_000_000,
        )

    def _cap(self, task: TaskInfo) -> int:
        return self.ctx.fleet.kind(task.kind).max_output_tokens

    def _close_failed(self, task: TaskInfo, number: int, exc: ProviderError) -> None:
        """A call that failed: its hold released (or, when an agent spent it before stopping, settled), then
        the attempt closed; both kept trying while the database is away (:mod:`tasks.storing`)."""
        ledger, keeper = self._router.ledger, self._keeper()
        if isinstance(exc, HoldExceeded):  # the agent spent its hold before stopping: that money is gone
            spent = round(exc.cost_usd * 1_000_000)
            keeper.keep(
                lambda: ledger.settle(task_id=task.id, attempt=number, charged_micros=spent, price_version="reported")
            )
        else:
            keeper.keep(lambda: ledger.release(task_id=task.id, attempt=number, reason=type(exc).__name__))
        keeper.keep(lambda: self._mark(task, number, "failed", exc))

    def _charge(
        self, task: TaskInfo, number: int, route: Route, response: ProviderResponse, tries: TryLog | None = None
    ) -> None:
        """Store the answer, its cost and the try that got it first, then settle the hold: a worker that dies in
        between leaves an answered attempt, and the redelivery settles it (see :func:`tasks.claim.recover`).
        While the database is away the answer waits, parked in the state Redis too (:mod:`tasks.storing`)."""
        answer = priced(self.ctx.fleet, route, response, self.now().date())
        also = tries.write_pending if tries is not None else None
        self._keeper().store_answer(task.id, number, answer, self._router.ledger, also=also)

    def _keeper(self) -> Keeper:
        began = self._began or self.now()
        return Keeper(self.ctx.database_url, self.ctx.fleet.limits, self._parked, began, self.now, self.sleep)

    def _mark(
        self, task: TaskInfo, number: int, status: str, exc: Exception | None, outcome: Outcome | None = None
    ) -> None:
        """Close the attempt; the usage and cost recorded when it was answered stay as they were. An outcome is
        stored with the verdict (the task's result row), so a redelivery finishes from it without acting again."""
        with session_scope(self.ctx.database_url) as session:
            repo.finish_attempt(
                session,
                task_id=task.id,
                attempt=number,
                status=status,
                error_class=type(exc).__name__ if exc else None,
                error=str(exc)[:2000] if exc else None,
            )
            if outcome is not None:
                store_outcome(session, task, outcome)
                if outcome.rows is not None:
                    outcome.rows(session)

    # --- assist: a handler's follow-up question inside the task ----------------------------------------

    def ask(self, provider: str, prompt: Prompt) -> Answer:
        """One more routed attempt on ``provider`` (held, guarded, settled); its answer is the handler's."""
        task = self._task
        if task is None:
            raise RuntimeError("Runner.ask is only valid while a task runs (from a handler's act)")
        if self._assists and self._assists[0][1].provider == provider:  # asked before the worker died: answered
            number, stored = self._assists.pop(0)
            self._mark(task, number, "succeeded", None)
            return stored
        for full in (False, True):  # an answer cut short is asked once more with the whole output cap held
            number = self._next_number(task)
            request = self._request(task, prompt, set(), full)
            decision = self._router.route(request, self._place(task, number), only=provider)
            if isinstance(decision, Refusal):
                raise ProviderError(f"{provider} cannot answer now: {decision.reason}", provider=provider)
            try:
                answer = self._call(task, number, decision, prompt)
            except Truncated as exc:
                log.info("task %s attempt %s: %s", task.id, number, exc)
                continue
            self._mark(task, number, "succeeded", None)
            return answer
        raise AssertionError("unreachable: a route holding the whole output cap is never cut short")

    # --- the end -------------------------------------------------------------------------------------------

    def _store_verdict(self, session: Session, task: TaskInfo, outcome: Outcome) -> None:
        """The verdict :meth:`_judge` left for the end, with the outcome (the task's result row)."""
        if self._verdict is not None:
            number, status = self._verdict
            repo.finish_attempt(session, task_id=task.id, attempt=number, status=status)
            store_outcome(session, task, outcome)
            if outcome.rows is not None:
                outcome.rows(session)
            self._verdict = None

    def _succeed(self, task: TaskInfo, route: Route, outcome: Outcome) -> str:
        if not self.owns():
            if self._verdict is not None:  # the new owner finishes from the stored outcome
                with session_scope(self.ctx.database_url) as session:
                    self._store_verdict(session, task, outcome)
            return self._taken_over(task)
        if outcome.status == LANDING:
            return self._park(task, route, outcome)
        done, stored = False, self._verdict is not None
        with session_scope(self.ctx.database_url) as session:
            self._store_verdict(session, task, outcome)  # verdict, result row and terminal status: both or neither
            finished = repo.finish_task(
                session,
                task_id=task.id,
                status=outcome.status,
                provider=route.provider,
                model=route.model,
                transport=route.transport,
                reason=None if outcome.status == "succeeded" else outcome.summary,
            )
            if finished:  # not when it was ended meanwhile (cancelled: tasks/actions.py)
                if not stored:  # finishing from an outcome stored before (a redelivery): the row is there
                    store_outcome(session, task, outcome)
                done = self._followed_up(session, task, outcome.status, outcome)
        if not finished:
            return self._ended_meanwhile(task)
        log.info("task %s (%s) %s on %s: %s", task.id, task.kind, outcome.status, route.provider, outcome.summary)
        if not done:
            self._after(task, outcome.status, outcome)
        return outcome.status

    def _followed_up(self, session: Session, task: TaskInfo, status: str, outcome: Outcome | None) -> bool:
        """In the transaction of the terminal status: when nothing follows the task, its follow-ups are done
        there (the outbox's row marked sent), with no transaction after it; True then."""
        if not pipeline.nothing_follows(self.ctx, session, task, status, outcome):
            return False
        outbox.mark_sent(session, task_id=task.id, action=outbox.FOLLOW_UPS)
        return True

    def _park(self, task: TaskInfo, route: Route, outcome: Outcome) -> str:
        """A plan whose sub-tasks are submitted: it waits for them to land, and ends in tasks/plans.py."""
        with session_scope(self.ctx.database_url) as session:
            self._store_verdict(session, task, outcome)
            store_outcome(session, task, outcome, status="running")
            parked = rows.park_plan(
                session, task_id=task.id, provider=route.provider, model=route.model, transport=route.transport
            )
        log.info("task %s (%s) waits for its sub-tasks to land: %s", task.id, task.kind, outcome.summary)
        if parked and update_plan(self.ctx, task.id):  # a redelivery may find them landed already
            pipeline.after_terminal(self.ctx, task, "succeeded", None)
        return "deferred"

    def _finish(self, task: TaskInfo, status: str, reason: str, *, failures: tuple[str, ...] = ()) -> str:
        if not self.owns():
            return self._taken_over(task)
        with session_scope(self.ctx.database_url) as session:
            finished = repo.finish_task(session, task_id=task.id, status=status, reason=reason[:4000])
            if finished and failures:  # with the terminal status: both or neither
                alerts.record(session, **failed_alert(task, status, failures), now=self.now())
            done = finished and self._followed_up(session, task, status, None)
        if not finished:
            return self._ended_meanwhile(task)
        log.warning("task %s (%s) %s: %s", task.id, task.kind, status, reason)
        if not done:
            self._after(task, status, None)
        return status

    def _ended_meanwhile(self, task: TaskInfo) -> str:
        """The task was given its terminal status by someone else while this run acted (a cancel): its
        follow-ups are not this run's to make."""
        log.warning("task %s (%s) ended while it ran (cancelled?); this run's outcome is not used", task.id, task.kind)
        return "taken over"

    def _after(self, task: TaskInfo, status: str, outcome: Outcome | None) -> None:
        try:
            pipeline.after_terminal(self.ctx, task, status, outcome)
        except Exception:  # the task's status is committed; a follow-up that failed is logged, not hidden
            log.exception("follow-ups of task %s (%s) failed", task.id, task.kind)


def failed_alert(task: TaskInfo, status: str, failures: tuple[str, ...]) -> dict[str, Any]:
    """The alert row of a task that failed on every rung it could reach (one per task)."""
    rungs = "; ".join(failures)
    return {
        "cause": alerts.TASK_FAILED,
        "key": f"{alerts.TASK_FAILED}:{task.id}",
        "title": f"Task {task.id[:8]} ({task.kind}, {task.environment}) failed on every rung",
        "body": f"{status}: {rungs}"[:4000] + f". `switchyard tasks show {task.id[:8]}` has each attempt.",
        "payload": {
            "task_id": task.id,
            "kind": task.kind,
            "environment": task.environment,
            "status": status,
            "group": task.group,
            "failures": list(failures),
        },
    }


def avoid_reasons(task: TaskInfo) -> tuple[tuple[str, str], ...]:
    """Why each provider the task avoids is avoided, in words for the refusal reason."""
    request = task.request
    reasons = []
    for name in request.avoid_providers:
        if task.kind == "pr_review" and name == request.implementer:
            reasons.append((name, "the implementer of the PR under review (a review is by another provider)"))
        else:
            reasons.append((name, "the task's avoid_providers (--avoid) name it"))
    return tuple(reasons)


def _annotate_call(span: Span, answer: ParkedAnswer) -> None:
    usage = answer.usage
    traces.annotate(
        span,
        transport=answer.transport,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=answer.cost_micros / 1_000_000,
        price_version=answer.price_version,
    )


def run_task(
    task_id: str, ctx: Context, *, owns: Callable[[], bool] = lambda: True, claimed: Claimed | None = None
) -> str:
    return Runner(ctx, owns=owns).run(task_id, claimed)


def _begin_attempt(session: Session, task: TaskInfo, number: int, route: Route) -> None:
    """The attempt's row (``running``), with the rungs the router passed over and why."""
    repo.begin_attempt(
        session,
        task_id=task.id,
        attempt=number,
        provider=route.provider,
        model=route.model,
        transport=route.transport,
        route_note="; ".join(route.passed_over) or None,
    )
