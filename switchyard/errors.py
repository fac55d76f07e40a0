"""Every error Switchyard raises, in one tree, classified by what the caller should do.

    SwitchyardError
    ├── ConfigError                 stop: the fleet file or settings are wrong (file, key, what is allowed)
    ├── InputError                  stop: a submitted payload or command argument is wrong; nothing was written
    │   └── NotFound                stop: the task, environment or stage named does not exist
    ├── ServiceUnavailable          retry later: the broker, database or another local service is not answering
    ├── FleetAlreadyRunning         stop: `up` was asked for a data directory whose fleet runs (`switchyard down`)
    ├── ProviderError               raised by provider clients; ``retryable`` says whether tenacity may try again
    │   ├── TransientError          retry: timeouts, connection errors, 5xx
    │   │   ├── RateLimited         retry after ``retry_after`` seconds (HTTP 429)
    │   │   └── Overloaded          retry: the provider is overloaded (Anthropic 529)
    │   ├── ProviderDown            fall back: credentials refused (401/403) or the provider is not configured
    │   ├── RequestRejected         stop: the provider refused this request (400/413/422): the task's problem
    │   └── BadAnswer               fall back: the answer could not be used (unparseable JSON, empty diff)
    ├── NoProvider                  terminal: no rung of the ladder could serve the attempt
    └── GitError                    stop: a git command failed; carries the command and its stderr
        ├── MergeConflict           stop: names the conflicting files
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
    """The provider refused this particular request (too large, malformed): retrying or falling back won't help."""

    counts_against_provider = False


class BadAnswer(ProviderError):
    """The provider answered, but the answer cannot be used by the task kind."""

    counts_against_provider = False


class NoProvider(SwitchyardError):
    """No rung of the group's ladder could serve the attempt; the message lists why each was passed over."""


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


class PatchRejected(GitError):
    """A unified diff from a provider did not apply to the task's worktree."""
