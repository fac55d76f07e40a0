"""The ``switchyard`` command. Every command prints a table in a terminal and JSON with ``--json``.

Errors Switchyard raises on purpose are printed as one clear line (exit code 2); nothing else is caught here.
"""

from __future__ import annotations

import sys

import typer

from switchyard.cli import demo, envs, ops, work
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``switchyard`` script."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns the exit code instead of raising Exit
    except SwitchyardError as exc:
        kind = "invalid input" if isinstance(exc, InputError) else type(exc).__name__
        print(f"switchyard: {kind}: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("switchyard: aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # click's usage errors arrive here in standalone_mode=False
        from click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
