"""A private ``redis-server`` on a free port: the external broker of the chaos suite's Redis-restart fault.

Started without persistence (``--save '' --appendonly no``, as the project's CI starts its Redis), so a
restart loses what the server held, like a failover to an empty replica: the harshest Redis restart.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from switchyard.errors import ServiceUnavailable
from workers import broker

POLL_S = 0.2


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class PrivateRedis:
    port: int
    directory: Path
    ready_timeout_s: float = 60.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = redis_binary()
        if binary is None:
            raise ServiceUnavailable("redis-server is not installed; the Redis-restart fault needs it")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--dir", str(self.directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while broker.ping(self.url) is not None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"the private redis-server did not answer on port {self.port}")
            time.sleep(POLL_S)
        return self

    def kill(self) -> None:
        """``kill -9``, and wait for it to be gone."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        self.kill()
