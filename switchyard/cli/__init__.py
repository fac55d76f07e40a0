"""The ``switchyard`` command. Every command prints a table in a terminal and JSON with ``--json``.

Errors Switchyard raises on purpose are printed as one clear line (exit code 2); nothing else is caught here.
"""

from __future__ import annotations

import sys

import typer

from switchyard.cli import breakers, budget, demo, envs, ops, simulator, work
from switchyard.errors import InputError, SwitchyardError

app = typer.Typer(
    name="switchyard",
    help="Run fleets of AI coding-agent sessions as Celery worker pools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ops.register(app)
work.register(app)
demo.register(app)
app.add_typer(envs.env_app, name="env")
app.add_typer(work.tasks_app, name="tasks")
app.add_typer(ops.db_app, name="db")
app.add_typer(budget.budget_app, name="budget")
app.add_typer(simulator.simulator_app, name="simulator")
app.add_typer(breakers.breaker_app, name="breaker")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``switchyard`` script.

    Click runs in standalone mode, so usage mistakes print its one-line message and exit 2; errors Switchyard
    raises on purpose are printed here as one line, also with exit code 2.
    """
    try:
        app(args=argv, prog_name="switchyard")
    except SwitchyardError as exc:
        kind = "invalid input" if isinstance(exc, InputError) else type(exc).__name__
        print(f"switchyard: {kind}: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
