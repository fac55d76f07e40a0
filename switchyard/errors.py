"""Every error Switchyard raises, in one tree, classified by what the caller should do.

    SwitchyardError
    ├── ConfigError                 stop: the fleet file or settings are wrong (file, key, what is allowed)
    ├── InputError                  stop: a submitted payload or command argument is wrong; nothing was written
    │   └── NotFound                stop: the task, environment or stage named does not exist
    ├── ServiceUnavailable          retry later: the broker, database or another local service is not answering
    │   ├── LedgerUnavailable       retry later: the budget ledger cannot be read or written; nothing is spent
    │   ├── StateUnavailable        retry later: the shared provider state (Redis) is away; no provider is called
    │   └── NotYetSent              wait: the task is recorded but the broker is away; the outbox sends it later
    ├── FleetAlreadyRunning         stop: `up` was asked for a data directory whose fleet runs (`switchyard down`)
    ├── ProviderError               raised by provider clients; ``retryable`` says whether tenacity may try again
    │   ├── TransientError          retry: timeouts, connection errors, 5xx
    │   │   ├── RateLimited         retry after ``retry_after`` seconds (HTTP 429)
    │   │   └── Overloaded          retry: the provider is overloaded (Anthropic 529)
    │   ├── ProviderDown            fall back: credentials refused (401/403) or the provider is not configured
    │   ├── RequestRejected         fall back: this provider refused this request (400/413/422); another rung may not
    │   │   └── ModelNotFound       fall back, and mark the model unusable for every worker (HTTP 404)
    │   ├── BadAnswer               fall back: the answer could not be used (unparseable JSON, empty diff)
    │   │   └── HoldExceeded        fall back: an agent CLI was stopped at the attempt's hold; has ``cost_usd``
    │   └── ProviderUnavailable     fall back: the breaker or a limit refused the call (open, disabled, busy)
    ├── NoProvider                  terminal: no rung of the ladder could serve the attempt
    ├── BudgetRefused               fall back or defer: a hold would pass a budget's cap; nothing was held
    └── GitError                    stop: a git command failed; carries the command and its stderr
        ├── MergeConflict           stop: names the conflicting files
        ├── CheckFailed             stop: the check command failed on the merged tree; nothing was merged
        └── PatchRejected           fall back: the provider's diff does not apply

Callers catch by class. ``ProviderError.retryable`` and ``ProviderError.counts_against_provider`` let the
attempt loop decide without inspecting HTTP status codes itself.
"""

from __future__ import annotations


class SwitchyardError(Exception):
    """Root of every error Switchyard raises on purpose."""


class ConfigError(SwitchyardError):
    """The fleet file or the settings are wrong; raised at start, with the file and key that caused it."""


class InputError(SwitchyardError):
    """Bad input at the edge (CLI, HTTP, Python). The message says what was wrong and how to fix it."""


class NotFound(InputError):
    """A task, environment or stage that does not exist was named."""


class ServiceUnavailable(SwitchyardError):
    """A service Switchyard depends on (broker, database, simulator) did not answer."""


class LedgerUnavailable(ServiceUnavailable):
    """The budget ledger could not be reached or written. The ledger fails closed: no hold, so no call."""


class StateUnavailable(ServiceUnavailable):
    """The shared provider state (breakers, in-flight calls, request rates in Redis) could not be reached.

    It fails closed: no provider is called while the state is away."""


