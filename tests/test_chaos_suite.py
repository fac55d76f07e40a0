"""The chaos suite end to end on one cheap fault: a real fleet (embedded broker, simulator, a `celery worker`
per group, beat), a provider storm, the table, the exit code, and nothing left running afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def processes_of(home: str) -> list[int]:
    """Pids whose environment names ``home`` as SWITCHYARD_HOME (what the suite's fleet started)."""
    found = []
    needle = f"SWITCHYARD_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_storm_runs_end_to_end_and_stops_everything() -> None:
    argv = [sys.executable, "-m", "ops.chaos", "--only", "storm_500_claude", "--tasks", "6", "--keep"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    kept = re.search(r"kept (\S+)", proc.stderr)
    assert kept, proc.stderr[-3000:]
    home = kept.group(1)
    try:
        row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("storm_500_claude "))
        assert int(row[1]) >= 6  # every submitted task, and what the fleet created under them
        assert row[2:6] == ["0", "0", "0", "0"], proc.stdout  # lost, stuck, duplicate and unrecorded charges
        assert proc.returncode == 0, proc.stdout
        assert processes_of(str(Path(home) / "embedded")) == []
        logs = Path(home) / "embedded" / "development" / "logs"
        assert (logs / "worker-pr_review.log").read_text().count("ready") >= 1
    finally:
        subprocess.run(["rm", "-rf", home], check=False)
