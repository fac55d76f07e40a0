"""The memory of the default fleet at idle: every process ``switchyard up --simulate`` starts, summed.

    python bench/idle.py [--port-base 18500] [--settle 20] [--running] [--keep]

Starts the default fleet (the repository's ``switchyard.toml``, with the provider simulator) in a private
``SWITCHYARD_HOME`` (a temporary directory) on ports from ``--port-base`` (broker, API, Flower, simulator),
waits until it is idle (every service ready, then until the fleet's total RSS stops growing: three samples
``--settle``/3 s apart within 2%), then reads each process of the fleet (the pidfiles under the run
directory, and any children they have) from ``/proc``: RSS (``VmRSS``), and PSS and USS from
``/proc/<pid>/smaps_rollup`` where the kernel has it. PSS shares each shared page among the processes that
map it, so the PSS sum is the fleet's real footprint; the RSS sum counts shared libraries once per process.
Prints per process and in all, against the target of issue 13: 700 MB in all (judged on PSS when
available, else RSS). ``--running`` measures the fleet the current ``SWITCHYARD_*`` variables point at;
``--keep`` leaves the started fleet up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 700.0


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Celery's prefork children, if a pool had any)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in children(c)]


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, and PSS/USS when smaps_rollup is readable, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return out
    fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in rollup[1:] if ":" in line}
    out["pss"] = fields.get("Pss", 0.0)
    out["uss"] = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return out


def fleet_processes(run_dir: Path) -> dict[str, list[int]]:
    """Service name -> its pid and its children's, from the fleet's pidfiles."""
    out: dict[str, list[int]] = {}
    for pidfile in sorted(run_dir.glob("*.pid")):
        pid = int(json.loads(pidfile.read_text())["pid"])
        if Path(f"/proc/{pid}").exists():
            out[pidfile.stem] = [pid, *children(pid)]
    return out


def measure(run_dir: Path) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, pids in fleet_processes(run_dir).items():
        row: dict[str, float] = {"processes": len(pids)}
        for pid in pids:
            for key, value in memory_mb(pid).items():
                row[key] = row.get(key, 0.0) + value
        table[name] = row
    return table


def total(table: dict[str, dict[str, float]], key: str) -> float:
    return sum(row.get(key, 0.0) for row in table.values())


def wait_idle(run_dir: Path, settle: float) -> dict[str, dict[str, float]]:
    """Samples until three in a row agree within 2% on the total RSS (imports and caches have settled)."""
    samples: list[float] = []
    while True:
        table = measure(run_dir)
        samples.append(total(table, "rss"))
        last = samples[-3:]
        if len(last) == 3 and max(last) - min(last) <= 0.02 * max(last):
            return table
        time.sleep(settle / 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=18500, help="broker port; API, Flower, simulator follow")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds over which idle is judged")
    parser.add_argument("--running", action="store_true", help="measure the fleet of the SWITCHYARD_* variables")
    parser.add_argument("--keep", action="store_true", help="leave the fleet this started running")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not (k.startswith("SWITCHYARD_") and not args.running)}
    started = not args.running
    if started:
        home = Path(tempfile.mkdtemp(prefix="switchyard-bench-idle-"))
        env.update(
            SWITCHYARD_HOME=str(home),
            SWITCHYARD_PROFILE="development",
            SWITCHYARD_BROKER_PORT=str(args.port_base),
            SWITCHYARD_API_PORT=str(args.port_base + 1),
            SWITCHYARD_FLOWER_PORT=str(args.port_base + 2),
            SWITCHYARD_SIMULATOR_PORT=str(args.port_base + 3),
        )
        print(f"starting the default fleet in {home} (ports from {args.port_base}) ...", flush=True)
        up = cli("up", "--detach", "--simulate", env=env)
        if up.returncode != 0:
            print(up.stdout[-2000:], up.stderr[-2000:], file=sys.stderr)
            return 1
    home = Path(env.get("SWITCHYARD_HOME", ".switchyard"))
    run_dir = home / env.get("SWITCHYARD_PROFILE", "development") / "run"
    try:
        table = wait_idle(run_dir, args.settle)
    finally:
        if started and not args.keep:
            cli("down", env=env)
    has_pss = all("pss" in row for row in table.values())
    print(f"\nidle fleet: {len(table)} services, {int(total(table, 'processes'))} processes; MB")
    print(f"{'service':22s} {'RSS':>8s} {'PSS':>8s} {'USS':>8s}")
    for name, row in sorted(table.items(), key=lambda item: -item[1].get("rss", 0.0)):
        pss, uss = row.get("pss"), row.get("uss")
        print(
            f"{name:22s} {row['rss']:8.1f} {'-' if pss is None else f'{pss:8.1f}':>8s}"
            f" {'-' if uss is None else f'{uss:8.1f}':>8s}"
        )
    rss, pss = total(table, "rss"), total(table, "pss")
    print(f"{'in all':22s} {rss:8.1f} {pss if has_pss else float('nan'):8.1f} {total(table, 'uss'):8.1f}")
    judged, which = (pss, "PSS") if has_pss else (rss, "RSS")
    verdict = "ok" if judged <= TARGET_MB else "over"
    print(f"target {TARGET_MB:.0f} MB in all, judged on {which}: {judged:.0f} MB, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
