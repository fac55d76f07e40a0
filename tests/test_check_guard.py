"""A check command never outlives its worker: real processes, real signals, /proc to see who is left.

The check writes its process group id to a file and starts two ``sleep 600`` in that group; the tests kill the
process that runs :func:`environments.checks.run_check` with SIGKILL (alone, or with its whole process group)
and poll, against a generous deadline, until no process of the check's group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from environments import checks
from environments.checks import CheckResult, outcome, run_check

DEADLINE_S = 90.0  # load average 15 is normal on the machines this runs on
# a check runs as `sh -c COMMAND`: that sh is the check's first process, and leads its process group
LONG_CHECK = "echo $$ > pgid; sleep 600 & sleep 600 & echo started > ready; wait"
RUNNER = """
import sys
from pathlib import Path
from environments.checks import run_check
result = run_check(Path(sys.argv[1]), sys.argv[2], timeout_s=float(sys.argv[3]))
print(result.exit_code, result.passed)
"""


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(predicate: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s:g}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def checkdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    pgid_file = tmp_path / "pgid"
    if pgid_file.exists():  # whatever a failed test left behind
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pgid_file.read_text()), signal.SIGKILL)


def start_runner(checkdir: Path, command: str = LONG_CHECK, timeout_s: float = 3600) -> subprocess.Popen[str]:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(checkdir), command, str(timeout_s)],
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own group, so the test can also kill the runner's whole group
    )
    wait_for(lambda: (checkdir / "ready").exists() or runner.poll() is not None, "the check to start")
    assert runner.poll() is None, f"the runner ended early (exit {runner.returncode})"
    return runner


def check_group(checkdir: Path) -> int:
    pgid = int((checkdir / "pgid").read_text())
    assert len(group_members(pgid)) >= 3, "sh and two sleeps run in the check's own group"
    return pgid


def test_sigkill_of_the_worker_ends_the_checks_whole_group(checkdir: Path) -> None:
    runner = start_runner(checkdir)
    pgid = check_group(checkdir)
    assert pgid != os.getpgid(runner.pid), "the check runs in a process group of its own"

    runner.send_signal(signal.SIGKILL)
    runner.wait()

    wait_for(lambda: not group_members(pgid), f"no process of the check's group {pgid} left")


def test_sigkill_of_the_workers_process_group_ends_the_check_too(checkdir: Path) -> None:
    runner = start_runner(checkdir)
    pgid = check_group(checkdir)

    os.killpg(runner.pid, signal.SIGKILL)  # e.g. a supervisor that kills the worker and its children
    runner.wait()

    wait_for(lambda: not group_members(pgid), f"no process of the check's group {pgid} left")


def test_sigkill_of_the_guard_takes_the_checks_first_process_with_it(checkdir: Path) -> None:
    runner = start_runner(checkdir)
    pgid = check_group(checkdir)
    os.kill(parent_of(pgid), signal.SIGKILL)  # the guard

    wait_for(lambda: not alive(pgid), "the check's first process to die with its guard (PR_SET_PDEATHSIG)")
    runner.kill()
    runner.wait()


def test_a_timeout_kills_the_group_and_says_so(checkdir: Path) -> None:
    started = time.monotonic()
    result = run_check(checkdir, LONG_CHECK, timeout_s=3)
    assert not result.passed and result.exit_code is None
    assert "timed out after 3s" in result.output
    assert time.monotonic() - started < DEADLINE_S
    pgid = int((checkdir / "pgid").read_text())
    wait_for(lambda: not group_members(pgid), "no process of a timed-out check left")


def test_processes_a_check_leaves_behind_are_ended_and_do_not_hold_it(checkdir: Path) -> None:
    result = run_check(checkdir, "echo $$ > pgid; sleep 600 & echo done", timeout_s=DEADLINE_S)
    assert result.passed and result.exit_code == 0 and result.output == "done\n"
    pgid = int((checkdir / "pgid").read_text())
    wait_for(lambda: not group_members(pgid), "the background sleep to be ended with its check")


def test_exit_codes_output_and_programs_that_cannot_start(checkdir: Path) -> None:
    assert run_check(checkdir, "true").passed
    failed = run_check(checkdir, "sh -c 'echo out; echo err >&2; exit 3'")
    assert (failed.passed, failed.exit_code, failed.output) == (False, 3, "out\nerr\n")
    missing = run_check(checkdir, "no-such-program-here --flag")  # the shell says so, as in a terminal
    assert (missing.passed, missing.exit_code) == (False, 127)
    assert "no-such-program-here: not found" in missing.output
    assert run_check(checkdir / "gone", "true").exit_code is None  # a directory that does not exist
    (checkdir / "environments.py").write_text("raise SystemExit('the checked-out tree was imported')\n")
    assert run_check(checkdir, "true").passed  # the guard never imports from the tree it runs in
    binary = run_check(checkdir, "printf '\\377ok'")
    assert binary.passed and binary.output.endswith("ok")


@pytest.mark.parametrize(
    ("status", "timed_out", "expected"),
    [
        ("pid 7\nexit 0\n", False, (True, 0, "log")),
        ("pid 7\nexit 2\n", False, (False, 2, "log")),
        ("pid 7\nexit -9\n", False, (False, -9, "log")),
        ("error could not start 'x': No such file", False, (False, None, "could not start 'x': No such file")),
        ("pid 7\n", True, (False, None, "log\ntimed out after 5s")),
        ("pid 7\n", False, (False, None, "log\nthe check's guard ended (exit -9)")),
        ("", False, (False, None, "log\nthe check's guard ended (exit -9)")),
    ],
)
def test_outcome_from_the_guards_status(status: str, timed_out: bool, expected: tuple[bool, int | None, str]) -> None:
    result = outcome("c", status=status, output="log", elapsed=1.0, timeout_s=5, timed_out=timed_out, guard_code=-9)
    passed, code, output = expected
    assert result == CheckResult("c", passed, code, 1.0, output)


def test_a_guard_that_does_not_act_is_killed_and_the_check_with_it(
    checkdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "GUARD_GRACE_S", 2.0)
    results: list[CheckResult] = []
    worker = threading.Thread(target=lambda: results.append(run_check(checkdir, LONG_CHECK, timeout_s=4)))
    worker.start()
    wait_for((checkdir / "ready").exists, "the check to start")
    pgid = check_group(checkdir)
    os.kill(parent_of(pgid), signal.SIGSTOP)  # the guard hangs: it will not kill the check on a timeout

    worker.join(DEADLINE_S)

    assert results and results[0].exit_code is None and "timed out after 4s" in results[0].output
    wait_for(lambda: not group_members(pgid), "no process of the check's group left")
