"""The fleet's fixed words: task kinds, budget scopes, windows and actions. Plain tuples and Literals with no
imports beyond ``typing``, so the CLI can name them in its help text without loading pydantic or the fleet."""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["plan", "dev_task", "pr_review", "pr_impl", "pr_integ"]
KINDS: tuple[str, ...] = get_args(Kind)
# the kinds an agent CLI can serve: their handler gives it a worktree to edit (tasks/kinds: ``workdir``); a
# review or a plan has none, so a ``cli`` transport on them fails every attempt
CLI_KINDS: tuple[str, ...] = ("dev_task", "pr_impl", "pr_integ")
Scope = Literal["all", "environment", "stage", "group", "provider"]
Window = Literal["hour", "day", "month"]
Action = Literal["block", "degrade"]
SCOPES: tuple[str, ...] = get_args(Scope)
WINDOWS: tuple[str, ...] = get_args(Window)
ACTIONS: tuple[str, ...] = get_args(Action)