class NotYetSent(ServiceUnavailable):
    """A submitted task is recorded (``queued``, with its message owed in the outbox) but the broker did not
    take the message: the outbox sends it once the broker is back. Do not submit it again: ``task_id`` is it."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class FleetAlreadyRunning(SwitchyardError):
    """``up`` was asked for a data directory whose fleet is already running."""


class ProviderError(SwitchyardError):
    """A provider call failed. Subclasses say whether a retry, a fallback, or neither can help."""

    retryable: bool = False
    counts_against_provider: bool = True

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class TransientError(ProviderError):
    """Timeouts, dropped connections and 5xx answers: trying again soon may work."""

    retryable = True


class RateLimited(TransientError):
    """HTTP 429. ``retry_after`` is the provider's own hint in seconds, when it gave one."""

    def __init__(
        self, message: str, *, provider: str = "", status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class Overloaded(TransientError):
    """The provider says it is overloaded (Anthropic 529 ``overloaded_error``)."""


class ProviderDown(ProviderError):
    """The provider cannot serve anyone right now: credentials refused, or it is not configured at all."""


class RequestRejected(ProviderError):
    """This provider refused this particular request (400 malformed for it, 413 too large for its context, 422):
    trying it again won't help, but the next rung of the ladder (another provider or model) may accept it. Not
    held against the provider's health."""

    counts_against_provider = False


class ModelNotFound(RequestRejected):
    """HTTP 404: the provider does not know the model asked for (retired, misspelt, not pulled). The attempt
    falls back, and the model is marked unusable for every worker until the fleet file's entry for the provider
    changes or an operator heals it (``switchyard breaker heal``)."""


class BadAnswer(ProviderError):
    """The provider answered, but the answer cannot be used by the task kind."""

    counts_against_provider = False


class HoldExceeded(BadAnswer):
    """An agent CLI reached the dollars held for the attempt and was stopped (``--max-budget-usd``, or a Codex
    run whose reported usage passed the hold). The attempt failed; it still cost ``cost_usd``."""

    def __init__(self, message: str, *, provider: str = "", cost_usd: float = 0.0) -> None:
        super().__init__(message, provider=provider)
        self.cost_usd = cost_usd


class ProviderUnavailable(ProviderError):
    """The breaker or a limit refused the call before it was made: open, half-open with its probe out,
    disabled, all in-flight slots taken, or requests per minute reached. ``reason`` is one of ``open``,
    ``probing``, ``disabled``, ``busy``, ``rate``; ``retry_in_s`` is when asking again can work (None: not
    until an operator enables the provider). The attempt falls back to the next rung."""

    counts_against_provider = False

    def __init__(self, message: str, *, provider: str, reason: str, retry_in_s: float | None) -> None:
        super().__init__(message, provider=provider)
        self.reason = reason
        self.retry_in_s = retry_in_s


class NoProvider(SwitchyardError):
    """No rung of the group's ladder could serve the attempt; the message lists why each was passed over."""


class BudgetRefused(SwitchyardError):
    """A hold would take a budget past its cap in the current window. Nothing was held on any budget.

    ``budget`` names it (``all/day``, ``provider=claude/hour``); ``cap_micros`` and ``used_micros`` are its
    cap and what was held or charged in the window when the hold was refused; ``amount_micros`` is what the
    hold asked for; ``action`` is the budget's action at the cap (``block`` or ``degrade``);
    ``window_ends_in_s`` is when the window rolls over and the budget has room again.
    """

    def __init__(
        self,
        *,
        budget: str,
        cap_micros: int,
        used_micros: int,
        amount_micros: int,
        action: str = "block",
        window_ends_in_s: float = 0.0,
    ) -> None:
        super().__init__(
            f"budget {budget} would pass its cap: ${used_micros / 1e6:.6f} used + ${amount_micros / 1e6:.6f} "
            f"asked > ${cap_micros / 1e6:.6f} cap (action {action}; the window ends in {window_ends_in_s:.0f}s)"
        )
        self.budget = budget
        self.cap_micros = cap_micros
        self.used_micros = used_micros
        self.amount_micros = amount_micros
        self.action = action
        self.window_ends_in_s = window_ends_in_s


class GitError(SwitchyardError):
    """A git command failed."""

    def __init__(self, message: str, *, command: list[str] | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.command = command or []
        self.stderr = stderr


class MergeConflict(GitError):
    """A merge stopped on conflicts; ``files`` names them. The target branch was left as it was."""

    def __init__(self, message: str, *, files: list[str], command: list[str] | None = None) -> None:
        super().__init__(message, command=command)
        self.files = files


class CheckFailed(GitError):
    """An environment's check command failed on a merged tree, so the branch was not moved; ``output`` is
    the tail of what the check printed."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message, stderr=output)
        self.output = output


class PatchRejected(GitError):
    """A unified diff from a provider did not apply to the task's worktree."""
