"""`switchyard up` in the foreground, as a person runs it: Ctrl-C (SIGINT) stops every process it started."""

from __future__ import annotations

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
