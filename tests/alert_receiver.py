"""A real HTTP receiver for alert tests: apprise's ``json://127.0.0.1:PORT/`` posts to it.

It answers 500 to the first ``fail_first`` posts, can hold every answer ``delay_s``, and keeps the alerts it
took (answered 200) and every post it saw, with their arrival times.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    fail_first: int = 0
    delay_s: float = 0.0
    port: int = 0
    took: list[dict[str, Any]] = field(default_factory=list)  # answered 200
    seen: list[tuple[float, int]] = field(default_factory=list)  # (monotonic arrival, status answered)
    arrived: list[float] = field(default_factory=list)  # monotonic, as each post arrives (before any delay)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/"

    def titles(self) -> list[str]:
        with self.lock:
            return [str(alert.get("title")) for alert in self.took]

    def with_title(self, text: str) -> list[dict[str, Any]]:
        with self.lock:
            return [alert for alert in self.took if text in str(alert.get("title"))]

    def answer(self, body: dict[str, Any]) -> int:
        with self.lock:
            status = 500 if len(self.seen) < self.fail_first else 200
            self.seen.append((self.arrived[len(self.seen)], status))
            if status == 200:
                self.took.append(body)
        return status


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with receiver.lock:
                receiver.arrived.append(time.monotonic())
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status = receiver.answer(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def receiving(*, fail_first: int = 0, delay_s: float = 0.0) -> Iterator[Receiver]:
    """A receiver on a free port, served by a thread, shut down on exit."""
    receiver = Receiver(fail_first=fail_first, delay_s=delay_s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="alert-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
