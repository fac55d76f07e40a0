"""The Codex CLI (``codex exec --json``) as the ``cli`` transport of Codex.

Codex always talks to a ``switchyard`` model provider defined with ``-c`` overrides: the simulator's or
the configured base URL (``https://api.openai.com/v1`` by default), the key from ``OPENAI_API_KEY`` in the
child's environment (never argv), the Responses wire API, and no retries of its own (tenacity is the one
loop). The system text goes in as ``developer_instructions``, the prompt on stdin. ``--sandbox
workspace-write`` lets it edit the worktree (``-C``); ``codex exec`` never asks for approval, and
``approval_policy="never"`` says so explicitly.

Codex reports no cost, so the JSONL stream is read as it arrives: ``turn.completed`` usages are summed
(its ``input_tokens`` include ``cached_input_tokens``; normalized as :mod:`providers.base` says), priced
with the fleet's price of the day, and the run is stopped (its process group killed) as soon as that cost
passes the attempt's hold: :class:`HoldExceeded`. The answer is the last ``agent_message``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from providers.base import ProviderRequest, ProviderResponse
from providers.cli_common import (
    CliCommand,
    CliOutcome,
    CliRunner,
    agent_dirs,
    base_env,
    exit_error,
    require_hold,
    require_workdir,
    run_cli,
)
from providers.http_errors import error_for_status, scrub, transport_error
from switchyard.errors import BadAnswer, HoldExceeded, ProviderError, TransientError
from switchyard.fleet import Price
from switchyard.pricing import cost_micros
from switchyard.usage import Usage

OPENAI_URL = "https://api.openai.com/v1"
KEY_VARIABLE = "OPENAI_API_KEY"
STATUS_RE = re.compile(r"status:? (\d{3})\b")
PriceOf = Callable[[str], Price]  # model -> the price in force today


def turn_usage(usage: dict[str, Any]) -> Usage:
    """One ``turn.completed`` usage: cached tokens move out of ``input_tokens``; reasoning stays in output."""

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cached = count("cached_input_tokens")
    return Usage(
        input_tokens=max(count("input_tokens") - cached, 0),
        cached_input_tokens=cached,
        output_tokens=count("output_tokens"),
        reasoning_tokens=count("reasoning_output_tokens"),
    )


def add(total: Usage, more: Usage) -> Usage:
    return replace(
        total,
        input_tokens=total.input_tokens + more.input_tokens,
        cached_input_tokens=total.cached_input_tokens + more.cached_input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        reasoning_tokens=total.reasoning_tokens + more.reasoning_tokens,
    )


@dataclass
class CodexRun:
    """What the JSONL stream said so far. :meth:`feed` returns True when the run must stop (over the hold)."""

    price: Price
    hold_micros: int
    usage: Usage = field(default_factory=Usage)
    text: str | None = None
    thread_id: str | None = None
    completed: bool = False
    failure: str | None = None
    last_error: str | None = None

    @property
    def cost_micros(self) -> int:
        return cost_micros(self.usage, self.price)

    def feed(self, line: str) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return False  # a stray line of text: Codex's events are the JSON ones
        if not isinstance(event, dict):
            return False
        self._apply(event)
        return self.cost_micros > self.hold_micros

    def _apply(self, event: dict[str, Any]) -> None:
        kind, item = event.get("type"), event.get("item")
        if kind == "thread.started":
            self.thread_id = str(event.get("thread_id") or "") or None
        elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
            self.usage, self.completed = add(self.usage, turn_usage(event["usage"])), True
        elif kind == "turn.failed":
            error = event.get("error")
            self.failure = str(error.get("message") if isinstance(error, dict) else error)
        elif kind == "error":  # also sent while Codex reconnects on its own: fatal only with turn.failed
            self.last_error = str(event.get("message"))
        elif kind == "item.completed" and isinstance(item, dict) and item.get("type") == "agent_message":
            self.text = str(item.get("text") or "")


class CodexCliProvider:
    """Runs ``codex exec --json`` once per call and stops it once its reported usage passes the hold."""

    name = "codex"
    transport = "cli"

    def __init__(
        self,
        *,
        executable: str,
        data_dir: Path,
        base_url: str | None,
        api_key: str,
        path: str,
        price_of: PriceOf,
        runner: CliRunner = run_cli,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executable, self.data_dir, self.base_url = executable, data_dir, base_url or OPENAI_URL
        self._api_key, self._path, self._price_of = api_key, path, price_of
        self._runner, self._monotonic = runner, monotonic

    def __repr__(self) -> str:
        return f"CodexCliProvider(executable={self.executable!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Nothing stays open between calls: each one is its own process."""

    def argv(self, request: ProviderRequest, workdir: Path) -> list[str]:
        provider = {
            "name": "switchyard",
            "base_url": self.base_url,
            "wire_api": "responses",
            "env_key": KEY_VARIABLE,
            "request_max_retries": 0,
            "stream_max_retries": 0,
        }
        overrides = ['model_provider="switchyard"', 'approval_policy="never"']
        overrides += [f"model_providers.switchyard.{key}={json.dumps(value)}" for key, value in provider.items()]
        if request.system:
            overrides.append(f"developer_instructions={json.dumps(request.system)}")
        args = [self.executable, "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write"]
        args += ["-C", str(workdir), "-m", request.model]
        for override in overrides:
            args += ["-c", override]
        return [*args, "-"]  # the prompt is read from stdin

    def env(self, request: ProviderRequest) -> dict[str, str]:
        dirs = agent_dirs(self.data_dir, self.name, request.environment)
        return {**base_env(self._path, dirs), "CODEX_HOME": str(dirs.config), KEY_VARIABLE: self._api_key}

    def call(self, request: ProviderRequest) -> ProviderResponse:
        started = self._monotonic()
        workdir, hold = require_workdir(request, self.name), require_hold(request, self.name)
        run = CodexRun(price=self._price_of(request.model), hold_micros=round(hold * 1_000_000))
        command = CliCommand(
            provider=self.name,
            argv=self.argv(request, workdir),
            env=self.env(request),
            cwd=workdir,
            stdin=request.prompt,
            timeout_s=request.timeout_s,
        )
        outcome = self._runner(command, run.feed)
        failure = self._failure(run, outcome, hold, request.timeout_s)
        if failure is not None:
            raise failure
        return ProviderResponse(
            provider=self.name,
            model=request.model,
            transport=self.transport,
            text=run.text or "",
            usage=run.usage,
            latency_ms=(self._monotonic() - started) * 1000,
            stop_reason="completed",
            response_id=run.thread_id,
        )

    def _failure(self, run: CodexRun, outcome: CliOutcome, hold: float, timeout_s: float) -> ProviderError | None:
        if outcome.stopped:
            cost = run.cost_micros / 1_000_000
            return HoldExceeded(
                f"{self.name}: the codex CLI was stopped at the attempt's hold of ${hold:.6f}: its reported "
                f"usage ({run.usage.total_tokens} tokens) already cost ${cost:.6f}",
                provider=self.name,
                cost_usd=cost,
            )
        if run.failure is not None:
            return self._turn_failed(run.failure)
        if run.completed and run.text is not None:
            return None
        return self._ended_early(run, outcome, timeout_s)

    def _ended_early(self, run: CodexRun, outcome: CliOutcome, timeout_s: float) -> ProviderError:
        """No failed turn, but no completed one with an answer either."""
        if outcome.timed_out:
            return transport_error(self.name, "the codex CLI was stopped before its turn completed", timeout_s)
        if outcome.returncode != 0:
            if run.last_error:
                return TransientError(f"{self.name}: {scrub(run.last_error, self._api_key)}", provider=self.name)
            return exit_error(self.name, outcome, self._api_key)
        return BadAnswer(f"{self.name}: the codex CLI finished without an agent message", provider=self.name)

    def _turn_failed(self, message: str) -> ProviderError:
        message = scrub(message, self._api_key)
        status = STATUS_RE.search(message)
        if status is not None:
            return error_for_status(int(status.group(1)), message, provider=self.name)
        return TransientError(f"{self.name}: the codex turn failed: {message}", provider=self.name)
