"""Settings and fleet for a CLI command, loaded when the command runs (never at import)."""

from __future__ import annotations

from typing import Any

from switchyard.settings import load_settings
from tasks.context import Context, build_context


def cli_context(**overrides: Any) -> Context:
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    return build_context(settings)
