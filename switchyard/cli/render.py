"""Output for people (rich tables) and for scripts (JSON), from the same rows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """The first column (an id or a name) stays on one line; the others wrap when the terminal is narrow."""
    out = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        out.add_column(column, no_wrap=i == 0, overflow="fold")
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    return out


def usd(value: float | None) -> str:
    return "" if value is None else f"${value:,.4f}"
