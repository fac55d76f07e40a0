"""The shared attempt loop every task kind runs, from claiming the task to its one terminal status.

For each rung of the group's ladder (one attempt per rung, numbered from 1): skip a provider that is not
configured, reuse a stored answer when the task was redelivered (no second call, no second charge), else call
the provider under the tenacity retry policy, charge the real usage at the price in force, and let the kind's
handler act on the answer. An unusable answer moves to the next rung; a task-level failure ends the task.
The full router (budgets, breakers, holds) replaces :func:`choose_rungs` later without changing this shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from providers.base import Provider, ProviderRequest, ProviderResponse
from providers.registry import available, build_provider
from routing.pricing import cost_micros
from routing.retry import call_with_retry
from store import repo
from store.db import session_scope
from store.models import Environment
from switchyard.errors import BadAnswer, PatchRejected, ProviderError, RequestRejected, SwitchyardError
from tasks.context import Context
from tasks.kinds import HANDLERS
from tasks.kinds.base import Answer, Outcome, Prompt, TaskInfo
from tasks.schemas import SubmitRequest

log = logging.getLogger(__name__)
ProviderFactory = Callable[[str, Context], Provider]


class TaskFailed(SwitchyardError):
    """Ends the task with ``status`` and the reason; raised inside the loop only."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Rung:
    number: int
    provider: str
    model: str
    transport: str = "api"


