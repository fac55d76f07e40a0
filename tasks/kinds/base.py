"""What a task kind provides to the shared attempt loop: the prompt it sends and what it does with the answer.

``act`` raises :class:`BadAnswer` or :class:`PatchRejected` when the answer cannot be used (the loop moves to
the next rung of the ladder), and any other :class:`SwitchyardError` when the task itself cannot succeed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from switchyard.errors import BadAnswer
from tasks.context import Context
from tasks.schemas import SubmitRequest

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class TaskInfo:
    """A task as the handlers see it: detached from any database session."""

    id: str
    kind: str
    group: str
    environment: str
    stage: str
    request: SubmitRequest
    workspace: Path
    created_at: datetime | None = None

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def stage_branch(self) -> str:
        base = f"env/{self.environment}"
        return base if self.stage == "dev" else f"{base}-{self.stage}"


@dataclass(frozen=True)
class Prompt:
    system: str
    prompt: str


@dataclass(frozen=True)
class Outcome:
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"  # or a terminal status; LANDING: a plan that waits for its sub-tasks to land
    # the handler's own rows (a review's), written with the attempt's verdict and the result row, in one transaction
    rows: Callable[[Session], None] | None = field(default=None, compare=False, repr=False)


LANDING = "landing"


@dataclass(frozen=True)
class Answer:
    """A provider's answer and who gave it. With the ``cli`` transport the agent has already edited
    ``workdir`` in place and ``text`` is its final message; with ``api`` the text is the whole answer."""

    text: str
    provider: str
    model: str
    transport: str = "api"
    workdir: Path | None = None


class Assist(Protocol):
    """Lets a handler ask one more routed question inside its task (e.g. resolve a merge conflict).

    ``ask`` runs a full attempt (route, hold, breaker, retries, settle) on ``provider`` and returns its answer;
    it raises :class:`switchyard.errors.ProviderError` when that provider cannot answer."""

    def ask(self, provider: str, prompt: Prompt) -> Answer: ...


class KindHandler(Protocol):
    kind: str

    def prompt(self, ctx: Context, task: TaskInfo) -> Prompt: ...

    def act(self, ctx: Context, task: TaskInfo, answer: Answer, assist: Assist) -> Outcome: ...

    def gate(self, ctx: Context, task: TaskInfo) -> str | None:
        """Why the task must wait before it runs (None: run now); the loop defers it with a short countdown."""
        ...

    def workdir(self, ctx: Context, task: TaskInfo) -> Path | None:
        """The directory an agent-CLI transport works in (created on demand); None when the kind writes nothing."""
        ...


class BaseHandler:
    """Defaults for the optional hooks of :class:`KindHandler`."""

    kind: str = ""

    def gate(self, ctx: Context, task: TaskInfo) -> str | None:
        return None

    def workdir(self, ctx: Context, task: TaskInfo) -> Path | None:
        return None


def system_prompt(kind: str, role: str, instructions: str) -> str:
    """The system prompt every kind sends; the ``Task kind`` line lets the simulator answer in kind."""
    return f"You are {role} working in a Switchyard fleet.\nTask kind: {kind}\n\n{instructions.strip()}\n"


def header(task: TaskInfo, **lines: str | None) -> str:
    """The labelled lines a prompt starts with (``Task id: …``, ``Title: …``)."""
    out = [f"Task id: {task.id}", f"Environment: {task.environment} (stage {task.stage})"]
    out += [f"{name.replace('_', ' ').capitalize()}: {value}" for name, value in lines.items() if value]
    return "\n".join(out)


def parse_json_answer(answer: str, model: type[M]) -> M:
    """Parse a JSON object from a model's answer (fences and prose around it are tolerated)."""
    text = answer.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise BadAnswer(f"expected a JSON object, got: {text[:120]!r}")
    try:
        return model.model_validate(json.loads(text[start : end + 1]))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise BadAnswer(f"the answer is not a valid {model.__name__}: {exc}") from None
