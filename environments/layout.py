"""Where things live under a workspace root, and the locks that guard them.

<workspace>/
    .repo/                  bare clone of the target repository (remote ``origin`` = the source)
    .locks/repo.lock        serializes every ``git worktree`` command (add, remove, prune, list) and branch
                            creation and deletion on .repo; taken inside an env lock, never around one
    .locks/<env>.lock       serializes merges into one environment's branch
    .tasks/<task_id>/       one worktree per writing task
    .promote/<env>-<stage>-*/  a temporary worktree where a promotion runs the check (removed after)
    <env>/                  one worktree per environment, on branch env/<env>
    workspace.json          what init_workspace was asked for (read back by list_environments)

``.tasks`` and ``.promote`` are where check commands run, so they must look like a clone of the user's
repository and nothing more: no tool configuration may be found above them (pytest walks up from its rootdir
candidates for ``pyproject.toml``, ``setup.cfg``, ``pytest.ini``, ``tox.ini``; a workspace inside a project,
e.g. ``./.switchyard`` of Switchyard's own checkout, would hand it that project's settings). When the
workspace has such a file above it, both live in the work root :func:`work_root` picks instead: a private
directory under the system's temporary directory (``$TMPDIR/switchyard-<uid>/<workspace name>-<hash>``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import filelock

from environments.git import check_environment_name
from switchyard.errors import GitError, InputError, NotFound

REPO_DIR = ".repo"
LOCKS_DIR = ".locks"
TASKS_DIR = ".tasks"
PROMOTE_DIR = ".promote"
METADATA_FILE = "workspace.json"
LOCK_TIMEOUT_S = 300.0
# files a check's tools read from the directories above the one they run in (pytest, tox, setuptools, mypy,
# ruff, npm): none may be found above a directory where a check runs
CONFIG_FILES = (
    "pyproject.toml", "setup.cfg", "setup.py", "pytest.ini", ".pytest.ini", "tox.ini", "conftest.py",
    "mypy.ini", ".mypy.ini", "ruff.toml", ".ruff.toml", "package.json",
)  # fmt: skip
log = logging.getLogger(__name__)


def repo_dir(workspace: Path) -> Path:
    return workspace / REPO_DIR


def tasks_dir(workspace: Path) -> Path:
    return work_root(workspace) / TASKS_DIR


def promote_dir(workspace: Path) -> Path:
    return work_root(workspace) / PROMOTE_DIR


def configs_above(directory: Path) -> list[Path]:
    """The tool configuration files in ``directory`` and every directory above it."""
    resolved = directory.resolve()
    return [
        folder / name for folder in (resolved, *resolved.parents) for name in CONFIG_FILES if (folder / name).is_file()
    ]


def work_root(workspace: Path) -> Path:
    """Where task worktrees and promotion worktrees live: the workspace itself when no configuration file is
    above it, else a private directory under the system's temporary directory (see the module docstring)."""
    return Path(_work_root(str(workspace.resolve())))


@functools.lru_cache(maxsize=64)
def _work_root(workspace: str) -> str:
    found = configs_above(Path(workspace))
    if not found:
        return workspace
    digest = hashlib.sha256(workspace.encode()).hexdigest()[:12]
    private = Path(tempfile.gettempdir()) / f"switchyard-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    root = private / f"{Path(workspace).name}-{digest}"
    root.mkdir(mode=0o700, exist_ok=True)
    if configs_above(root):
        log.warning("%s has configuration files above it too: %s", root, ", ".join(map(str, configs_above(root))))
    return str(root)


def env_branch(environment: str) -> str:
    return f"env/{environment}"


def stage_branch(environment: str, stage: str) -> str:
    """``dev`` is the environment's own branch; every other stage is ``env/<env>-<stage>``."""
    return env_branch(environment) if stage == "dev" else f"env/{environment}-{stage}"


def _lock(workspace: Path, name: str, timeout: float) -> filelock.FileLock:
    locks = workspace / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(locks / f"{name}.lock", timeout=timeout)


def repo_lock(workspace: Path, *, timeout: float = LOCK_TIMEOUT_S) -> filelock.FileLock:
    """The lock around worktree and branch bookkeeping on the shared bare repository."""
    return _lock(workspace, "repo", timeout)


def env_lock(workspace: Path, environment: str, *, timeout: float = LOCK_TIMEOUT_S) -> filelock.FileLock:
    """The lock that serializes every write to ``env/<environment>`` (merges, promotions)."""
    return _lock(workspace, check_environment_name(environment), timeout)


_held = threading.local()  # the lock files this thread holds, so that holding one again does not wait for itself


@contextmanager
def holding(lock: filelock.FileLock) -> Iterator[None]:
    """Hold ``lock``; a timeout becomes a GitError that names the lock file that was waited for.

    Re-entrant per thread: a function that takes the repository lock can be called from a section that holds
    it already (two ``flock`` handles of one process on one file would otherwise wait for each other).
    """
    paths: set[str] = _held.__dict__.setdefault("paths", set())
    key = os.path.realpath(lock.lock_file)
    if key in paths:
        yield
        return
    try:
        lock.acquire()
    except filelock.Timeout:
        raise GitError(f"timed out waiting for {lock.lock_file}; another git operation holds it") from None
    paths.add(key)
    try:
        yield
    finally:
        paths.discard(key)
        lock.release()


@dataclass(frozen=True)
class WorkspaceConfig:
    """What :func:`environments.workspace.init_workspace` was asked for, over all its runs.

    ``ports`` and ``check_commands`` hold each environment's own settings; an environment missing from them
    (a file written before they existed) gets ``base_port`` + its position and ``check_command``.
    """

    repository: str
    base_branch: str
    environments: list[str]
    stages: list[str]
    base_port: int
    check_command: str
    ports: dict[str, int] = field(default_factory=dict)
    check_commands: dict[str, str] = field(default_factory=dict)

    def port_of(self, environment: str) -> int:
        return self.ports.get(environment, self.base_port + self.environments.index(environment))

    def check_of(self, environment: str) -> str:
        return self.check_commands.get(environment, self.check_command)


def write_config(workspace: Path, config: WorkspaceConfig) -> None:
    """Write ``workspace.json`` atomically (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=workspace, prefix=".workspace-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(config), handle, indent=2)
        handle.write("\n")
    Path(tmp).replace(workspace / METADATA_FILE)


def read_config(workspace: Path) -> WorkspaceConfig:
    path = workspace / METADATA_FILE
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{workspace} is not a Switchyard workspace (no {METADATA_FILE}); run init first") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    try:
        return WorkspaceConfig(**raw)
    except TypeError as exc:
        raise InputError(f"{path} is not a workspace file Switchyard wrote ({exc}); run init again") from None


def read_config_or_none(workspace: Path) -> WorkspaceConfig | None:
    """The workspace's config, or None when the workspace was never initialized."""
    if not (workspace / METADATA_FILE).exists():
        return None
    return read_config(workspace)


def require_environment(workspace: Path, environment: str) -> WorkspaceConfig:
    """The workspace's config, after checking ``environment`` is one of its environments (NotFound if not)."""
    check_environment_name(environment)
    config = read_config(workspace)
    if environment not in config.environments:
        raise NotFound(unknown_environment(environment, config.environments))
    return config


def unknown_environment(environment: str, known: list[str]) -> str:
    """The message for an environment name the workspace does not have: it lists the ones it has."""
    return f"unknown environment {environment!r}; this workspace has {', '.join(known) or 'none'}"
