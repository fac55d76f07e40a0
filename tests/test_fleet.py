"""The fleet file: the default loads, profiles overlay, and every mistake names file, line and key."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from switchyard.errors import ConfigError
from switchyard.fleet import KINDS, load_fleet, locate

DEFAULT = Path(__file__).resolve().parent.parent / "switchyard.toml"


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT.read_text()
    assert old in text, f"fixture text {old!r} not in switchyard.toml"
    path = tmp_path / "fleet.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_default_fleet_matches_the_design() -> None:
    fleet = load_fleet(DEFAULT)
    groups = {g.name: (g.queue, g.sessions, g.kinds, g.ladder) for g in fleet.groups}
    assert groups == {
        "high_level": ("high_level", 6, ["plan"], ["claude"]),
        "dev_workers": ("dev_workers", 5, ["dev_task"], ["ollama", "codex"]),
        "pr_review": ("pr_review", 3, ["pr_review"], ["claude", "ollama"]),
        "pr_impl": ("pr_impl", 4, ["pr_impl"], ["codex", "ollama"]),
        "pr_integ": ("pr_integ", 3, ["pr_integ"], ["ollama"]),
    }
    assert fleet.environments.names == ["dev1", "dev2", "dev3", "dev4", "dev5"]
    assert fleet.environments.port_for("dev3") == 8083
    assert {b.window: b.cap_usd for b in fleet.budgets} == {"day": 50.0, "hour": 10.0}
    assert (fleet.breaker.failure_threshold, fleet.breaker.open_seconds) == (5, 60.0)
    assert {fleet.group_for_kind(k).name for k in KINDS} == set(groups)


def test_profile_overlays_policies_and_features() -> None:
    production = load_fleet(DEFAULT, "production")
    assert production.breaker.failure_threshold == 3
    assert production.features == {"simulator": False}
    assert load_fleet(DEFAULT, "development").features == {"simulator": True}


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match="profile 'prod' is not defined"):
        load_fleet(DEFAULT, "prod")


def test_prices_are_effective_dated(tmp_path: Path) -> None:
    path = edited(
        tmp_path,
        "{ effective = 2025-09-29, input = 3.0,",
        "{ effective = 2026-06-01, input = 4.0, output = 16.0 },\n  { effective = 2025-09-29, input = 3.0,",
    )
    fleet = load_fleet(path)
    assert fleet.price("claude", "claude-sonnet-4-5", date(2026, 1, 1))[1].input == 3.0
    version, price = fleet.price("claude", "claude-sonnet-4-5", date(2026, 7, 1))
    assert (version, price.input) == ("claude/claude-sonnet-4-5@2026-06-01", 4.0)
    with pytest.raises(ConfigError, match="no price before"):
        fleet.price("claude", "claude-sonnet-4-5", date(2020, 1, 1))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'ladder = ["claude", "ollama"]',
            'ladder = ["claud", "ollama"]',
            r":\d+: groups\[2\]\.ladder\[0\]: unknown provider 'claud'",
        ),
        (
            "sessions = 4",
            "sessions = 0",
            r":\d+: groups\[3\]\.sessions: Input should be greater than or equal to 1",
        ),
        (
            'kinds = ["pr_integ"]',
            'kinds = ["pr_integ", "plan"]',
            r"kind 'plan' is already run by 'high_level'",
        ),
        ('kinds = ["pr_integ"]', 'kinds = ["pr_integrate"]', r"groups\[4\]\.kinds\[0\]"),
        ('queue = "pr_integ"', 'queue = "pr_impl"', r"queue 'pr_impl' is used twice"),
        (
            "cap_usd = 50.0",
            "cap_usd = 50.0\ncolour = 'red'",
            r"budgets\[0\]\.colour: Extra inputs are not permitted",
        ),
        ("alert_usd = 40.0", "alert_usd = 60.0", r"alert_usd 60.0 is above cap_usd 50.0"),
        ('default_model = "gpt-5.3-codex"', 'default_model = "gpt-9"', r"default_model 'gpt-9' is not among"),
        (
            "visibility_timeout_s = 3600",
            "visibility_timeout_s = 600",
            r"must be longer than task_time_limit_s",
        ),
        ("[simulator.ollama]", "[simulator.llama]", r"simulator\.llama: unknown provider 'llama'"),
    ],
)
def test_mistakes_name_file_line_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = edited(tmp_path, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_fleet(path)
    assert str(path) in str(info.value)


def test_error_line_points_at_the_offending_key(tmp_path: Path) -> None:
    path = edited(tmp_path, "sessions = 4", "sessions = 0")
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    line = int(str(info.value).split(f"{path}:")[1].split(":")[0])
    assert path.read_text().splitlines()[line - 1].strip() == "sessions = 0"


def test_a_kind_without_a_group_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, 'kinds = ["pr_integ"]\nladder = ["ollama"]', 'kinds = ["pr_review"]\nladder = ["ollama"]')
    with pytest.raises(ConfigError, match="kind 'pr_integ' has no group"):
        load_fleet(path)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[groups\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_fleet(bad)
    with pytest.raises(ConfigError, match="cannot read fleet file"):
        load_fleet(tmp_path / "missing.toml")


def test_locate_finds_array_tables_and_keys() -> None:
    text = "[a]\nx = 1\n[[g]]\nname = 'p'\n[[g]]\nname = 'q'\nladder = [1]\n"
    assert locate(text, ("a", "x")) == 2
    assert locate(text, ("g", 1, "ladder", 0)) == 7
    assert locate(text, ("g", 0)) == 3
    assert locate(text, ("nothing",)) is None


REVIEW_GROUP = 'kinds = ["pr_review"]\nladder = ["claude", "ollama"]'


def refusal(tmp_path: Path, old: str, new: str) -> tuple[str, list[str]]:
    path = edited(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    return str(info.value), path.read_text().splitlines()


def line_of(message: str, key: str, lines: list[str]) -> str:
    """The fleet file's line a message names for ``key``."""
    found = re.search(rf":(\d+): {re.escape(key)}: ", message)
    assert found, message
    return lines[int(found.group(1)) - 1].strip()


