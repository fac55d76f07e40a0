"""A database already at head is told by one query, without Alembic (every CLI command starts by asking);
the quick reading of the version files agrees with Alembic's, and a database behind head still migrates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from store.migrate import at_head, current, downgrade, ensure_schema, head, quick_head

ROOT = Path(__file__).resolve().parent.parent


def test_quick_head_is_alembics_head() -> None:
    assert quick_head() == head()


def test_at_head_only_when_the_database_is_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert not at_head(url)  # no alembic_version table yet
    ensure_schema(url)
    assert at_head(url) and current(url) == head()
    previous = subprocess.run(  # the revision before head, from Alembic itself
        [
            sys.executable,
            "-c",
            "from store.migrate import alembic_config, head\n"
            "from alembic.script import ScriptDirectory\n"
            "print(ScriptDirectory.from_config(alembic_config()).get_revision(head()).down_revision)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    downgrade(url, previous)
    assert not at_head(url)
    ensure_schema(url)  # behind head: the full path migrates it
    assert at_head(url) and current(url) == head()


def test_a_database_at_head_is_checked_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ready.db'}"
    ensure_schema(url)
    program = (
        "import sys\nfrom store.migrate import ensure_schema_once\n"
        f"ensure_schema_once({url!r})\nprint('alembic' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
