"""How long `up` waits: the pure decision, and the wait loop driven by a fake clock (no real sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.readiness import Failure, LogWatch, Progress, ReadyPolicy, Waiting, give_up, patience_s, wait_ready

ADAPTIVE = ReadyPolicy(base_s=60, max_scale=8, quiet_s=30, cap_s=900)


def progress(elapsed: float, quiet: float = 999, load: float = 0.5) -> Progress:
    return Progress(elapsed_s=elapsed, quiet_s=quiet, load_per_core=load)


@pytest.mark.parametrize(
    ("load", "expected"),
    [(0.0, 60), (0.5, 60), (1.0, 60), (2.0, 120), (7.5, 450), (8.0, 480), (40.0, 480)],
)
def test_patience_stretches_with_the_load_per_core_up_to_max_scale(load: float, expected: float) -> None:
    assert patience_s(ADAPTIVE, load) == expected


def test_an_idle_machine_waits_the_base_time_then_gives_up_on_a_silent_service() -> None:
    assert give_up(ADAPTIVE, progress(59.9)) is None
    why = give_up(ADAPTIVE, progress(60.1, quiet=31))
    assert why is not None and "log silent for 31s" in why and "--ready-timeout" in why


def test_a_loaded_machine_waits_longer() -> None:
    """Load 15 on two cores: 7.5 per core, so 450 s before silence counts."""
    assert give_up(ADAPTIVE, progress(400, quiet=400, load=7.5)) is None
    assert give_up(ADAPTIVE, progress(451, quiet=400, load=7.5)) is not None


def test_a_service_whose_log_grows_is_waited_for_until_the_cap() -> None:
    assert give_up(ADAPTIVE, progress(300, quiet=5)) is None
    assert give_up(ADAPTIVE, progress(899, quiet=29.9)) is None
    capped = give_up(ADAPTIVE, progress(901, quiet=0))
    assert capped is not None and "900s" in capped and "adaptive" in capped


def test_a_set_timeout_is_exact_whatever_the_load_or_the_log() -> None:
    fixed = ReadyPolicy(timeout_s=10)
    assert give_up(fixed, progress(10, quiet=0, load=50)) is None
    why = give_up(fixed, progress(10.01, quiet=0, load=50))
    assert why is not None and "10s of --ready-timeout/SWITCHYARD_READY_TIMEOUT" in why
    assert give_up(ReadyPolicy(timeout_s=2000), progress(1500, quiet=1500)) is None  # past the adaptive cap


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_log_watch_measures_silence_since_the_last_growth(tmp_path: Path) -> None:
    clock = FakeClock()
    log = tmp_path / "a.log"
    watch = LogWatch(clock)
    assert watch.quiet_s([log]) == 0  # a missing file reads as size 0: its first look counts as growth
    clock.now += 10
    assert watch.quiet_s([log]) == 10
    log.write_text("starting\n")
    clock.now += 5
    assert watch.quiet_s([log]) == 0
    clock.now += 7
    assert watch.quiet_s([log]) == 7


def run_wait(
    clock: FakeClock,
    policy: ReadyPolicy,
    logs: dict[str, Path],
    ready_at: dict[str, float],
    dies_at: dict[str, float] | None = None,
) -> tuple[Failure | None, list[tuple[str, float]]]:
    heard: list[tuple[str, float]] = []
    began = clock.now

    def probe(names: list[str]) -> list[str]:
        clock.now += 1  # a probe round takes time
        return [n for n in names if clock.now - began >= ready_at.get(n, float("inf"))]

    def exited(names: list[str]) -> tuple[list[str], str] | None:
        dead = [n for n in names if clock.now - began >= (dies_at or {}).get(n, float("inf"))]
        return (dead[:1], "exited with code 1 while starting") if dead else None

    waiting = Waiting(clock=clock, sleep=clock.sleep, load=lambda: 0.2, poll_s=0.5)
    failed = wait_ready(
        logs, began, policy, waiting, probe=probe, exited=exited, on_ready=lambda n, s: heard.append((n, s))
    )
    return failed, heard


def test_wait_reports_each_service_as_it_becomes_ready(tmp_path: Path) -> None:
    clock = FakeClock()
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    failed, heard = run_wait(clock, ADAPTIVE, logs, {"a": 3, "b": 20})
    assert failed is None
    assert [name for name, _ in heard] == ["a", "b"]
    assert heard[0][1] >= 3 and heard[1][1] >= 20


def test_a_service_that_dies_is_reported_at_once_not_after_the_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    began = clock.now
    failed, _ = run_wait(clock, ReadyPolicy(timeout_s=600), {"api": tmp_path / "api.log"}, {}, dies_at={"api": 4})
    assert failed == (["api"], "exited with code 1 while starting")
    assert clock.now - began < 10


def test_a_silent_service_is_given_up_with_every_pending_name(tmp_path: Path) -> None:
    clock = FakeClock()
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log", "c": tmp_path / "c.log"}
    failed, heard = run_wait(clock, ADAPTIVE, logs, {"a": 2})
    assert heard[0][0] == "a"
    assert failed is not None
    names, why = failed
    assert names == ["b", "c"] and "did not become ready" in why
    assert 60 < clock.now - 1000.0 < 70
