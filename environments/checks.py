"""Run an environment's check command (e.g. ``make test``, ``PYTHONPATH=src pytest``) in a directory.

The command runs as a user's shell would run it, ``/bin/sh -c COMMAND``, in the root of a worktree of the
user's repository (one where no configuration file lies above it: :func:`environments.layout.work_root`),
with this environment and nothing else (:func:`check_environment`): ``PATH``, ``HOME``, ``USER``,
``LOGNAME``, ``SHELL``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``, ``TERM``, the proxy and CA
variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY`` and their lower-case forms, ``SSL_CERT_FILE``,
``SSL_CERT_DIR``, ``REQUESTS_CA_BUNDLE``) and ``CI`` as the worker has them, plus ``GIT_TERMINAL_PROMPT=0``
and ``PWD``. Switchyard's own settings (``SWITCHYARD_*``), provider keys, ``PYTHONPATH``, ``VIRTUAL_ENV``
and the like never reach it; a check that needs a variable sets it itself (``PYTHONPATH=src pytest``).

The outcome is data: passed or not, the exit code, how long it took and the tail of its output (stdout and
stderr interleaved), so promotion and integration can store it and say why they refused. The command never
outlives its worker: see :mod:`environments.checkguard`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from switchyard.errors import InputError

OUTPUT_TAIL_CHARS = 4000
GUARD = Path(__file__).with_name("checkguard.py")
GUARD_GRACE_S = 30.0  # after a timeout, how long the guard has to kill the check before it is killed itself
SHELL = "/bin/sh"
INHERITED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "CI",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
)  # fmt: skip


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
    """The argument list that runs a check command through ``sh -c``; refuses an empty command, one with a NUL
    or a line break, and one the shell cannot parse (``sh -n``), saying how to write it."""
    if not command.strip():
        raise InputError("the check command is empty; use e.g. 'make test', or 'true' for no check")
    if "\0" in command or "\n" in command or "\r" in command:
        raise InputError(f"check command {command!r} must be one line without NUL; join commands with '&&'")
    try:
        shlex.split(command)
        syntax = subprocess.run([SHELL, "-n", "-c", command], capture_output=True, text=True, timeout=10, check=False)
    except ValueError as exc:
        raise InputError(f"check command {command!r} cannot be parsed ({exc}); quote it like a shell would") from None
    if syntax.returncode != 0:
        why = (syntax.stderr.strip().splitlines() or ["syntax error"])[-1]
        raise InputError(f"check command {command!r} is not valid sh ({why}); write it as you would in a terminal")
    return [SHELL, "-c", command]


def check_environment(cwd: Path, inherited: dict[str, str] | None = None) -> dict[str, str]:
    """Pure: the environment a check runs with (see the module docstring), from the worker's ``inherited``."""
    source = os.environ if inherited is None else inherited
    env = {name: value for name, value in source.items() if name in INHERITED or name.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    return {**env, "GIT_TERMINAL_PROMPT": "0", "PWD": str(cwd)}


def run_check(cwd: Path, command: str, *, timeout_s: float = 900.0) -> CheckResult:
    """Run ``command`` in ``cwd`` and report how it went; never raises for a failing or missing program.

    The command runs under :mod:`environments.checkguard`, in a process group of its own that is killed when
    it times out, when it leaves processes behind, and when this worker dies (SIGKILL included).
    """
    argv = parse_check_command(command)
    started = time.monotonic()
    control_r, control = os.pipe()  # the guard's stdin: closing our end (or dying) ends the check's group
    status_r, status_w = os.pipe()
    try:
        guard = _start_guard(cwd, argv, stdin=control_r, status_fd=status_w)
    except OSError as exc:
        os.close(control)
        return CheckResult(command, False, None, time.monotonic() - started, f"could not start {argv[0]!r}: {exc}")
    finally:
        os.close(control_r)
        os.close(status_w)
    with os.fdopen(status_r, "rb") as status_file:
        output, timed_out = _collect(guard, control, status_r, timeout_s)
        os.set_blocking(status_r, True)
        status = status_file.read().decode(errors="replace")
    return outcome(
        command, status=status, output=output, elapsed=time.monotonic() - started, timeout_s=timeout_s,
        timed_out=timed_out, guard_code=guard.returncode,
    )  # fmt: skip


def _start_guard(cwd: Path, argv: list[str], *, stdin: int, status_fd: int) -> subprocess.Popen[bytes]:
    env = check_environment(cwd)
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(GUARD), str(status_fd), "--", *argv],
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=(status_fd,),
        start_new_session=True,  # not in the worker's process group: a kill of that group leaves the guard to act
    )


def _collect(guard: subprocess.Popen[bytes], control: int, status: int, timeout_s: float) -> tuple[str, bool]:
    """The check's output and whether it timed out; on a timeout the guard is told to kill the check."""
    try:
        out, _ = guard.communicate(timeout=timeout_s)
        return _text(out), False
    except subprocess.TimeoutExpired:
        os.close(control)
        control = -1
        try:
            out, _ = guard.communicate(timeout=GUARD_GRACE_S)
        except subprocess.TimeoutExpired:
            out = _kill_without_guard(guard, status)
        return _text(out), True
    finally:
        if control >= 0:
            os.close(control)


def _kill_without_guard(guard: subprocess.Popen[bytes], status: int) -> bytes:
    """The guard did not end the check in time: kill the guard's session and the check's group ourselves."""
    os.set_blocking(status, False)
    with contextlib.suppress(BlockingIOError):
        for line in os.read(status, 4096).decode(errors="replace").splitlines():
            if line.startswith("pid ") and line[4:].isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(line[4:]), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(guard.pid, signal.SIGKILL)
    try:
        out, _ = guard.communicate(timeout=GUARD_GRACE_S)
    except subprocess.TimeoutExpired as exc:  # something that left the group still holds the output pipe
        out = exc.output or b""
        if guard.stdout is not None:
            guard.stdout.close()
        guard.wait()
    return out


def outcome(
    command: str, *, status: str, output: str, elapsed: float, timeout_s: float, timed_out: bool, guard_code: int | None
) -> CheckResult:
    """Pure: the result from the guard's status lines (``pid N``, ``exit N``, ``error …``) and the output."""
    lines = dict(line.split(" ", 1) for line in status.splitlines() if " " in line)
    if "error" in lines:
        return CheckResult(command, False, None, elapsed, lines["error"][-OUTPUT_TAIL_CHARS:])
    if timed_out or "exit" not in lines:
        why = f"timed out after {timeout_s:g}s" if timed_out else f"the check's guard ended (exit {guard_code})"
        return CheckResult(command, False, None, elapsed, (output + "\n" + why)[-OUTPUT_TAIL_CHARS:])
    code = int(lines["exit"])
    return CheckResult(command, code == 0, code, elapsed, output[-OUTPUT_TAIL_CHARS:])


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else ""
