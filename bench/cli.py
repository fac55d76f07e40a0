"""How fast the ``switchyard`` command answers: ``--help``, ``submit``, ``status --groups``, beside ``python -c pass``.

    python bench/cli.py [--runs 7] [--port-base 18400] [--tree PATH] [--running]

Starts a simulated fleet of its own (private ``SWITCHYARD_HOME`` in a temporary directory, ports from
``--port-base``: broker, API, Flower, simulator), initializes the environments from a generated sample
repository, times each command ``--runs`` times as a fresh process, then stops the fleet. ``--running`` uses
the fleet the current ``SWITCHYARD_*`` variables point at instead (it must have dev1 initialized).
``--tree PATH`` runs the CLI of another checkout (e.g. the main branch) against the same fleet, for a
before/after comparison.

Printed per command: the median and best wall time, the median CPU time (user + system of the child), the
ratio of the median wall time to ``python -c pass``'s, and the target of issue 13 (on an idle 2-core
machine: ``--help`` <= 0.3 s, ``submit`` <= 0.6 s, ``status --groups`` <= 1 s). On a loaded machine the
wall times stretch with the load; the CPU times and the ratios move much less, so the load average is
printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"--help": 0.3, "submit": 0.6, "status --groups": 1.0}


def cli_argv(tree: Path, *args: str) -> list[str]:
    """The ``switchyard`` entry point of ``tree``, as its console script runs it (``cli.main``)."""
    program = f"import sys; sys.path.insert(0, {str(tree)!r}); from cli import main; sys.exit(main())"
    return [sys.executable, "-c", program, *args]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the run must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv[3:] or argv} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fleet_env(home: Path, port_base: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_HOME=str(home),
        SWITCHYARD_PROFILE="development",
        SWITCHYARD_BROKER_PORT=str(port_base),
        SWITCHYARD_API_PORT=str(port_base + 1),
        SWITCHYARD_FLOWER_PORT=str(port_base + 2),
        SWITCHYARD_SIMULATOR_PORT=str(port_base + 3),
    )
    return env


def start_fleet(env: dict[str, str], home: Path) -> None:
    from environments.sample import make_sample_repo  # noqa: PLC0415 -- only when the bench starts its own fleet

    print(f"starting a simulated fleet in {home} (ports from {env['SWITCHYARD_BROKER_PORT']}) ...", flush=True)
    run = subprocess.run(cli_argv(ROOT, "up", "--detach", "--simulate"), env=env, cwd=ROOT, check=False)
    if run.returncode != 0:
        raise SystemExit("switchyard up failed; see the logs under " + str(home))
    sample = make_sample_repo(home / "sample-repo", feature_branches=1)
    subprocess.run(cli_argv(ROOT, "env", "init", "--repo", str(sample)), env=env, cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (median and best are shown)")
    parser.add_argument("--port-base", type=int, default=18400, help="broker port; API, Flower, simulator follow")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose CLI is timed")
    parser.add_argument("--running", action="store_true", help="use the fleet of the current SWITCHYARD_* variables")
    args = parser.parse_args()
    tree = args.tree.resolve()
    home = None
    if args.running:
        env = dict(os.environ)
    else:
        home = Path(tempfile.mkdtemp(prefix="switchyard-bench-cli-"))
        env = fleet_env(home, args.port_base)
        start_fleet(env, home)
    # compiled modules are kept, as an installed package has them; one warm-up run of each is not counted
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--help": cli_argv(tree, "--help"),
        "submit": cli_argv(tree, "submit", "dev_task", "--env", "dev1", "--title", "bench", "--description", "x"),
        "status --groups": cli_argv(tree, "status", "--groups"),
    }
    try:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for argv in commands.values():
            timed(argv, env, tree)
        for _ in range(args.runs):  # interleaved, so that a burst of load hits every command alike
            for name, argv in commands.items():
                results[name].append(timed(argv, env, tree))
    finally:
        if home is not None:
            subprocess.run(cli_argv(ROOT, "down"), env=env, cwd=ROOT, capture_output=True, check=False)
    base = statistics.median(w for w, _ in results["python -c pass"])
    print(f"\nCLI of {tree}; {args.runs} runs each; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':18s} {'median':>8s} {'best':>8s} {'cpu':>8s} {'x pass':>7s} {'target':>7s}")
    for name, runs in results.items():
        walls = [w for w, _ in runs]
        median, cpu = statistics.median(walls), statistics.median(c for _, c in runs)
        target = TARGETS.get(name)
        verdict = "" if target is None else ("  ok" if median <= target else "  over (idle target)")
        shown = "" if target is None else f"{target:.1f}s"
        print(f"{name:18s} {median:7.3f}s {min(walls):7.3f}s {cpu:7.3f}s {median / base:6.1f}x {shown:>7s}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
