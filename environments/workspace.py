"""Create and repair a workspace: a bare clone of the target repository and one worktree per environment.

:func:`ensure_workspace` is idempotent: running it again recreates what is missing (a deleted worktree
directory, a deleted stage branch) and leaves everything else alone: existing branches keep their commits,
a working copy keeps its checked-out branch and uncommitted changes, and environments not named in this
run keep their place, port and check command. It reports every change it made.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from environments.git import (
    NAME_RE,
    ahead_behind,
    branch_exists,
    changed_files,
    check_branch_name,
    check_environment_name,
    current_branch,
    run_git,
)
from environments.layout import (
    WorkspaceConfig,
    env_branch,
    holding,
    read_config,
    read_config_or_none,
    repo_dir,
    repo_lock,
    stage_branch,
    unknown_environment,
    write_config,
)
from environments.worktrees import ensure_worktree, list_worktrees, worktree_git
from store import repo
from switchyard.errors import InputError, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

CLONE_TIMEOUT_S = 600
MAX_PORT = 65535


@dataclass(frozen=True)
class EnvironmentInfo:
    """One environment: its worktree, its branch, its port, and its stages as (stage, branch) pairs."""

    name: str
    path: Path
    branch: str
    port: int
    check_command: str
    repository: str
    stages: list[tuple[str, str]]


def record(session: Session, info: EnvironmentInfo) -> None:
    """Write the environment (path, branch, port, check, repository, stages) to SQL, replacing what was there."""
    repo.upsert_environment(
        session,
        name=info.name,
        path=str(info.path),
        branch=info.branch,
        port=info.port,
        check_command=info.check_command,
        repository=info.repository,
        stages=list(info.stages),
    )


@dataclass(frozen=True)
class WorkspaceReport:
    """What :func:`ensure_workspace` found and did: ``changes`` made, and ``kept`` local work left alone."""

    environments: list[EnvironmentInfo]
    changes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def init_workspace(
    repo: str,
    workspace: Path,
    environments: list[str],
    stages: list[str],
    *,
    base_port: int,
    check_command: str,
    base_branch: str | None = None,
) -> list[EnvironmentInfo]:
    """:func:`ensure_workspace` for callers that only need the environments."""
    report = ensure_workspace(
        repo, workspace, environments, stages, base_port=base_port, check_command=check_command, base_branch=base_branch
    )
    return report.environments


def ensure_workspace(
    repo: str,
    workspace: Path,
    environments: list[str],
    stages: list[str],
    *,
    base_port: int,
    check_command: str,
    base_branch: str | None = None,
    ports: Mapping[str, int] | None = None,
    replace_check: bool = False,
) -> WorkspaceReport:
    """Clone ``repo`` bare into ``workspace/.repo`` and give each environment its worktree and stage branches.

    ``repo`` is a local path or a URL. New environment branches start at ``base_branch`` (default: the
    source's HEAD branch); a missing stage branch is recreated there too, i.e. as "nothing promoted yet".
    A new environment gets ``ports[name]`` (default ``base_port`` + its position) and ``check_command``; an
    existing one keeps its check command unless ``replace_check``.
    """
    _check_request(environments, stages, base_port)
    workspace = workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    source = _normalize_source(repo)
    changes: list[str] = []
    kept: list[str] = []
    with holding(repo_lock(workspace)):
        fresh = not repo_dir(workspace).exists()
        bare = _ensure_clone(source, repo_dir(workspace))
        if fresh:
            changes.append(f"cloned {source} into {bare}")
        try:
            base = _base_branch(bare, base_branch)
        except InputError:
            if fresh:  # do not leave the workspace bound to a repository it cannot use
                shutil.rmtree(bare)
            raise
        for name in environments:
            changes += _ensure_environment(workspace, bare, name, stages, base)
            kept += _local_work(workspace / name, name, base)
        old = read_config_or_none(workspace)
        config = _merged_config(
            old,
            WorkspaceConfig(source, base, list(environments), list(stages), base_port, check_command),
            ports=ports or {},
            replace_check=replace_check,
        )
        if config != old:
            write_config(workspace, config)
    return WorkspaceReport(list_environments(workspace), changes, kept)


def _merged_config(
    old: WorkspaceConfig | None, asked: WorkspaceConfig, *, ports: Mapping[str, int], replace_check: bool
) -> WorkspaceConfig:
    """The config after this run: environments named before keep their place and their settings."""
    names = list(old.environments) if old else []
    names += [name for name in asked.environments if name not in names]
    port_of = {name: old.port_of(name) for name in old.environments} if old else {}
    check_of = {name: old.check_of(name) for name in old.environments} if old else {}
    for name in asked.environments:
        port_of[name] = ports.get(name) or port_of.get(name) or asked.base_port + names.index(name)
        if replace_check or name not in check_of:
            check_of[name] = asked.check_command
    return WorkspaceConfig(
        asked.repository,
        asked.base_branch,
        names,
        asked.stages,
        asked.base_port,
        asked.check_command,
        port_of,
        check_of,
    )


def list_environments(workspace: Path) -> list[EnvironmentInfo]:
    """The environments of an initialized workspace, in configured order (ports follow that order)."""
    workspace = workspace.resolve()
    config = read_config(workspace)
    return [_info(workspace, config, index, name) for index, name in enumerate(config.environments)]


def environment_info(workspace: Path, environment: str) -> EnvironmentInfo:
    """One environment of the workspace; NotFound naming the known ones when it is not there."""
    infos = list_environments(workspace)
    for info in infos:
        if info.name == environment:
            return info
    raise NotFound(unknown_environment(environment, [info.name for info in infos]))


def _info(workspace: Path, config: WorkspaceConfig, index: int, name: str) -> EnvironmentInfo:
    return EnvironmentInfo(
        name=name,
        path=workspace / name,
        branch=env_branch(name),
        port=config.port_of(name),
        check_command=config.check_of(name),
        repository=config.repository,
        stages=[(stage, stage_branch(name, stage)) for stage in config.stages],
    )


def _check_request(environments: list[str], stages: list[str], base_port: int) -> None:
    if not environments:
        raise InputError("name at least one environment, e.g. dev1")
    for name in environments:
        check_environment_name(name)
    for stage in stages:
        if not NAME_RE.match(stage):
            raise InputError(f"stage name {stage!r} must be lowercase letters, digits, '-' or '_'")
    for what, names in (("environment", environments), ("stage", stages)):
        if len(set(names)) != len(names):
            raise InputError(f"{what} names must be unique, got {names}")
    if not 1024 <= base_port <= MAX_PORT - len(environments) + 1:
        raise InputError(f"base_port {base_port} must leave room for {len(environments)} ports in 1024..{MAX_PORT}")


URL_RE = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)")  # scheme://… or scp-like user@host:path


def _normalize_source(repo: str) -> str:
    if not repo or repo.startswith("-"):
        raise InputError(f"repository {repo!r} must be a local path or a URL")
    local = Path(repo).expanduser()
    if local.exists():
        return str(local.resolve())
    if not URL_RE.match(repo):
        raise InputError(f"repository {repo!r} does not exist; give the path of a git repository or its URL")
    return repo


def _ensure_clone(source: str, bare: Path) -> Path:
    if not bare.exists():
        run_git(["clone", "--bare", "--quiet", "--", source, str(bare)], cwd=bare.parent, timeout=CLONE_TIMEOUT_S)
        # A bare clone fetches into refs/heads directly; later fetches must not move the env branches.
        run_git(["config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"], cwd=bare)
        run_git(["fetch", "--quiet", "origin"], cwd=bare, timeout=CLONE_TIMEOUT_S)  # origin/* for status and sync
        return bare
    if run_git(["rev-parse", "--is-bare-repository"], cwd=bare, check=False).strip() != "true":
        raise InputError(f"{bare} exists but is not a bare git repository; remove it and run init again")
    origin = run_git(["config", "--get", "remote.origin.url"], cwd=bare, check=False).strip()
    if origin != source:
        raise InputError(
            f"the workspace {bare.parent} holds a clone of {origin!r}, not {source!r}; "
            f"pass --workspace DIR for a new workspace, or remove {bare.parent} to start over"
        )
    return bare


def _base_branch(bare: Path, base_branch: str | None) -> str:
    if base_branch is None:
        base_branch = run_git(["symbolic-ref", "--short", "HEAD"], cwd=bare).strip()
    check_branch_name(base_branch)
    if not branch_exists(base_branch, cwd=bare):
        raise InputError(f"base branch {base_branch!r} does not exist in the repository")
    return base_branch


def _ensure_environment(workspace: Path, bare: Path, name: str, stages: list[str], base: str) -> list[str]:
    """Recreate what is missing of one environment; returns what was made, one line each."""
    made: list[str] = []
    path = workspace / name
    branch = env_branch(name)
    worktree_git(bare, ["prune"])
    if path.resolve() not in list_worktrees(bare):  # a working copy on any branch is the user's to keep
        existed = branch_exists(branch, cwd=bare)
        ensure_worktree(bare, path, branch, start_point=base)
        made.append(f"{name}: working copy {path} on {branch}" + ("" if existed else f" (new branch from {base})"))
    for stage in stages:
        stage_ref = stage_branch(name, stage)
        if not branch_exists(stage_ref, cwd=bare):
            run_git(["branch", "--no-track", stage_ref, base], cwd=bare)
            made.append(f"{name}: branch {stage_ref} at {base}")
    return made


def _local_work(path: Path, name: str, base: str) -> list[str]:
    """A line about the local work found in a working copy (left as it is), or nothing."""
    branch = current_branch(cwd=path)
    ahead, _ = ahead_behind("HEAD", base, cwd=path)
    dirty = len(changed_files(cwd=path))
    notes = [] if branch == env_branch(name) else [f"on {branch or 'a detached HEAD'}"]
    if ahead:
        notes.append(f"{ahead} commit(s) not in {base}")
    if dirty:
        notes.append(f"{dirty} uncommitted file(s)")
    return [f"{name}: left as is ({', '.join(notes)})"] if notes else []
