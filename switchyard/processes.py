"""Names of runs that say which process on which host they belong to, and whether that process still exists.

A task's lease owner (:mod:`tasks.lease`) and a provider call's in-flight permit (:mod:`routing.breaker`) are
named ``host/pid/random``. A worker killed with ``kill -9`` leaves both behind; on the same host a detector
can tell at once that the process is gone instead of waiting for the lease or slot to run out. A name from
another host, or a pid that exists (perhaps reused), is taken as alive: then the time-based expiry decides.
"""

from __future__ import annotations

import os
import socket
import uuid


def this_host() -> str:
    return socket.gethostname()[:24]


def run_name() -> str:
    """``host/pid/random`` (at most 64 characters), unique per call."""
    return f"{this_host()}/{os.getpid()}/{uuid.uuid4().hex[:16]}"


def process_gone(name: str | None, host: str) -> bool:
    """Whether ``name`` names a run of a process of ``host`` (this host) that no longer exists."""
    parts = (name or "").split("/")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        return False
    return False
