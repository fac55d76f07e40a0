"""Defense in depth: a value that slipped past every check still cannot become a git option.

Each helper that hands a ref to git puts ``--end-of-options`` before it, so ``--output=FILE`` (which makes
``git rev-list``/``log``/``diff`` write a file) or ``--upload-pack=CMD`` is read as a ref that does not
exist. The file the option would have written is the proof that git did not take it as an option.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from environments.git import ahead_behind, branch_exists, is_ancestor, ref_exists, rev_parse, run_git
from environments.merge import bring_in
from environments.sample import make_sample_repo
from environments.worktrees import ensure_worktree
from switchyard.errors import GitError


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_sample_repo(tmp_path / "sample", feature_branches=1)


def option(tmp_path: Path, name: str = "output") -> tuple[str, Path]:
    target = tmp_path / f"written-by-{name}"
    return f"--{name}={target}", target


def test_git_writes_the_file_when_the_option_is_not_fenced(repo: Path, tmp_path: Path) -> None:
    """The control: the same value as an option does write the file, so the tests below can fail."""
    value, target = option(tmp_path)
    run_git(["rev-list", "--count", value, "HEAD"], cwd=repo)
    assert target.exists()


def test_ref_helpers_read_an_option_as_a_ref(repo: Path, tmp_path: Path) -> None:
    value, target = option(tmp_path)
    with pytest.raises(GitError):
        rev_parse(value, cwd=repo)
    with pytest.raises(GitError):
        ahead_behind(value, "HEAD", cwd=repo)
    with pytest.raises(GitError):
        ahead_behind("HEAD", value, cwd=repo)
    assert not is_ancestor(value, "HEAD", cwd=repo)
    assert not ref_exists(value, cwd=repo)
    assert not branch_exists(value, cwd=repo)
    assert not target.exists()
    assert rev_parse("HEAD", cwd=repo) == run_git(["rev-parse", "HEAD"], cwd=repo).strip()  # still works
    assert ahead_behind("feature/sample-1", "main", cwd=repo)[0] >= 1


def test_bring_in_does_not_pass_an_option_to_merge(repo: Path, tmp_path: Path) -> None:
    """``base_branches`` of ``--upload-pack=…``: the tester's case, now merged as a (missing) branch."""
    worktree = ensure_worktree(repo, tmp_path / "wt", "task/x", start_point="main")
    value, target = option(tmp_path, "upload-pack")
    with pytest.raises(GitError, match="not something we can merge"):
        bring_in(worktree, [value], message="bring in")
    assert not target.exists()
    assert bring_in(worktree, ["feature/sample-1"], message="bring in") == ["feature/sample-1"]


def test_a_nul_byte_is_a_git_error_not_a_crash(repo: Path) -> None:
    with pytest.raises(GitError, match="NUL byte"):
        run_git(["rev-parse", "a\x00b"], cwd=repo)
    with pytest.raises(GitError, match="null byte"):
        branch_exists("a\x00b", cwd=repo)
