"""Pidfiles of the fleet's processes, one per service, under ``settings.run_dir``.

A pidfile is a small JSON record: the pid, the process's start time (in clock ticks since boot, from
``/proc/<pid>/stat``) and a fragment of its command line. A pidfile is **stale** when its process is gone,
is a zombie, or the pid now belongs to another program: the command line no longer holds the fragment, or
the start time differs. Stale pidfiles are never trusted (nothing is signalled through them); they are
removed and reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from switchyard.private import private_dir, private_file, write_private

SUFFIX = ".pid"


@dataclass(frozen=True)
class PidRecord:
    """What a pidfile says about one service's process."""

    name: str
    pid: int
    match: str
    started: int | None = None


def pidfile_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}{SUFFIX}"


def write_pidfile(run_dir: Path, name: str, pid: int, match: str) -> Path:
    """Record ``pid`` for service ``name`` (0600, in a 0700 run dir); written to a temporary file and renamed,
    so never half-written."""
    private_dir(run_dir)
    record = json.dumps({"pid": pid, "match": match, "started": start_time(pid)})
    return write_private(pidfile_path(run_dir, name), record)


def read_pidfile(run_dir: Path, name: str) -> PidRecord | None:
    """The record of service ``name``, or None when there is no pidfile or it cannot be read."""
    try:
        data = json.loads(pidfile_path(run_dir, name).read_text(encoding="utf-8"))
        pid, match, started = int(data["pid"]), str(data["match"]), data.get("started")
        return PidRecord(name=name, pid=pid, match=match, started=started)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_pidfile(run_dir: Path, name: str) -> None:
    pidfile_path(run_dir, name).unlink(missing_ok=True)


def pidfile_names(run_dir: Path) -> list[str]:
    """Names of the services that have a pidfile, sorted."""
    if not run_dir.is_dir():
        return []
    return sorted(path.stem for path in run_dir.glob(f"*{SUFFIX}"))


def cmdline(pid: int) -> str | None:
    """The command line of ``pid``, arguments joined by spaces; None when no such live process exists."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        # A zombie (exited, not yet reaped) has an empty command line: it is not running.
        return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip() or None
    return _ps_cmdline(pid)


def _ps_cmdline(pid: int) -> str | None:
    """Fallback where there is no /proc (macOS)."""
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def alive(pid: int, expected_cmd_fragment: str) -> bool:
    """True when ``pid`` runs and its command line holds ``expected_cmd_fragment`` (pid not reused)."""
    if pid <= 0:
        return False
    line = cmdline(pid)
    return line is not None and expected_cmd_fragment in line


def record_alive(record: PidRecord) -> bool:
    """Like :func:`alive`, and also the same process that was recorded (same start time), where known."""
    if not alive(record.pid, record.match):
        return False
    return record.started is None or start_time(record.pid) in (None, record.started)


def clean_stale(run_dir: Path) -> list[PidRecord]:
    """Remove every pidfile whose process is gone or is another program now; return what was removed."""
    removed: list[PidRecord] = []
    for name in pidfile_names(run_dir):
        record = read_pidfile(run_dir, name)
        if record is None or not record_alive(record):
            with contextlib.suppress(OSError):
                remove_pidfile(run_dir, name)
            removed.append(record or PidRecord(name=name, pid=0, match=""))
    return removed


def process_group_alive(pid: int) -> bool:
    """True while any process of the group led by ``pid`` exists."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RESTARTING_SUFFIX = ".restarting"


def mark_restarting(run_dir: Path, name: str) -> None:
    """Say that ``switchyard restart`` is replacing ``name``: a supervising ``up`` keeps watching it."""
    private_file(private_dir(run_dir) / f"{name}{RESTARTING_SUFFIX}")


def clear_restarting(run_dir: Path, name: str) -> None:
    (run_dir / f"{name}{RESTARTING_SUFFIX}").unlink(missing_ok=True)


def restarting(run_dir: Path, name: str) -> bool:
    return (run_dir / f"{name}{RESTARTING_SUFFIX}").exists()
