"""Claude Code headless (``claude -p --output-format json``) as the ``cli`` transport of Claude.

The agent works in the task's worktree with ``--permission-mode acceptEdits``: it edits files there
without asking, and any tool that would need a prompt (a shell command outside the allowed set) is refused
instead of waited on, since nobody answers prompts in ``-p`` mode. ``bypassPermissions`` would also run any
shell command, and Claude Code refuses it when run as root (as in most containers).

``--max-budget-usd`` carries the attempt's hold: Claude Code stops at it and reports
``subtype: error_max_budget_usd`` with what it spent (:class:`HoldExceeded`). ``CLAUDE_CODE_MAX_RETRIES=0``
keeps tenacity the one retry loop. Usage comes from ``modelUsage`` summed over models when present (it is
filled even when the run stopped at the budget, where ``usage`` is zeros), else from ``usage``; both count
input tokens without cached ones, as :mod:`providers.base` wants. The cost is Claude Code's
``total_cost_usd``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
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
    last_lines,
    require_hold,
    require_workdir,
    run_cli,
)
from providers.http_errors import error_for_status, scrub, transport_error
from switchyard.errors import BadAnswer, HoldExceeded, ProviderError, TransientError
from switchyard.usage import Usage

Json = dict[str, Any]
PERMISSION_MODE = "acceptEdits"


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _from_model_usage(models: Mapping[str, Any]) -> Usage:
    totals: dict[str, int] = {}
    for counts in models.values():
        if isinstance(counts, dict):
            for key in counts:
                totals[key] = totals.get(key, 0) + _int(counts, key)
    written = totals.get("cacheCreationInputTokens", 0)
    one_hour = totals.get("cacheCreationEphemeral1hInputTokens", 0)
    return Usage(
        input_tokens=totals.get("inputTokens", 0),
        cached_input_tokens=totals.get("cacheReadInputTokens", 0),
        cache_write_tokens=max(written - one_hour, 0),
        cache_write_1h_tokens=one_hour,
        output_tokens=totals.get("outputTokens", 0),
        reasoning_tokens=totals.get("thinkingTokens", 0),
    )


def _from_usage(usage: Mapping[str, Any]) -> Usage:
    split = usage.get("cache_creation")
    one_hour = _int(split, "ephemeral_1h_input_tokens") if isinstance(split, dict) else 0
    details = usage.get("output_tokens_details")
    return Usage(
        input_tokens=_int(usage, "input_tokens"),
        cached_input_tokens=_int(usage, "cache_read_input_tokens"),
        cache_write_tokens=max(_int(usage, "cache_creation_input_tokens") - one_hour, 0),
        cache_write_1h_tokens=one_hour,
        output_tokens=_int(usage, "output_tokens"),
        reasoning_tokens=_int(details, "thinking_tokens") if isinstance(details, dict) else 0,
    )


def normalize_usage(result: Mapping[str, Any]) -> Usage:
    """The session's usage from the final ``result`` message, normalized as :mod:`providers.base` says."""
    models = result.get("modelUsage")
    if isinstance(models, dict) and models:
        return _from_model_usage(models)
    usage = result.get("usage")
    return _from_usage(usage) if isinstance(usage, dict) else Usage()


def parse_result(stdout: str) -> Json | None:
    """The final ``{"type": "result", ...}`` object, or None when the output holds none."""
    for text in (stdout, *reversed(stdout.splitlines())):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("type") == "result":
            return data
    return None


def _cost(result: Mapping[str, Any]) -> float:
    value = result.get("total_cost_usd")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class ClaudeCliProvider:
    """Runs ``claude -p`` once per call; the prompt goes in on stdin, the system text as an appended prompt."""

    name = "claude"
    transport = "cli"

    def __init__(
        self,
        *,
        executable: str,
        data_dir: Path,
        base_url: str | None,
        api_key: str,
        path: str,
        runner: CliRunner = run_cli,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executable, self.data_dir, self.base_url = executable, data_dir, base_url
        self._api_key, self._path = api_key, path
        self._runner, self._monotonic = runner, monotonic

    def __repr__(self) -> str:
        return f"ClaudeCliProvider(executable={self.executable!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Nothing stays open between calls: each one is its own process."""

    def argv(self, request: ProviderRequest, hold_usd: float) -> list[str]:
        args = [self.executable, "-p", "--output-format", "json", "--model", request.model]
        args += ["--max-budget-usd", f"{hold_usd:.6f}", "--permission-mode", PERMISSION_MODE]
        return args + (["--append-system-prompt", request.system] if request.system else [])

    def env(self, request: ProviderRequest) -> dict[str, str]:
        dirs = agent_dirs(self.data_dir, self.name, request.environment)
        env = base_env(self._path, dirs)
        env.update(
            CLAUDE_CONFIG_DIR=str(dirs.config),
            ANTHROPIC_API_KEY=self._api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            CLAUDE_CODE_MAX_RETRIES="0",
            DISABLE_AUTOUPDATER="1",
        )
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        return env

    def call(self, request: ProviderRequest) -> ProviderResponse:
        started = self._monotonic()
        workdir, hold = require_workdir(request, self.name), require_hold(request, self.name)
        command = CliCommand(
            provider=self.name,
            argv=self.argv(request, hold),
            env=self.env(request),
            cwd=workdir,
            stdin=request.prompt,
            timeout_s=request.timeout_s,
        )
        lines, keep = last_lines()
        outcome = self._runner(command, keep)
        result = parse_result("\n".join(lines))
        if result is None:
            raise self._no_result(outcome, "\n".join(lines), request.timeout_s)
        if result.get("is_error") or result.get("subtype") != "success":
            raise self._error(result, hold)
        return ProviderResponse(
            provider=self.name,
            model=request.model,
            transport=self.transport,
            text=str(result.get("result") or ""),
            usage=normalize_usage(result),
            latency_ms=(self._monotonic() - started) * 1000,
            stop_reason=str(result.get("stop_reason") or result.get("subtype")),
            response_id=str(result.get("session_id") or "") or None,
            reported_cost_usd=_cost(result),
        )

    def _no_result(self, outcome: CliOutcome, stdout: str, timeout_s: float) -> ProviderError:
        if outcome.timed_out:
            return transport_error(self.name, "the claude CLI was stopped: no result", timeout_s)
        if outcome.returncode != 0:
            return exit_error(self.name, outcome, self._api_key)
        shown = scrub(stdout.strip()[-500:], self._api_key) or "(nothing)"
        return BadAnswer(f"{self.name}: the claude CLI printed no JSON result; its output ended with: {shown}")

    def _error(self, result: Mapping[str, Any], hold: float) -> ProviderError:
        subtype, cost = result.get("subtype"), _cost(result)
        message = scrub(str(result.get("result") or result.get("errors") or subtype), self._api_key)
        if subtype == "error_max_budget_usd":
            return HoldExceeded(
                f"{self.name}: the claude CLI stopped at the attempt's hold of ${hold:.6f} after spending ${cost:.6f}",
                provider=self.name,
                cost_usd=cost,
            )
        status = result.get("api_error_status")
        if isinstance(status, int):
            return error_for_status(status, message, provider=self.name)
        if subtype == "error_max_turns":
            return BadAnswer(f"{self.name}: the claude CLI ran out of turns: {message}", provider=self.name)
        return TransientError(f"{self.name}: the claude CLI failed ({subtype}): {message}", provider=self.name)