def test_a_cli_transport_on_a_kind_it_cannot_serve_is_refused_at_its_line(tmp_path: Path) -> None:
    message, lines = refusal(tmp_path, REVIEW_GROUP, REVIEW_GROUP + '\ntransports = { claude = "cli" }')
    assert "groups[2].transports.claude: 'claude' on the 'cli' transport cannot serve 'pr_review'" in message
    assert line_of(message, "groups[2].transports.claude", lines) == 'transports = { claude = "cli" }'
    assert "no rung" not in message  # ollama still serves the reviews


def test_a_ladder_with_no_usable_rung_is_refused(tmp_path: Path) -> None:
    old = 'kinds = ["pr_review"]\nladder = ["claude", "ollama"]'
    message, lines = refusal(
        tmp_path, old, 'kinds = ["pr_review"]\nladder = ["claude"]\ntransports = { claude = "cli" }'
    )
    assert "groups[2].ladder: no rung of the ladder can serve 'pr_review' (claude: 'claude' on the 'cli'" in message
    assert line_of(message, "groups[2].ladder", lines) == 'ladder = ["claude"]'


def test_a_rung_twice_and_a_transport_outside_the_ladder_are_refused(tmp_path: Path) -> None:
    message, _ = refusal(tmp_path, REVIEW_GROUP, 'kinds = ["pr_review"]\nladder = ["claude", "claude"]')
    assert "groups[2].ladder[1]: rung 'claude' is used twice" in message
    message, _ = refusal(tmp_path, REVIEW_GROUP, REVIEW_GROUP + '\ntransports = { codex = "api" }')
    assert "groups[2].transports.codex: 'codex' is not in this group's ladder" in message


def test_sessions_the_database_pools_cannot_serve_are_refused(tmp_path: Path) -> None:
    message, lines = refusal(tmp_path, "sessions = 4", "sessions = 40")
    assert "groups[3].sessions: 40 sessions need up to 50 database connections" in message
    assert "at most 20 sessions per group" in message
    assert line_of(message, "groups[3].sessions", lines) == "sessions = 40"
    text = DEFAULT.read_text()
    for old in ("sessions = 6", "sessions = 5", "sessions = 3", "sessions = 4"):
        text = text.replace(old, "sessions = 20")
    path = tmp_path / "many.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"need up to 150 database connections together .* max_connections = 100"):
        load_fleet(path)


def test_the_kinds_an_agent_cli_serves_are_those_whose_handler_gives_it_a_worktree() -> None:
    from switchyard.fleet_models import CLI_KINDS
    from tasks.kinds import HANDLERS
    from tasks.kinds.base import BaseHandler

    gives = {kind for kind, handler in HANDLERS.items() if type(handler).workdir is not BaseHandler.workdir}
    assert gives == set(CLI_KINDS)


def test_validate_refuses_a_fleet_that_cannot_run(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = edited(tmp_path, REVIEW_GROUP, REVIEW_GROUP + '\ntransports = { claude = "cli" }')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")},
        "SWITCHYARD_FLEET_FILE": str(path),
    }
    env["SWITCHYARD_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "switchyard"), "validate"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:" in done.stderr and "groups[2].transports.claude" in done.stderr
    assert "Traceback" not in done.stderr
