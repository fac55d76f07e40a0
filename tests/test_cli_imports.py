"""The ``switchyard`` command starts fast: importing the command tree and printing every command's help loads
none of the heavy libraries (Celery, kombu, SQLAlchemy, Alembic, the provider SDKs, ...). A command imports
them inside its function, when it runs (issue 13: ``switchyard --help`` in 0.3 s).

Deterministic, no timing: a fresh interpreter imports ``cli``, builds the click tree and renders each command's
help, then says which modules it holds. On a failure the message names the chain of imports that pulled the
heavy module in (from ``python -X importtime``'s nesting), e.g. ``cli -> cli.work -> store.models -> sqlalchemy``,
so whoever added an eager import sees where to move it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the libraries a command may use, none of which the command tree or its help needs
HEAVY = (
    "celery",
    "kombu",
    "sqlalchemy",
    "alembic",
    "httpx",
    "anthropic",
    "openai",
    "ollama",
    "altair",
    "pydantic_settings",
    "redis",
    "apprise",
    "fastapi",
    "uvicorn",
    "locust",
)

# Import the tree, build click's commands from typer's (this evaluates every command's signature) and render
# every command's help; then print the top-level packages loaded.
PROGRAM = """
import json, sys
import click, typer.main
import cli

def walk(command, parent):
    ctx = click.Context(command, info_name=command.name, parent=parent)
    command.get_help(ctx)
    for sub in getattr(command, "commands", {}).values():
        walk(sub, ctx)

walk(typer.main.get_command(cli.app), None)
print(json.dumps(sorted(sys.modules)))
"""


def import_chains(importtime: str) -> dict[str, list[str]]:
    """For every module in ``python -X importtime`` output, the chain of imports that loaded it (outermost
    first). The output is in post-order (a module's line follows its children's), indented by depth, so read
    backwards each line's parent is the last line seen one level up."""
    chains: dict[str, list[str]] = {}
    stack: list[str] = []
    lines = [line for line in importtime.splitlines() if line.startswith("import time:") and "|" in line]
    for line in reversed(lines):
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name == "package" or not name:  # the header line
            continue
        depth = (len(field) - len(field.lstrip(" ")) - 1) // 2
        stack = [*stack[:depth], name]
        chains.setdefault(name, list(stack))
    return chains


def loaded_by_cli() -> tuple[list[str], dict[str, list[str]]]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROGRAM],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), import_chains(run.stderr)


def test_import_chains_reads_importtime_nesting() -> None:
    """The parser itself: post-order lines, two spaces per level."""
    sample = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:        10 |         10 |     sqlalchemy.orm\n"
        "import time:        10 |         20 |   sqlalchemy\n"
        "import time:        10 |         30 | store.models\n"
        "import time:        10 |         10 | typer\n"
    )
    chains = import_chains(sample)
    assert chains["sqlalchemy.orm"] == ["store.models", "sqlalchemy", "sqlalchemy.orm"]
    assert chains["typer"] == ["typer"]


def test_command_tree_and_help_import_no_heavy_library() -> None:
    modules, chains = loaded_by_cli()
    assert "cli" in modules and "cli.work" in modules  # the tree was really imported
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY and m.split(".")[0] == m)
    why = [" -> ".join(chains.get(m, [m])) for m in heavy]
    assert not heavy, (
        "importing the switchyard command tree loaded heavy modules; import them inside the command "
        "function that needs them (see cli/work.py):\n  " + "\n  ".join(why)
    )
