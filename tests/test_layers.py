"""The layers are enforced: import-linter's contracts in pyproject.toml hold for the tree, and they fail when a
lower layer imports a higher one, when two modules of a package import each other (even late, inside a
function), or when the simulator reaches into the product. ``make lint`` runs the same check."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "switchyard",
    "store",
    "environments",
    "providers",
    "routing",
    "tasks",
    "alerts",
    "reports",
    "workers",
    "web",
    "ops",
    "cli",
    "simulator",
)
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The project's packages and pyproject.toml in a scratch directory, to be broken on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "celeryconfig.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("store/db.py", "import cli.render\n", "Layers, top to bottom"),
        ("switchyard/settings.py", "def _late() -> None:\n    import routing.route\n", "Layers, top to bottom"),
        ("routing/route.py", "import celeryconfig\n", "celeryconfig"),
        ("simulator/core.py", "import providers.base\n", "The simulator is a server of its own"),
        ("tasks/send.py", "def _late() -> None:\n    import tasks.submit\n", "No circles"),
    ],
)
def test_a_broken_rule_fails_the_check(tree_copy: Path, module: str, line: str, contract: str) -> None:
    target = tree_copy / module
    target.write_text(target.read_text() + "\n\n" + line)
    done = lint_imports(tree_copy)
    assert done.returncode == 1, done.stdout
    broken = done.stdout.split("Broken contracts", 1)[1]
    assert contract in broken


def test_celeryconfig_imports_only_the_foundation() -> None:
    """A module, not a package, so import-linter sees it only from outside: its own imports are checked here."""
    tree = ast.parse((ROOT / "celeryconfig.py").read_text())
    ours = set(PACKAGES)
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported & ours == {"switchyard"}


def test_readme_layout_and_contracts_name_every_package() -> None:
    """A new top-level package must join the README's layout table and import-linter's root packages."""

    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(PACKAGES)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert set(config["root_packages"]) == packages
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    assert all(f"`{name}/`" in layout for name in packages)
