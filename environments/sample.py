"""A small, realistic target repository for the demo and the tests.

:func:`make_sample_repo` writes a tiny Python package with tests and a Makefile, commits it on ``main``, and
adds ``feature/sample-1`` … ``feature/sample-N``: each adds one new module on top of ``main``, so the
branches merge without conflicts and give reviewers a real diff. Contents and commit dates are fixed, so
the same call always produces the same commits.
"""

from __future__ import annotations

from pathlib import Path

from environments.git import NO_SIGN, run_git
from switchyard.errors import InputError

SAMPLE_DATE = "2025-01-01T12:00:00+00:00"
MAX_FEATURES = 50
TOPICS = ["farewell", "shout", "whisper", "initials", "repeat", "title", "reverse", "count"]

BASE_FILES: dict[str, str] = {
    "README.md": (
        "# greeter\n\nA tiny greeting library, the sample target repository of Switchyard's demo.\n\n"
        "```\nmake test\n```\n"
    ),
    "Makefile": ".PHONY: test\ntest:\n\tpython3 -m unittest discover -s tests -v\n",
    ".gitignore": "__pycache__/\n*.pyc\n",
    "app/__init__.py": ('"""The greeter package."""\n\nfrom app.greeting import greet\n\n__all__ = ["greet"]\n'),
    "app/greeting.py": (
        '"""Greetings."""\n\n\ndef greet(name: str) -> str:\n'
        '    """Return a friendly greeting for ``name``."""\n'
        '    name = name.strip() or "world"\n    return f"Hello, {name}!"\n'
    ),
    "tests/test_greeting.py": (
        "import unittest\n\nfrom app.greeting import greet\n\n\nclass GreetTest(unittest.TestCase):\n"
        "    def test_greets_by_name(self) -> None:\n"
        '        self.assertEqual(greet("Ada"), "Hello, Ada!")\n\n'
        "    def test_blank_name_greets_the_world(self) -> None:\n"
        '        self.assertEqual(greet("  "), "Hello, world!")\n\n\n'
        'if __name__ == "__main__":\n    unittest.main()\n'
    ),
}


def feature_file(index: int) -> tuple[str, str]:
    """The path and contents of the one file ``feature/sample-<index>`` adds."""
    topic = TOPICS[(index - 1) % len(TOPICS)]
    body = (
        f'"""Feature {index}: {topic} greetings."""\n\n'
        "from app.greeting import greet\n\n\n"
        f"def {topic}_{index}(name: str) -> str:\n"
        f'    """Greet ``name`` in the {topic} style (sample feature {index})."""\n'
        f'    return greet(name) + " ({topic} #{index})"\n'
    )
    return f"app/feature_{index}.py", body


def make_sample_repo(path: Path, *, feature_branches: int = 5) -> Path:
    """Create the sample repository at ``path`` (which must be missing or empty) and return ``path``."""
    if not 0 <= feature_branches <= MAX_FEATURES:
        raise InputError(f"feature_branches must be between 0 and {MAX_FEATURES}, got {feature_branches}")
    if path.exists() and any(path.iterdir()):
        raise InputError(f"{path} is not empty; the sample repository needs a new directory")
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--initial-branch=main"], cwd=path)
    _commit_files(path, BASE_FILES, "Initial commit: greeter package with tests")
    for index in range(1, feature_branches + 1):
        run_git(["checkout", "--quiet", "-b", f"feature/sample-{index}", "main"], cwd=path)
        name, body = feature_file(index)
        _commit_files(path, {name: body}, f"Add {name}")
    run_git(["checkout", "--quiet", "main"], cwd=path)
    return path


def _commit_files(repo: Path, files: dict[str, str], message: str) -> None:
    for name, body in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    run_git(["add", "--", *files], cwd=repo)
    dates = {"GIT_AUTHOR_DATE": SAMPLE_DATE, "GIT_COMMITTER_DATE": SAMPLE_DATE}
    run_git([*NO_SIGN, "commit", "--quiet", "--no-verify", "-m", message], cwd=repo, env=dates)
