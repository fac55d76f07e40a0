"""What a foreground `up` makes of a child that exited: stopped by `down`, replaced by `restart`, or died.

Real processes (`sleep`), real pidfiles; no fleet is needed to tell these apart."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import pidfiles, supervise
from workers.launcher import RunningService
from workers.services import ServiceSpec, Started


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def child(run_dir: Path, sleepers: list[subprocess.Popen[bytes]], name: str = "worker-pr_review") -> RunningService:
    process = subprocess.Popen(["sleep", "60"])
    sleepers.append(process)
    spec = ServiceSpec(
        name=name, argv=("sleep", "60"), env={}, ready=Started(), match="sleep", log_file=run_dir / "x.log",
        stop_rank=0,
    )  # fmt: skip
    pidfile = pidfiles.write_pidfile(run_dir, name, process.pid, "sleep")
    return RunningService(spec=spec, process=process, pidfile=pidfile)


def end(running: RunningService) -> None:
    running.process.kill()
    running.process.wait(timeout=10)


def test_a_live_child_is_fine(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    assert supervise.check(child(tmp_path, sleepers)) is None


def test_a_child_whose_pidfile_is_gone_was_stopped_by_down(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    running = child(tmp_path, sleepers)
    pidfiles.remove_pidfile(tmp_path, running.name)
    end(running)
    assert supervise.check(running) == f"worker-pr_review (pid {running.pid}) was stopped by `switchyard down`"


def test_a_child_that_died_on_its_own_is_reported_with_its_log(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    running = child(tmp_path, sleepers)
    end(running)
    verdict = supervise.check(running)
    assert verdict is not None and "exited unexpectedly with code -9" in verdict and "x.log" in verdict


def test_a_restarted_child_is_followed_through_its_pidfile(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    old = child(tmp_path, sleepers)
    pidfiles.mark_restarting(tmp_path, old.name)
    pidfiles.remove_pidfile(tmp_path, old.name)
    end(old)
    assert supervise.check(old) is None  # between the stop and the new pidfile: the marker says why
    new = child(tmp_path, sleepers)  # the replacement writes the pidfile
    pidfiles.clear_restarting(tmp_path, old.name)
    assert supervise.check(old) is None
    end(new)
    verdict = supervise.check(old)
    assert verdict == f"worker-pr_review (pid {new.pid}, restarted) exited unexpectedly; see {tmp_path / 'x.log'}"


def test_a_child_that_died_is_started_again_and_watched_on(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    first = child(tmp_path, sleepers)
    end(first)  # killed before the watch begins
    stop = threading.Event()
    revived: list[tuple[RunningService, str]] = []

    def revive(dead: RunningService, why: str) -> RunningService:
        revived.append((dead, why))
        new = child(tmp_path, sleepers)
        threading.Timer(0.3, stop.set).start()  # the watch goes on with the new child, until Ctrl-C
        return new

    assert supervise.supervise([first], stop, poll_s=0.05, revive=revive) is None
    ((dead, why),) = revived
    assert dead is first and "exited unexpectedly" in why


def test_a_child_that_keeps_dying_is_a_crash_loop_that_stops_the_fleet(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    def revive(_dead: RunningService, _why: str) -> RunningService:
        again = child(tmp_path, sleepers)
        end(again)  # dies at once, every time
        return again

    first = child(tmp_path, sleepers)
    end(first)
    restarts = supervise.Restarts(limit=3, window_s=300)
    verdict = supervise.supervise([first], threading.Event(), poll_s=0.01, revive=revive, restarts=restarts)
    assert verdict is not None and verdict.endswith("it died 4 times in 300 s")


def test_a_child_stopped_by_down_is_not_started_again(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    running = child(tmp_path, sleepers)
    pidfiles.remove_pidfile(tmp_path, running.name)
    end(running)

    def revive(_dead: RunningService, _why: str) -> RunningService:
        raise AssertionError("a child `down` stopped must stay stopped")

    verdict = supervise.supervise([running], threading.Event(), poll_s=0.01, revive=revive)
    assert verdict is not None and "stopped by `switchyard down`" in verdict


def test_restarts_are_counted_in_a_sliding_window() -> None:
    now = [0.0]
    restarts = supervise.Restarts(limit=2, window_s=10, clock=lambda: now[0])
    assert restarts.allow("w") and restarts.allow("w") and not restarts.allow("w")
    assert restarts.allow("other")
    now[0] = 10.5
    assert restarts.allow("w")
