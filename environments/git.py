"""Running git: one function that every git call goes through, and the name checks in front of it.

Git is always run as an argument list (never through a shell), with prompts off, the C locale (so error
texts are stable) and a fixed identity for the commits Switchyard makes. Every failure is a
:class:`~switchyard.errors.GitError` that carries the command and git's stderr.

Values someone else chose (branch names from a payload, refs from a provider's answer) are refused at the
door when they start with '-' (:func:`branch_name_problem`), and are also passed after ``--end-of-options``
(or ``--`` for paths), so that a value which slipped past a check still cannot become a git option.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from switchyard.errors import GitError, InputError

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# What git check-ref-format refuses anywhere in a ref name: control characters, space, ~ ^ : ? * [ \, '..', '@{'
REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")
BRANCH_HINT = "use letters, digits and '/', '-', '_', '.', e.g. 'feature/login-form'"
# Put before any value a user or a provider chose (a branch, a ref): git then reads it as a value even when it
# starts with '-' (git >= 2.24), whatever checked it before.
END_OF_OPTIONS = "--end-of-options"
# Commits Switchyard makes must not wait for a signing agent or passphrase the user's config may ask for.
NO_SIGN = ["-c", "commit.gpgsign=false"]
# Set by a calling git hook; inherited, they would point every command at the wrong repository.
REPO_POINTERS = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX"}
)


@dataclass(frozen=True)
class Identity:
    """Who commits: used as both author and committer unless the caller's ``env`` says otherwise."""

    name: str = "Switchyard"
    email: str = "switchyard@localhost"

    def as_env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


SWITCHYARD_IDENTITY = Identity()


def git_env(extra: Mapping[str, str] | None = None, *, identity: Identity = SWITCHYARD_IDENTITY) -> dict[str, str]:
    """The environment git runs with. The process environment is copied so PATH and HOME still work."""
    env = {key: value for key, value in os.environ.items() if key not in REPO_POINTERS}
    env.update(identity.as_env())
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C", "GIT_EDITOR": "true"})
    if extra:
        env.update(extra)
    return env


def run_git(
    args: list[str],
    *,
    cwd: Path,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
    identity: Identity = SWITCHYARD_IDENTITY,
) -> str:
    """Run ``git <args>`` in ``cwd`` and return its stdout; a non-zero exit raises GitError when ``check``."""
    command = ["git", *args]
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=git_env(env, identity=identity),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {timeout:g}s", command=command) from None
    except OSError as exc:
        raise GitError(f"could not run git in {cwd}: {exc.strerror}", command=command) from None
    except ValueError:  # an argument with a NUL byte: no process can be given it
        raise GitError(f"git {args[0]} was given an argument with a NUL byte", command=command) from None
    if check and proc.returncode != 0:
        first = proc.stderr.strip().splitlines()[:1] or [f"exit status {proc.returncode}"]
        raise GitError(f"git {' '.join(args)} failed: {first[0]}", command=command, stderr=proc.stderr)
    return proc.stdout


def git_ok(args: list[str], *, cwd: Path) -> bool:
    """True when ``git <args>`` exits 0 (for questions like ``merge-base --is-ancestor``)."""
    command = ["git", *args]
    try:
        proc = subprocess.run(command, cwd=cwd, env=git_env(), capture_output=True, timeout=120, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:  # ValueError: an argument with a NUL byte
        raise GitError(f"could not run git {args[0]} in {cwd}: {exc}", command=command) from None
    return proc.returncode == 0


# A branch name's rules (git check-ref-format --branch) besides the forbidden characters, each with its reason
BRANCH_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda name: not name or name != name.strip(), "is empty or has surrounding spaces"),
    (lambda name: name.startswith("-"), "starts with '-', so git would read it as an option"),
    (lambda name: name in {"HEAD", "@"}, "is 'HEAD' or '@', which git reserves"),
    (
        lambda name: any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")),
        "has a part that starts with '.' or ends with '.lock'",
    ),
    (
        lambda name: name.startswith("/") or name.endswith(("/", ".")) or "//" in name,
        "starts or ends with '/', ends with '.', or has '//'",
    ),
)


def branch_name_problem(name: str) -> str | None:
    """Why git would refuse ``name`` as a branch name (``git check-ref-format --branch``), or None.

    Pure, so the payload schema can refuse a bad name before anything runs; a name starting with '-' is
    refused first of all, so no branch name can ever be read by git as an option."""
    for broken, problem in BRANCH_RULES:
        if broken(name):
            return problem
    bad = REF_FORBIDDEN.search(name)
    return f"has {_shown(bad.group())}, which git does not allow in a branch name" if bad else None


