"""The ``switchyard`` command. Commands print tables for people; the read commands, ``submit``, ``budget``,
``simulator``, ``alerts`` and the ``env`` commands print JSON instead with ``--json``.

Errors Switchyard raises on purpose are printed as one clear line, and so is a service that went away in the
middle of a command (a database error that says it is unreachable, locked or restarting; the state Redis or the
broker not answering); anything else is a bug and keeps its traceback. Exit codes:
0 done; 1 refused or failed (a check, a task, an environment, or a SwitchyardError such as
FleetAlreadyRunning); 2 bad input (InputError, NotFound, ConfigError, and click's usage errors); 3 a service
Switchyard needs (broker, database, state Redis, simulator) did not answer (ServiceUnavailable).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import alerts, breakers, budget, demo, envs, ops, profiles, report, simulator, stress, tokens, work
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
profiles.register(app)
tokens.register(app)
stress.register(app)
app.add_typer(envs.env_app, name="env")
app.add_typer(work.tasks_app, name="tasks")
app.add_typer(ops.db_app, name="db")
app.add_typer(budget.budget_app, name="budget")
app.add_typer(simulator.simulator_app, name="simulator")
app.add_typer(breakers.breaker_app, name="breaker")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(profiles.config_app, name="config")


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version  # reads the installed metadata: only when asked

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
    except Exception as exc:
        away = service_away(exc)
        if away is None:
            raise
        print(f"switchyard: ServiceUnavailable: {away}", file=sys.stderr)
        return UNAVAILABLE
    return 0


def service_away(exc: Exception) -> str | None:
    """One line saying which service went away, when ``exc`` says one did (None: a bug). The driver's own
    first line only: a SQLAlchemy error's text quotes the statement and its parameters."""
    from kombu.exceptions import OperationalError as BrokerAway  # only on this error path
    from redis.exceptions import ConnectionError as RedisAway
    from redis.exceptions import TimeoutError as RedisSlow
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        said = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
        return (
            f"the database failed during the command ({type(exc).__name__}: {said[0] if said else ''}); "
            "nothing half-written stays (each change is one transaction): try again once it answers "
            "(switchyard status)"
        )
    if isinstance(exc, RedisAway | RedisSlow):
        return f"the state Redis did not answer ({exc}); is the fleet up? run: switchyard status"
    if isinstance(exc, BrokerAway):
        return f"the broker did not answer ({exc}); is the fleet up? run: switchyard status"
    return None


if __name__ == "__main__":
    sys.exit(main())
