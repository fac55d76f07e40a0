"""Create and repair a workspace: a bare clone of the target repository and one worktree per environment.

:func:`init_workspace` is idempotent: running it again recreates what is missing (a deleted worktree
directory, a deleted stage branch) and leaves everything else alone; existing branches keep their commits.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from environments.git import NAME_RE, branch_exists, check_branch_name, check_environment_name, run_git
from environments.layout import (
    WorkspaceConfig,
    env_branch,
    holding,
    read_config,
    repo_dir,
    repo_lock,
    stage_branch,
    write_config,
)
from environments.worktrees import ensure_worktree
from switchyard.errors import InputError, NotFound

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
    """Clone ``repo`` bare into ``workspace/.repo`` and give each environment its worktree and stage branches.

    ``repo`` is a local path or a URL. New environment branches start at ``base_branch`` (default: the
    source's HEAD branch); a missing stage branch is recreated there too, i.e. as "nothing promoted yet".
    """
    _check_request(environments, stages, base_port)
    workspace = workspace.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    source = _normalize_source(repo)
    with holding(repo_lock(workspace)):
        fresh = not repo_dir(workspace).exists()
        bare = _ensure_clone(source, repo_dir(workspace))
        try:
            base = _base_branch(bare, base_branch)
        except InputError:
            if fresh:  # do not leave the workspace bound to a repository it cannot use
                shutil.rmtree(bare)
            raise
        for name in environments:
            _ensure_environment(workspace, bare, name, stages, base)
        config = WorkspaceConfig(source, base, list(environments), list(stages), base_port, check_command)
        write_config(workspace, config)
    return list_environments(workspace)


def list_environments(workspace: Path) -> list[EnvironmentInfo]:
    """The environments of an initialized workspace, in configured order (ports follow that order)."""
    workspace = workspace.resolve()
    config = read_config(workspace)
    return [_info(workspace, config, index, name) for index, name in enumerate(config.environments)]


def environment_info(workspace: Path, environment: str) -> EnvironmentInfo:
    """One environment of the workspace; NotFound naming the known ones when it is not there."""
    for info in list_environments(workspace):
        if info.name == environment:
            return info
    known = ", ".join(info.name for info in list_environments(workspace))
    raise NotFound(f"unknown environment {environment!r}; this workspace has {known}")


def _info(workspace: Path, config: WorkspaceConfig, index: int, name: str) -> EnvironmentInfo:
    return EnvironmentInfo(
        name=name,
        path=workspace / name,
        branch=env_branch(name),
        port=config.base_port + index,
        check_command=config.check_command,
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


def _ensure_environment(workspace: Path, bare: Path, name: str, stages: list[str], base: str) -> None:
    ensure_worktree(bare, workspace / name, env_branch(name), start_point=base)
    for stage in stages:
        branch = stage_branch(name, stage)
        if not branch_exists(branch, cwd=bare):
            run_git(["branch", "--no-track", branch, base], cwd=bare)