def _shown(text: str) -> str:
    if text.isprintable() and not text.isspace():
        return repr(text)
    return " ".join(f"U+{ord(char):04X}" for char in text)


def check_branch_name(name: str) -> str:
    """Return ``name`` if git accepts it as a branch name; otherwise InputError saying why and what works."""
    problem = branch_name_problem(name)
    if problem is None:  # git has the last word (its rules may be stricter than ours in another version)
        proc = subprocess.run(
            ["git", "check-ref-format", "--branch", name],
            cwd="/",
            env=git_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0 or proc.stdout.strip() != name:
            problem = "is not a valid git branch name"
    if problem is not None:
        raise InputError(f"branch name {name!r} {problem}; {BRANCH_HINT}")
    return name


def check_environment_name(name: str) -> str:
    """Environment names are also directory and branch parts: lowercase letters, digits, '-' and '_'."""
    if not NAME_RE.match(name):
        raise InputError(
            f"environment name {name!r} must be 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter (e.g. dev1)"
        )
    return name


def check_task_id(task_id: str) -> str:
    """Task ids become directory names under ``.tasks``: letters, digits, '.', '-', '_', no leading dot."""
    if not TASK_ID_RE.match(task_id) or ".." in task_id:
        raise InputError(
            f"task id {task_id!r} must be 1-128 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return task_id


def rev_parse(rev: str, *, cwd: Path) -> str:
    """The commit sha ``rev`` names; GitError when it names nothing."""
    return run_git(["rev-parse", "--verify", "--quiet", END_OF_OPTIONS, f"{rev}^{{commit}}"], cwd=cwd).strip()


def branch_exists(branch: str, *, cwd: Path) -> bool:
    return git_ok(["show-ref", "--verify", "--quiet", END_OF_OPTIONS, f"refs/heads/{branch}"], cwd=cwd)


def current_branch(*, cwd: Path) -> str | None:
    """The branch checked out in the worktree ``cwd``, or None when HEAD is detached."""
    out = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=cwd, check=False).strip()
    return out or None


def is_ancestor(ancestor: str, descendant: str, *, cwd: Path) -> bool:
    return git_ok(["merge-base", "--is-ancestor", END_OF_OPTIONS, ancestor, descendant], cwd=cwd)


def status_porcelain(*, cwd: Path) -> str:
    return run_git(["status", "--porcelain"], cwd=cwd)


def ahead_behind(ref: str, base: str, *, cwd: Path) -> tuple[int, int]:
    """How many commits ``ref`` has that ``base`` lacks, and how many ``base`` has that ``ref`` lacks."""
    ahead, behind = run_git(["rev-list", "--left-right", "--count", END_OF_OPTIONS, f"{ref}...{base}"], cwd=cwd).split()
    return int(ahead), int(behind)


def ref_exists(ref: str, *, cwd: Path) -> bool:
    """True when the full ref name ``ref`` (e.g. ``refs/remotes/origin/main``) exists."""
    return git_ok(["show-ref", "--verify", "--quiet", END_OF_OPTIONS, ref], cwd=cwd)


def changed_files(*, cwd: Path, untracked: bool = True) -> list[tuple[str, str]]:
    """Uncommitted changes as (two-letter porcelain status, path); renames give the new path."""
    flag = "--untracked-files=all" if untracked else "--untracked-files=no"
    fields = run_git(["status", "--porcelain", "-z", flag], cwd=cwd).split("\0")
    changes: list[tuple[str, str]] = []
    skip = False
    for entry in fields:
        if skip or not entry:
            skip = False
            continue
        code, path = entry[:2], entry[3:]
        changes.append((code, path))
        skip = code[0] in "RC"  # the next field is the rename's source path
    return changes


def user_identity(*, cwd: Path) -> Identity:
    """The identity the user configured for ``cwd`` (commits people ask for carry their name), else ours."""
    name = run_git(["config", "--get", "user.name"], cwd=cwd, check=False).strip()
    email = run_git(["config", "--get", "user.email"], cwd=cwd, check=False).strip()
    return Identity(name, email) if name and email else SWITCHYARD_IDENTITY


def redact_url(url: str) -> str:
    """``url`` without a password or token in its user part (``https://user:token@host`` → ``https://***@host``)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]+@", r"\1***@", url)
