"""The ``switchyard`` command. Commands print tables for people; the read commands, ``submit``, ``budget``,
``simulator`` and the ``env`` commands print JSON instead with ``--json``.

Errors Switchyard raises on purpose are printed as one clear line; nothing else is caught here. Exit codes:
0 done; 1 refused or failed (a check, a task, an environment, or a SwitchyardError such as
FleetAlreadyRunning); 2 bad input (InputError, NotFound, ConfigError, and click's usage errors); 3 a service
Switchyard needs (broker, database, state Redis, simulator) did not answer (ServiceUnavailable).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Annotated

import typer

from cli import breakers, budget, demo, envs, ops, report, simulator, work
from switchyard.errors import ConfigError, InputError, ServiceUnavailable, SwitchyardError

REFUSED, BAD_INPUT, UNAVAILABLE = 1, 2, 3

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
report.register(app)
app.add_typer(envs.env_app, name="env")
app.add_typer(work.tasks_app, name="tasks")
app.add_typer(ops.db_app, name="db")
app.add_typer(budget.budget_app, name="budget")
app.add_typer(simulator.simulator_app, name="simulator")
app.add_typer(breakers.breaker_app, name="breaker")


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"switchyard {version('switchyard')}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the installed version."),
    ] = False,
) -> None:
    pass


def exit_code_for(exc: SwitchyardError) -> int:
    """Scripts can tell what to do from the code alone: fix the input (2), retry later (3), or look (1)."""
    if isinstance(exc, InputError | ConfigError):
        return BAD_INPUT
    if isinstance(exc, ServiceUnavailable):
        return UNAVAILABLE
    return REFUSED


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``switchyard`` script.

    Click runs in standalone mode, so usage mistakes print its one-line message and exit 2; errors Switchyard
    raises on purpose are printed here as one line, with the exit code of :func:`exit_code_for`.
    """
    try:
        app(args=argv, prog_name="switchyard")
    except SwitchyardError as exc:
        kind = "invalid input" if isinstance(exc, InputError) else type(exc).__name__
        print(f"switchyard: {kind}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
