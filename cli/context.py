"""Settings and fleet for a CLI command, loaded when the command runs (never at import)."""

from __future__ import annotations

from typing import Any

from switchyard.settings import load_settings
from tasks.context import Context, build_context
from tasks.send import prepare_database


def cli_context(**overrides: Any) -> Context:
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    return build_context(settings)


def db_context(**overrides: Any) -> Context:
    """The context of a command that reads or writes SQL: the schema is brought to head first."""
    ctx = cli_context(**overrides)
    prepare_database(ctx.database_url)
    return ctx
