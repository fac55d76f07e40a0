"""The payload of a task: one pydantic model for every kind, checked at submission against the fleet.

One model (not one per kind) so fields can be added without breaking callers; :func:`check_against_fleet`
adds what only the fleet knows (environment and stage names, text limits) and what each kind requires.
What needs the database (tasks named by id exist, branches exist) is checked by :mod:`tasks.submit`.

Every string field has a type that says what it may hold, so bad input is refused before a row is written
or a provider is paid:

- no field holds a control character (C0, DEL, C1) or a lone surrogate: NUL cannot be stored by
  PostgreSQL or passed to git, escapes garble terminals and logs;
- free text (``description``, ``goal``, ``feedback``) may hold the ordinary whitespace of prose: tab,
  newline, carriage return; a ``title`` is one line (tab only: it is a commit subject and a table cell);
- a branch (``branch``, ``base_branches``) must be a name git accepts, and never starts with '-'
  (:func:`environments.git.branch_name_problem`), so it cannot become a git option;
- a task id (``parent_id``, ``review_of``, ``depends_on``) has the shape of one (letters, digits, '.', '-',
  '_'); names (environment, stage, providers, plan key) hold no whitespace and do not start with '-'.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from environments.git import BRANCH_HINT, branch_name_problem
from switchyard.errors import InputError
from switchyard.fleet import Fleet, Kind

REQUIRED: dict[str, tuple[str, str]] = {
    "pr_review": ("branch", "the branch to review, e.g. --branch feature/login"),
    "pr_integ": ("branch", "the branch to merge, e.g. --branch feature/login"),
    "plan": ("goal", "what to plan, e.g. --goal 'add a health endpoint'"),
    "pr_impl": ("title", "what to implement, e.g. --title 'add a health endpoint'"),
    "dev_task": ("title", "what to do, e.g. --title 'tidy the README'"),
}
# C0 controls but tab, newline and carriage return; DEL; C1 controls; lone surrogates (JSON can carry them)
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
LINE_BREAK = re.compile("[\n\r\u2028\u2029]")
SPACE = re.compile(r"\s")
OUR_ERRORS = frozenset({"bad_character", "option_like", "bad_branch", "bad_task_id"})
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TASK_ID_SHAPE = "a letter or digit, then letters, digits, '.', '-', '_'"
CHAR_NAMES = {
    "\0": "NUL",
    "\t": "a tab",
    "\n": "a newline",
    "\r": "a carriage return",
    " ": "a space",
    "\x1b": "ESC",
    "\x7f": "DEL",
}


def _refusal(error_type: str, reason: str) -> PydanticCustomError:
    # the reason goes in as context, so braces in it (a branch with '@{') are not read as placeholders
    return PydanticCustomError(error_type, "{reason}", {"reason": reason})


def _refuse(what: str, char: str, at: int, fix: str) -> PydanticCustomError:
    shown = CHAR_NAMES.get(char, f"U+{ord(char):04X}")
    return _refusal("bad_character", f"has {what} ({shown}) at position {at}; {fix}")


def text(value: str) -> str:
    """Free text: anything printable, with tabs and line breaks."""
    if found := CONTROL.search(value):
        raise _refuse("a control character", found.group(), found.start(), "remove it")
    return value


def line(value: str) -> str:
    """One line of text: free text without line breaks."""
    if found := LINE_BREAK.search(text(value)):
        raise _refuse("a line break", found.group(), found.start(), "a title is one line: put the rest in description")
    return value


def name(value: str) -> str:
    """A name the fleet file declares (environment, stage, provider) or a plan's key for a sub-task."""
    if found := SPACE.search(text(value)):
        raise _refuse("whitespace", found.group(), found.start(), "names have none")
    if value.startswith("-"):
        raise _refusal("option_like", "starts with '-'; names never do")
    return value


def branch(value: str) -> str:
    """A branch git accepts, which can never be read as an option."""
    problem = branch_name_problem(text(value))
    if problem:
        raise _refusal("bad_branch", f"{problem}; {BRANCH_HINT}")
    return value


def task_ref(value: str) -> str:
    """The id of a task (a UUID for tasks Switchyard made); whether it exists is checked at submission."""
    if not TASK_ID.match(text(value)):
        raise _refusal("bad_task_id", f"is not a task id ({TASK_ID_SHAPE}); see: switchyard tasks list")
    return value


def printable(value: str) -> str:
    """Text a provider wrote (review comments, a plan's sub-tasks), made fit for a free-text field: control
    characters are dropped, as a provider's answer must not fail the follow-up it asks for. A user's are refused."""
    return CONTROL.sub("", value)


def one_line(value: str) -> str:
    """:func:`printable`, with line breaks turned into spaces: a provider's title for a sub-task."""
    return LINE_BREAK.sub(" ", printable(value))


