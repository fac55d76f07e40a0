"""Output for people (rich tables) and for scripts (JSON), from the same rows."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 160  # output to a file or a pipe (CI logs, `| less`): rich would assume 80 columns and wrap


def _width(stream: Any) -> int | None:
    """None (the terminal's own width) for a terminal or when COLUMNS says; wide enough to read otherwise."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


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