@dataclass
class Runner:
    """Runs one task. Side effects (provider construction, sleeping) are parameters for tests."""

    ctx: Context
    make_provider: ProviderFactory = lambda name, ctx: build_provider(name, ctx.settings, ctx.fleet)
    sleep: Callable[[float], None] = time.sleep

    def run(self, task_id: str) -> str:
        """Run ``task_id`` to a terminal status and return it (or the status it already had)."""
        task = self._claim(task_id)
        if task is None:
            return "finished already"
        handler = HANDLERS[task.kind]
        try:
            prompt = handler.prompt(self.ctx, task)
            rung, outcome = self._ladder(task, prompt)
        except TaskFailed as exc:
            return self._finish(task, exc.status, str(exc))
        except SwitchyardError as exc:
            return self._finish(task, "failed", f"{type(exc).__name__}: {exc}")
        return self._succeed(task, rung, outcome)

    def _claim(self, task_id: str) -> TaskInfo | None:
        with session_scope(self.ctx.database_url) as session:
            row = repo.claim_task(session, task_id=task_id)
            if row is None:
                return None
            env = session.get(Environment, row.environment)
            workspace = Path(env.path).parent if env else self.ctx.settings.workspace_dir
            request = SubmitRequest.model_validate(row.payload)
            return TaskInfo(row.id, row.kind, row.group, row.environment, row.stage, request, workspace)

    def ask(self, provider: str, prompt: Prompt) -> Answer:
        raise NotImplementedError("assist is wired by the router")

    def choose_rungs(self, task: TaskInfo) -> tuple[list[Rung], list[str]]:
        """The ladder's providers that can be used now, and why the others were passed over."""
        group = self.ctx.fleet.group(task.group)
        rungs, skipped = [], []
        for number, name in enumerate(group.ladder, start=1):
            reason = available(name, self.ctx.settings)
            if reason:
                skipped.append(f"{name}: {reason}")
            else:
                rungs.append(Rung(number, name, self.ctx.fleet.model_for(group, name)))
        return rungs, skipped

    def _ladder(self, task: TaskInfo, prompt: Prompt) -> tuple[Rung, Outcome]:
        rungs, reasons = self.choose_rungs(task)
        for rung in rungs:
            try:
                return rung, self._attempt(task, rung, prompt)
            except (ProviderError, PatchRejected) as exc:
                if isinstance(exc, RequestRejected):
                    raise TaskFailed("failed", f"{rung.provider} rejected the request: {exc}") from None
                reasons.append(f"{rung.provider}: {type(exc).__name__}: {exc}")
        raise TaskFailed("no_provider", "no provider could serve the task: " + "; ".join(reasons or ["empty ladder"]))

    def _attempt(self, task: TaskInfo, rung: Rung, prompt: Prompt) -> Outcome:
        with session_scope(self.ctx.database_url) as session:
            stored = repo.stored_attempt(session, task_id=task.id, attempt=rung.number)
            if stored is not None and stored.status == "failed":
                raise BadAnswer(stored.error or "failed before", provider=rung.provider)
            answer = stored.answer if stored is not None else None
        if answer is None:
            answer = self._call(task, rung, prompt)
        try:
            reply = Answer(answer, rung.provider, rung.model, rung.transport)
            outcome = HANDLERS[task.kind].act(self.ctx, task, reply, self)
        except SwitchyardError as exc:  # unusable answers move to the next rung; the rest end the task
            self._mark(task, rung, "failed", exc)
            raise
        self._mark(task, rung, "succeeded" if outcome.status == "succeeded" else "failed", None)
        return outcome

    def _call(self, task: TaskInfo, rung: Rung, prompt: Prompt) -> str:
        kind = self.ctx.fleet.kind(task.kind)
        request = ProviderRequest(
            model=rung.model,
            system=prompt.system,
            prompt=prompt.prompt,
            max_output_tokens=kind.max_output_tokens,
            timeout_s=self.ctx.fleet.limits.provider_timeout_s,
            metadata={"task_id": task.id, "kind": task.kind},
        )
        with session_scope(self.ctx.database_url) as session:
            repo.begin_attempt(
                session,
                task_id=task.id,
                attempt=rung.number,
                provider=rung.provider,
                model=rung.model,
                transport=rung.transport,
            )
        provider = self.make_provider(rung.provider, self.ctx)
        try:
            response = call_with_retry(lambda: provider.call(request), self.ctx.fleet.retry, sleep=self.sleep)
        except ProviderError as exc:
            self._mark(task, rung, "failed", exc)
            raise
        finally:
            provider.close()
        self._charge(task, rung, response)
        return response.text

    def _charge(self, task: TaskInfo, rung: Rung, response: ProviderResponse) -> None:
        version, price = self.ctx.fleet.price(rung.provider, rung.model, datetime.now(UTC).date())
        cost = cost_micros(response.usage, price)
        with session_scope(self.ctx.database_url) as session:
            repo.record_charge(
                session,
                task_id=task.id,
                attempt=rung.number,
                provider=rung.provider,
                model=rung.model,
                group=task.group,
                environment=task.environment,
                stage=task.stage,
                charged_micros=cost,
                price_version=version,
            )
            repo.finish_attempt(
                session,
                task_id=task.id,
                attempt=rung.number,
                status="answered",
                usage=response.usage,
                cost_micros=cost,
                price_version=version,
                answer=response.text,
                latency_ms=response.latency_ms,
            )

    def _mark(self, task: TaskInfo, rung: Rung, status: str, exc: Exception | None) -> None:
        """Close the attempt; the usage and cost recorded when it was answered stay as they were."""
        with session_scope(self.ctx.database_url) as session:
            repo.finish_attempt(
                session,
                task_id=task.id,
                attempt=rung.number,
                status=status,
                error_class=type(exc).__name__ if exc else None,
                error=str(exc)[:2000] if exc else None,
            )

    def _succeed(self, task: TaskInfo, rung: Rung, outcome: Outcome) -> str:
        with session_scope(self.ctx.database_url) as session:
            repo.upsert_result(
                session,
                environment=task.environment,
                stage=task.stage,
                task_id=task.id,
                kind=task.kind,
                status=outcome.status,
                summary=outcome.summary,
                data=outcome.data,
            )
            repo.finish_task(
                session,
                task_id=task.id,
                status=outcome.status,
                provider=rung.provider,
                model=rung.model,
                transport=rung.transport,
                reason=None if outcome.status == "succeeded" else outcome.summary,
            )
        log.info("task %s (%s) %s on %s: %s", task.id, task.kind, outcome.status, rung.provider, outcome.summary)
        return outcome.status

    def _finish(self, task: TaskInfo, status: str, reason: str) -> str:
        with session_scope(self.ctx.database_url) as session:
            repo.finish_task(session, task_id=task.id, status=status, reason=reason[:4000])
        log.warning("task %s (%s) %s: %s", task.id, task.kind, status, reason)
        return status


def run_task(task_id: str, ctx: Context) -> str:
    return Runner(ctx).run(task_id)
