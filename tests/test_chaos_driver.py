"""The chaos driver's pure parts: the task mix, the split of tasks over faults, the table, finding a check."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ops.chaos import parse, shares, table
from ops.faults import CHECK_SECONDS, FAULTS, check_processes
from ops.verdict import Verdict
from ops.workload import requests_for
from tasks.schemas import parse_request

ENVS = ["dev1", "dev2", "dev3"]


def test_the_mixed_batch_holds_every_kind_over_every_environment_and_validates() -> None:
    requests = requests_for("mixed", 20, ENVS, "t")
    assert Counter(r["kind"] for r in requests) == {"pr_review": 8, "dev_task": 6, "pr_impl": 4, "plan": 2}
    assert {r["environment"] for r in requests} == set(ENVS)
    for request in requests:
        parse_request(request)  # the same validation submit applies


def test_the_fallback_batch_has_no_plan_and_the_pipeline_batch_only_pr_impl() -> None:
    assert "plan" not in {r["kind"] for r in requests_for("fallback", 30, ENVS, "t")}
    assert {r["kind"] for r in requests_for("pipeline", 5, ENVS, "t")} == {"pr_impl"}


def test_tasks_are_shared_by_weight_with_a_floor() -> None:
    split = shares(FAULTS, 300)
    assert abs(split["worker_kill"] - 3 * split["none"]) <= 1  # rounded
    assert 270 <= sum(split.values()) <= 330
    assert min(shares(FAULTS, 10).values()) == 4


def test_every_fault_name_is_unique_and_selectable() -> None:
    names = [f.name for f in FAULTS]
    assert len(names) == len(set(names))
    assert parse(["--only", "broker_kill", "--only", "none"]).only == ["broker_kill", "none"]
    with pytest.raises(SystemExit):
        parse(["--only", "meteor"])
    with pytest.raises(SystemExit):
        parse(["--tasks", "0"])


def test_the_table_marks_failures_skips_and_never_recovered() -> None:
    out = table(
        [
            Verdict("none", 22, 0, 0, 0, 0, 2.0),
            Verdict("worker_kill", 60, 3, 3, 1, 0, None, broken_branches=("env/dev1",)),
            Verdict("postgres_stop", 0, 0, 0, 0, 0, None, skipped="no helper"),
        ]
    )
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["fault", "tasks", "lost"]
    assert lines[2].split() == ["none", "22", "0", "0", "0", "0", "2.0", "0", "0", "ok"]
    assert "never" in lines[3] and "FAIL broken: env/dev1" in lines[3]
    assert "skipped: no helper" in lines[4]


def test_the_slow_check_is_found_by_its_argv(tmp_path: Path) -> None:
    for pid, argv in {"10": [b"sleep", CHECK_SECONDS.encode()], "11": [b"sleep", b"1"], "self": [b"x"]}.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (tmp_path / "12").mkdir()  # a process that exited: no cmdline to read
    assert check_processes(tmp_path) == [10]
