"""Run an environment's check command (e.g. ``make test``) in a directory, as an argument list, never a shell.

The outcome is data: passed or not, the exit code, how long it took and the tail of its output, so promotion
and integration can store it and say why they refused.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from switchyard.errors import InputError

OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class CheckResult:
    command: str
    passed: bool
    exit_code: int | None  # None: it did not finish (timeout) or could not start
    duration_s: float
    output: str  # the last OUTPUT_TAIL_CHARS characters of stdout and stderr together

    def as_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "output": self.output,
        }


def parse_check_command(command: str) -> list[str]:
    """The argument list of a check command; refuses an empty or unparsable one with how to write it."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"check command {command!r} cannot be parsed ({exc}); quote it like a shell would") from None
    if not argv:
        raise InputError("the check command is empty; use e.g. 'make test', or 'true' for no check")
    return argv


def run_check(cwd: Path, command: str, *, timeout_s: float = 900.0) -> CheckResult:
    """Run ``command`` in ``cwd`` and report how it went; never raises for a failing or missing program."""
    argv = parse_check_command(command)
    started = time.monotonic()
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        elapsed = time.monotonic() - started
        return CheckResult(
            command, False, None, elapsed, (output + f"\ntimed out after {timeout_s:g}s")[-OUTPUT_TAIL_CHARS:]
        )
    except OSError as exc:
        return CheckResult(command, False, None, time.monotonic() - started, f"could not start {argv[0]!r}: {exc}")
    output = (done.stdout or "") + (done.stderr or "")
    return CheckResult(
        command, done.returncode == 0, done.returncode, time.monotonic() - started, output[-OUTPUT_TAIL_CHARS:]
    )


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
