"""``switchyard demo``: the whole fleet on embedded defaults, with the provider simulator.

Starts the embedded broker, one worker per group, celery beat, Flower, the status API and the simulator;
generates a sample repository and the environments dev1..dev5 (check command: the sample's `make test`).
Then, in every environment: a change goes through the whole pipeline (implement → review on another provider
→ integrate once the check passes), a plan runs its sub-tasks, a chore is done; each environment is promoted
dev → qa → staging. Last, a ladder drill: the simulator fails every Claude call while five reviews run, and
the router falls back to the next rung as the shared breaker opens. Prints results per environment, costs per
provider and group, and which tasks fell back and why; stops what it started.
The demo never uses real provider keys: every call goes to the simulator. It runs in a profile of its own,
``demo``: its database, broker and workspace live in ``<home>/demo/``, whatever ``SWITCHYARD_PROFILE``,
``SWITCHYARD_DATABASE_URL``, ``SWITCHYARD_BROKER_URL`` or ``SWITCHYARD_WORKSPACE`` say, so its tasks, spend
and budgets never mix with the user's.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.ops import ReadyTimeoutOpt


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave the fleet up (open Flower).")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the batch while no task finishes.")
    ] = 150.0,
    ready_timeout: ReadyTimeoutOpt = None,
) -> None:
    """Run the whole fleet on the simulator with a batch of tasks in every environment, then stop it."""
    from cli.demo_run import run_demo  # the fleet, SQL and the simulator's client: only when the demo runs

    run_demo(keep_running=keep_running, timeout=timeout, ready_timeout=ready_timeout)
