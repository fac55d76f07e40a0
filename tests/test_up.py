"""`switchyard up` in the foreground, as a person runs it: Ctrl-C (SIGINT) stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, port_open, stop_process_group

pytestmark = pytest.mark.e2e
SWITCHYARD = str(Path(sys.executable).parent / "switchyard")


def test_ctrl_c_stops_the_whole_fleet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    ports = {name: free_port() for name in ("BROKER", "API", "FLOWER", "SIMULATOR")}
    env.update({f"SWITCHYARD_{name}_PORT": str(port) for name, port in ports.items()})
    env["SWITCHYARD_HOME"] = str(tmp_path / "home")
    log = (tmp_path / "up.log").open("w+")
    up = subprocess.Popen(
        [SWITCHYARD, "up", "--simulate"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "the fleet did not come up"
            time.sleep(0.3)
        run_dir = tmp_path / "home" / "development" / "run"
        assert len(list(run_dir.glob("*.pid"))) == 10  # broker, simulator, five workers, beat, flower, api
        assert all(port_open("127.0.0.1", port) for port in ports.values())
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()
    finally:
        stop_process_group(up.pid)
        log.close()
    assert not list(run_dir.glob("*.pid"))
    assert not any(port_open("127.0.0.1", port) for port in ports.values())
    assert "stopped broker" in (tmp_path / "up.log").read_text()


def live_pids(run_dir: Path) -> dict[str, int]:
    return {path.stem: json.loads(path.read_text())["pid"] for path in run_dir.glob("*.pid")}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.timeout(900)  # three fleet starts' worth of readiness waits on a machine at load 15
def test_up_starts_only_the_dead_worker_and_restart_replaces_one(tmp_path: Path) -> None:
    """A detached simulated fleet: kill -9 one worker, `up` starts that one alone (still simulated), and
    `restart GROUP` replaces another; every other pid is unchanged, and both commands say what they did."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    ports = {name: free_port() for name in ("BROKER", "API", "FLOWER", "SIMULATOR")}
    env.update({f"SWITCHYARD_{name}_PORT": str(port) for name, port in ports.items()})
    env["SWITCHYARD_HOME"] = str(tmp_path / "home")
    run_dir = tmp_path / "home" / "development" / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SWITCHYARD, *args], env=env, capture_output=True, text=True, timeout=900, check=False)

    try:
        first = cli("up", "--simulate", "--detach")
        assert first.returncode == 0, first.stdout + first.stderr
        before = live_pids(run_dir)
        assert len(before) == 10
        os.kill(before["worker-pr_review"], signal.SIGKILL)

        again = cli("up")  # no --simulate: the missing worker joins the simulated fleet as it is
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Started what was missing (worker-pr_review); the rest was already running." in again.stdout
        assert again.stdout.count("already running (pid") == 9
        middle = live_pids(run_dir)
        assert middle["worker-pr_review"] != before["worker-pr_review"]
        assert {k: v for k, v in middle.items() if k != "worker-pr_review"} == {
            k: v for k, v in before.items() if k != "worker-pr_review"
        }
        assert environ_of(middle["worker-pr_review"])["SWITCHYARD_SIMULATE"] == "true"

        swapped = cli("restart", "pr_impl", "--ready-timeout", "600")
        assert swapped.returncode == 0, swapped.stdout + swapped.stderr
        assert f"stopped worker-pr_impl (pid {middle['worker-pr_impl']})" in swapped.stdout
        after = live_pids(run_dir)
        assert f"Restarted worker-pr_impl (pid {after['worker-pr_impl']})" in swapped.stdout
        assert after["worker-pr_impl"] != middle["worker-pr_impl"]
        assert {k: v for k, v in after.items() if k != "worker-pr_impl"} == {
            k: v for k, v in middle.items() if k != "worker-pr_impl"
        }
        assert environ_of(after["worker-pr_impl"])["SWITCHYARD_SIMULATE"] == "true"
    finally:
        pids = live_pids(run_dir) if run_dir.exists() else {}
        stopped = cli("down")
        for pid in pids.values():
            stop_process_group(pid)
    assert stopped.returncode == 0, stopped.stderr
    assert not list(run_dir.glob("*.pid"))
    assert not any(port_open("127.0.0.1", port) for port in ports.values())
