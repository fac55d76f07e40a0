"""Running an agent CLI (``claude``, ``codex``) as a provider transport: one subprocess per call.

The process runs in the task's worktree with an environment built from scratch (PATH, a private HOME, the
provider's own variables): nothing else of the worker's environment, and never a key on argv. It leads its
own process group, so a timeout or a stop (Codex past its hold) ends the agent and every command it
started. The prompt goes in on stdin: a diff can be longer than the 128 KiB one argument may hold.

Each environment has its own directories under ``<data_dir>/agents/<provider>/<environment>/``: ``config``
(``CLAUDE_CONFIG_DIR``/``CODEX_HOME``; parallel agents sharing one config corrupt it) and ``home``.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from providers.base import ProviderRequest
from providers.http_errors import scrub
from switchyard.errors import ProviderDown, ProviderError, RequestRejected, TransientError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEFAULT_ENVIRONMENT = "default"
STDERR_TAIL_CHARS = 2000
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL for whatever of the group is left
READ_BYTES = 65536
LineHandler = Callable[[str], bool]  # gets each stdout line as it arrives; True stops the run


@dataclass(frozen=True)
class AgentDirs:
    config: Path
    home: Path


@dataclass(frozen=True)
class CliCommand:
    provider: str
    argv: list[str]
    env: Mapping[str, str]
    cwd: Path
    stdin: str
    timeout_s: float


@dataclass(frozen=True)
class CliOutcome:
    returncode: int
    stderr_tail: str
    timed_out: bool = False
    stopped: bool = False  # the line handler asked for the stop


CliRunner = Callable[[CliCommand, LineHandler], CliOutcome]


def agent_dirs(data_dir: Path, provider: str, environment: str | None) -> AgentDirs:
    """The private config and home directories of ``provider`` for ``environment`` (created, mode 0700)."""
    name = environment or DEFAULT_ENVIRONMENT
    if not SAFE_NAME.match(name):
        raise RequestRejected(
            f"{provider}: environment name {name!r} cannot name a directory; use letters, digits, '.', '_', '-'",
            provider=provider,
        )
    root = data_dir / "agents" / provider / name
    dirs = AgentDirs(config=root / "config", home=root / "home")
    for path in (dirs.config, dirs.home):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return dirs


def require_workdir(request: ProviderRequest, provider: str) -> Path:
    """The worktree the agent works in; the CLI transport refuses to run anywhere else."""
    if request.workdir is None:
        raise RequestRejected(
            f"{provider}: the cli transport needs the task's worktree (ProviderRequest.workdir); "
            "this kind has none, so route it to the api transport",
            provider=provider,
        )
    if not request.workdir.is_dir():
        raise RequestRejected(f"{provider}: the worktree {request.workdir} does not exist", provider=provider)
    return request.workdir


def require_hold(request: ProviderRequest, provider: str) -> float:
    """The dollars held for the attempt: the agent CLI must be told where to stop."""
    if request.max_cost_usd is None or request.max_cost_usd <= 0:
        raise RequestRejected(
            f"{provider}: the cli transport needs a positive hold (ProviderRequest.max_cost_usd), "
            f"got {request.max_cost_usd!r}",
            provider=provider,
        )
    return request.max_cost_usd


def base_env(path: str, dirs: AgentDirs) -> dict[str, str]:
    return {"PATH": path, "HOME": str(dirs.home), "LANG": "C.UTF-8", "NO_COLOR": "1"}


def exit_error(provider: str, outcome: CliOutcome, secret: str | None) -> ProviderError:
    """The CLI ended without a result it could report: killed (transient) or failed to start (down)."""
    stderr = scrub(outcome.stderr_tail.strip(), secret) or "(no stderr)"
    if outcome.returncode < 0:
        return TransientError(
            f"{provider}: the {provider} CLI was killed by signal {-outcome.returncode}: {stderr}", provider=provider
        )
    return ProviderDown(
        f"{provider}: the {provider} CLI exited with status {outcome.returncode} without a result; "
        f"check that it runs (`{provider} --version`) and is a supported version. stderr: {stderr}",
        provider=provider,
    )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """TERM the process group ``proc`` leads, KILL it if ``proc`` is still there after ``grace_s``, reap it."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    _signal_group(proc.pid, signal.SIGKILL)  # commands the agent started that outlived it


def run_cli(command: CliCommand, on_line: LineHandler) -> CliOutcome:
    """Run ``command``, feeding stdout lines to ``on_line``; the whole group dies on timeout or stop."""
    deadline = time.monotonic() + command.timeout_s
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(command.stdin.encode("utf-8"))
        stdin.seek(0)
        try:
            proc = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=dict(command.env),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:  # removed or not executable since it was found on PATH
            raise ProviderDown(
                f"{command.provider}: the {command.provider} CLI {command.argv[0]} cannot be started: {exc}",
                provider=command.provider,
            ) from None
        try:
            stopped, timed_out = _read(proc, on_line, deadline)
            if not (stopped or timed_out):
                proc.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            stop_group(proc, grace_s=STOP_GRACE_S if proc.poll() is None else 0)
        stderr.seek(max(stderr.seek(0, os.SEEK_END) - STDERR_TAIL_CHARS * 4, 0))
        tail = stderr.read().decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
        return CliOutcome(proc.returncode, tail, timed_out=timed_out, stopped=stopped)


def _read(proc: subprocess.Popen[bytes], on_line: LineHandler, deadline: float) -> tuple[bool, bool]:
    """Feed stdout lines as they arrive until EOF: (stopped by ``on_line``, passed the deadline).

    Reading waits with ``select`` so the deadline holds even if a command the agent started keeps the pipe
    open after the agent itself is gone."""
    stdout = cast(IO[bytes], proc.stdout)  # Popen(stdout=PIPE) always has it
    pending = b""
    with stdout, selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(stdout.fileno(), READ_BYTES)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            for line in lines:
                if line and on_line(line.decode("utf-8", "replace")):
                    return True, False
            if not chunk:
                return False, False
    return False, True


def last_lines(limit: int = 2000) -> tuple[deque[str], LineHandler]:
    """A line handler that keeps the last ``limit`` lines and never stops the run."""
    lines: deque[str] = deque(maxlen=limit)

    def keep(line: str) -> bool:
        lines.append(line)
        return False

    return lines, keep
