"""The guard of a check command: runs it in a process group of its own and ends that group with the worker.

:func:`environments.checks.run_check` starts this file as ``python -I -S checkguard.py STATUS_FD -- ARGV…`` in a
new session. Its stdin is the read end of a pipe whose write end only the worker holds, so the guard reads EOF
when the worker closes it (a timeout) or when the worker is gone for any reason, SIGKILL included: the kernel
closes a dead process's descriptors. On EOF the guard sends SIGKILL to the check's whole process group, every
process the check started in it included. When the check ends by itself, whatever it left running in its
group is killed too (a server a test suite forgot), so nothing outlives a check. If the guard itself is
killed, ``PR_SET_PDEATHSIG`` (Linux) takes the check's first process down with it. (The worker's end of
the pipe is close-on-exec and never passed to another child; only a plain ``fork()`` of the worker while the
check runs would keep it open, and with it the check, until that copy ends.)

The guard is a separate session, so killing the worker's process group does not take the guard down before
it has done its job. It imports only the standard library (``-I -S`` keeps the checked-out tree, which may hold
a module of any name, off ``sys.path``). It reports on ``STATUS_FD``, one line each: ``pid N`` once the check
started, then ``exit N`` (negative: killed by that signal) or ``error MESSAGE`` when it could not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import TextIO

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with(guard: int) -> None:
    """In the check's process before exec: be killed when the guard dies (and right away if it already has)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != guard:
        os.kill(os.getpid(), signal.SIGKILL)


class Group:
    """The check's process group, killed at most once its leader is reaped (its id could be reused after)."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.reaped = False
        self.lock = threading.Lock()

    def kill(self) -> None:
        with self.lock:
            if self.reaped:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in the group
                os.killpg(self.pgid, signal.SIGKILL)

    def reap(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for the leader without reaping it, kill what is left of its group, then reap it."""
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        self.kill()
        with self.lock:
            self.reaped = True
            return child.wait()


def watch(control: TextIO, group: Group) -> None:
    """Block until the worker's end of the control pipe is closed, then kill the check's group."""
    control.buffer.read()
    group.kill()


def say(status: TextIO, line: str) -> None:
    try:
        status.write(line + "\n")
        status.flush()
    except OSError:
        pass  # the worker is gone; nobody reads the status any more


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: checkguard.py STATUS_FD -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    status = os.fdopen(int(argv[1]), "w", encoding="utf-8")
    guard = os.getpid()
    try:
        # the guard has a single thread until the check has started, so preexec_fn is safe here
        child = subprocess.Popen(
            argv[3:],
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=lambda: die_with(guard),  # noqa: PLW1509
        )
    except OSError as exc:
        say(status, f"error could not start {argv[3]!r}: {exc.strerror or exc}")
        return 0
    say(status, f"pid {child.pid}")
    group = Group(child.pid)
    threading.Thread(target=watch, args=(sys.stdin, group), daemon=True).start()
    say(status, f"exit {group.reap(child)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