Text = Annotated[str, AfterValidator(text)]
Name = Annotated[str, Field(max_length=64), AfterValidator(name)]
ShortName = Annotated[str, Field(max_length=32), AfterValidator(name)]
Title = Annotated[str, Field(max_length=200), AfterValidator(line)]
Branch = Annotated[str, Field(max_length=255), AfterValidator(branch)]
TaskRef = Annotated[str, Field(max_length=36, json_schema_extra={"pattern": TASK_ID.pattern}), AfterValidator(task_ref)]


class SubmitRequest(BaseModel):
    """What a user asks for. ``branch`` is reviewed (pr_review) or merged (pr_integ); ``goal`` is planned."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    kind: Kind
    environment: Name
    stage: Name = "dev"
    title: Title = ""
    description: Text = ""
    branch: Branch | None = None
    goal: Text | None = None
    parent_id: TaskRef | None = None
    depth: int = Field(default=0, ge=0, le=8)
    # routing: providers this task must not use (a review avoids its implementer) and how long it may
    # wait for a provider or budget (deferred with a countdown until then), seconds from submission
    avoid_providers: list[Name] = Field(default_factory=list, max_length=8)
    deadline_s: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    # the PR pipeline (tasks/pipeline.py): a pr_impl with ``pipeline`` is reviewed, sent back at most
    # [kinds.pr_impl] review_rounds times, then integrated; ``round`` counts implementations on one branch
    pipeline: bool = True
    round: int = Field(default=1, ge=1, le=20)
    feedback: Text = ""  # the review comments a re-implementation must address
    review_of: TaskRef | None = None  # pr_review: the pr_impl task it reviews
    implementer: ShortName | None = None  # pr_integ: who may resolve a conflict
    # task graphs (plans, --depends-on): run only after these tasks succeeded, on a branch made from theirs
    depends_on: list[TaskRef] = Field(default_factory=list, max_length=100)
    base_branches: list[Branch] = Field(default_factory=list, max_length=100)
    plan_key: ShortName | None = None


def parse_request(data: SubmitRequest | dict[str, Any]) -> SubmitRequest:
    """Validate raw input into a request; every problem is named in one InputError."""
    if isinstance(data, SubmitRequest):
        return data
    try:
        return SubmitRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise InputError(f"invalid task: {problems}") from None


def _describe(err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "task"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown field; allowed: {', '.join(SubmitRequest.model_fields)}"
    if err["type"] in OUR_ERRORS and isinstance(err["input"], str) and len(err["input"]) <= 80:
        return f"{field} {err['input']!r} {err['msg']}"  # the value, escaped: NUL shows as '\\x00'
    return f"{field}: {err['msg']}"


def check_against_fleet(request: SubmitRequest, fleet: Fleet) -> None:
    """Refuse a request the fleet cannot run: unknown environment or stage, missing fields, oversized text."""
    envs = fleet.environments
    if not envs.accepts(request.environment):
        raise InputError(f"unknown environment {request.environment!r}; known: {', '.join(envs.names)}")
    if request.stage not in envs.stages:
        raise InputError(f"unknown stage {request.stage!r}; known: {', '.join(envs.stages)}")
    field, hint = REQUIRED[request.kind]
    if not getattr(request, field):
        raise InputError(f"{request.kind} needs {field}: {hint}")
    if request.kind == "pr_integ" and request.stage != envs.stages[0]:
        raise InputError(
            f"pr_integ merges into the {envs.stages[0]!r} stage; later stages receive changes by promotion"
        )
    check_providers(request, fleet)
    max_depth = fleet.kind("plan").max_depth
    if request.kind == "plan" and request.depth > max_depth:
        raise InputError(
            f"plans may nest {max_depth} levels deep ([kinds.plan] max_depth); this one is {request.depth}"
        )
    limit = fleet.limits.max_text_chars
    for field in ("title", "description", "goal", "feedback"):
        value = getattr(request, field) or ""
        if len(value) > limit:
            raise InputError(f"{field} is {len(value)} characters; the limit is {limit} (limits.max_text_chars)")


def check_providers(request: SubmitRequest, fleet: Fleet) -> None:
    """A provider to avoid (``--avoid``) or an implementer must be one the fleet file declares."""
    known = ", ".join(fleet.providers)
    avoid = sorted(set(request.avoid_providers) - set(fleet.providers))
    if avoid:
        names = ", ".join(repr(name) for name in avoid)
        noun = "provider" if len(avoid) == 1 else "providers"
        raise InputError(f"cannot avoid {names}: the fleet has no such {noun}; its providers are {known}")
    if request.implementer and request.implementer not in fleet.providers:
        raise InputError(
            f"implementer {request.implementer!r}: the fleet has no such provider; its providers are {known}"
        )
