"""Settings and fleet for a CLI command, loaded when the command runs (never at import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.context import Context


def cli_context(**overrides: Any) -> Context:
    from switchyard.settings import load_settings  # pydantic-settings: only when a command runs
    from tasks.context import build_context

    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    return build_context(settings)


def db_context(**overrides: Any) -> Context:
    """The context of a command that reads or writes SQL: the schema is brought to head first."""
    from store.migrate import ensure_schema_once  # not tasks.send's: that loads Celery

    ctx = cli_context(**overrides)
    ensure_schema_once(ctx.database_url)
    return ctx
