"""Cost reports on SQLite and PostgreSQL: roll-ups that add up to the ledger, repricing at a baseline checked
against figures worked out by hand, flags, the budgets' forward view, bad input and the HTTP route."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import postgres_database
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_kit import PRICE_DAY, Job, Try, charge, clear, fleet, write

from reports.baseline import resolve
from reports.period import KEYS, Period, parse_period
from reports.report import cost_report
from reports.rollup import ledger_settled, materialize, rollup
from store.db import dispose_all, session_scope
from store.migrate import ensure_schema
from store.report_hours import differences
from switchyard.errors import InputError
from switchyard.settings import Settings
from switchyard.usage import Usage
from tasks.context import build_context
from web.app import create_app

FLEET = fleet()
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOVEMBER = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
KIND_OF = {"high_level": "plan", "dev_workers": "dev_task", "pr_review": "pr_review", "pr_impl": "pr_impl"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'reports.db'}"
        ensure_schema(url)
        yield url
        dispose_all()
        return
    with postgres_database() as url:
        ensure_schema(url)
        yield url


# --- every roll-up adds up to the total and to the ledger -------------------------------------------------

usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 50_000),
    cached_input_tokens=st.integers(0, 20_000),
    cache_write_tokens=st.integers(0, 5_000),
    cache_write_1h_tokens=st.integers(0, 5_000),
    output_tokens=st.integers(0, 8_000),
    reasoning_tokens=st.integers(0, 2_000),
    compute_seconds=st.sampled_from([0.0, 1.5, 12.25]),
)
moments = st.integers(-3 * 24, 40 * 24).map(lambda h: NOVEMBER.since + timedelta(hours=h, minutes=7))
tries = st.builds(
    Try,
    provider=st.sampled_from(["claude", "codex", "ollama"]),
    usage=usages,
    at=moments,
    state=st.sampled_from(["settled", "settled", "settled", "released", "held"]),
    cost=st.one_of(st.none(), st.integers(0, 3_000_000)),
    unknown=st.booleans(),
    status=st.sampled_from(["succeeded", "failed"]),
    ledgered=st.sampled_from([True, True, True, False]),
)
jobs = st.builds(
    Job,
    kind=st.sampled_from(sorted(KIND_OF.values())),
    env=st.sampled_from(["dev1", "dev2", "dev3"]),
    stage=st.sampled_from(["dev", "qa"]),
    status=st.sampled_from(["succeeded", "failed"]),
    tries=st.lists(tries, min_size=1, max_size=4),
)
COMBINATIONS = [keys for n in range(1, len(KEYS) + 1) for keys in itertools.combinations(KEYS, n)]


def _expected(generated: list[Job]) -> tuple[int, int, int]:
    """From the generated rows, in Python: settled cost in November, input tokens counted there, and the tasks
    whose first attempt falls there."""
    cost = tokens = tasks = 0
    for job in generated:
        for number, attempt in enumerate(job.tries, start=1):
            if NOVEMBER.since <= attempt.at < NOVEMBER.until:
                cost += charge(FLEET, attempt) if attempt.ledgered else 0
                tokens += attempt.usage.input_tokens
                tasks += number == 1
    return cost, tasks, tokens


def _check_rollups(url: str, generated: list[Job], combinations: list[tuple[str, ...]], *, both: bool) -> None:
    """Each roll-up, read from the hourly roll-up (the report's temporary table; with ``both``, also straight
    from the raw rows, which must agree line for line), adds up to the total, which is the ledger's and the
    data's. Every column adds up, the per-attempt counts too; the roll-up equals its recomputation."""
    base = resolve(FLEET, "claude", PRICE_DAY)
    with session_scope(url) as session:
        clear(session)
        write(session, FLEET, generated)
        assert differences(session.connection()) == []
        source = materialize(session, FLEET, NOVEMBER)
        cost, tasks, tokens = _expected(generated)
        [total] = rollup(session, FLEET, NOVEMBER, (), source=source)
        assert total.sums["cost_micros"] == cost == ledger_settled(session, NOVEMBER)
        assert (total.sums["tasks"], total.sums["input_tokens"]) == (tasks, tokens)
        assert rollup(session, FLEET, NOVEMBER, ()) == [total]
        for keys in combinations:
            lines = rollup(session, FLEET, NOVEMBER, keys, source=source)
            if both:
                assert rollup(session, FLEET, NOVEMBER, keys) == lines, keys
            for column in (
                "cost_micros",
                "attempts",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_5m_tokens",
                "cache_write_1h_tokens",
                "reasoning_tokens",
                "unknown_cost_micros",
                "zero_cost_paid_attempts",
                "tasks",
                "succeeded",
                "fell_back",
            ):
                assert sum(line.sums[column] for line in lines) == total.sums[column], (keys, column)
            assert sum((base.micros(line.sums) for line in lines), Decimal(0)) == base.micros(total.sums), keys
            assert len({tuple(line.keys.values()) for line in lines}) == len(lines)
        clear(session)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    generated=st.lists(jobs, min_size=0, max_size=8),
    combinations=st.lists(st.sampled_from(COMBINATIONS), min_size=1, max_size=6, unique=True),
)
def test_generated_rollups_add_up_to_the_total_and_the_ledger(
    database_url: str, generated: list[Job], combinations: list[tuple[str, ...]]
) -> None:
    """Random attempts (in and out of the period, settled, released, held, unledgered, unknown cost), rolled up by
    random combinations of keys: each adds up to the total, which is the ledger's settled spend."""
    _check_rollups(database_url, generated, combinations, both=True)


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=st.lists(jobs, min_size=12, max_size=12))
def test_every_combination_of_keys_adds_up(database_url: str, generated: list[Job]) -> None:
    """All 255 combinations of the eight keys over one generated batch."""
    _check_rollups(database_url, generated, COMBINATIONS, both=False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    generated=st.lists(jobs, min_size=2, max_size=6),
    into_first=st.integers(0, 6),
    into_last=st.integers(8, 59),
)
def test_part_hours_at_the_ends_come_from_the_raw_rows(
    database_url: str, generated: list[Job], into_first: int, into_last: int
) -> None:
    """A period that starts and ends inside an hour, each end with attempts in its part-hour (attempts are at
    minute 7): the roll-up (whole hours) plus the raw part-hours equal the raw rows alone, by day, by hour (read
    in place) and in total."""
    moments = sorted(attempt.at for job in generated for attempt in job.tries)
    first, last = moments[0].replace(minute=0), moments[-1].replace(minute=0)
    period = Period(first + timedelta(minutes=into_first, seconds=17), last + timedelta(minutes=into_last))
    with session_scope(database_url) as session:
        clear(session)
        write(session, FLEET, generated)
        source = materialize(session, FLEET, period)
        for keys in [(), ("day", "provider"), ("hour", "kind"), ("env", "stage", "group", "kind", "model")]:
            assert rollup(session, FLEET, period, keys, source=source) == rollup(session, FLEET, period, keys), keys
        clear(session)


# --- repricing at the baseline, by hand -------------------------------------------------------------------

CLAUDE = Usage(
    input_tokens=1000, cached_input_tokens=2000, cache_write_tokens=400, cache_write_1h_tokens=100, output_tokens=500
)
CODEX = Usage(input_tokens=3000, cached_input_tokens=1000, output_tokens=800, reasoning_tokens=300)
OLLAMA = Usage(input_tokens=2000, output_tokens=600, compute_seconds=4.5)
AT = datetime(2026, 11, 15, 10, 30, tzinfo=UTC)


def _three(url: str) -> None:
    with session_scope(url) as session:
        write(
            session,
            FLEET,
            [
                Job(kind="pr_review", tries=[Try("claude", CLAUDE, AT)]),
                Job(kind="pr_impl", tries=[Try("codex", CODEX, AT)]),
                Job(kind="pr_integ", tries=[Try("ollama", OLLAMA, AT)]),
            ],
        )


def test_repricing_matches_the_figures_worked_out_by_hand(database_url: str) -> None:
    _three(database_url)
    with session_scope(database_url) as session:
        report = cost_report(
            session, FLEET, now=NOW, since="2026-11-01", until="2026-11-30", by="provider", baseline="claude"
        )
    rows = {row["provider"]: row for row in report["rows"]}
    # Sonnet 5 (2 / 10, read 0.20, writes 2.50 and 4.00): 1000*2 + 2000*0.2 + 400*2.5 + 100*4 + 500*10 = 8800 µ$
    # gpt-5.3-codex (1.75 / 14, cached 0.175): 3000*1.75 + 1000*0.175 + 800*14 = 16625 µ$ (reasoning inside output)
    assert [rows[p]["cost_usd"] for p in ("claude", "codex", "ollama")] == ["0.008800", "0.016625", "0.000000"]
    # Opus 4.5 (5 / 25, read 0.50, writes 6.25 and 10): 5000 + 1000 + 2500 + 1000 + 12500 = 22000 µ$
    # codex at Opus: 3000*5 + 1000*0.5 + 800*25 = 35500 µ$; ollama at Opus: 2000*5 + 600*25 = 25000 µ$
    assert [rows[p]["baseline_usd"] for p in ("claude", "codex", "ollama")] == ["0.022000", "0.035500", "0.025000"]
    assert [rows[p]["saving_usd"] for p in ("claude", "codex", "ollama")] == ["0.013200", "0.018875", "0.025000"]
    assert [rows[p]["saving_pct"] for p in ("claude", "codex", "ollama")] == [60.0, 53.17, 100.0]
    total = report["total"]
    assert (total["cost_usd"], total["baseline_usd"], total["saving_usd"]) == ("0.025425", "0.082500", "0.057075")
    assert total["saving_pct"] == 69.18
    assert report["baseline"]["version"] == "claude/claude-opus-4-5@2025-11-24"
    assert "repriced at claude/claude-opus-4-5" in report["baseline"]["how"]
    assert rows["ollama"]["ollama_compute_s"] == 4.5
    assert rows["codex"]["reasoning_tokens"] == 300 and rows["claude"]["cache_write_1h_tokens"] == 100
    assert report["ledger"] == {"settled_usd": "0.025425", "settled_micros": 25425, "reconciled": True}


def test_a_named_baseline_model_and_the_fleet_default(database_url: str) -> None:
    _three(database_url)
    with session_scope(database_url) as session:
        haiku = cost_report(session, FLEET, now=NOW, since="2026-11-01", baseline="claude:claude-haiku-4-5")
        default = cost_report(session, FLEET, now=NOW, since="2026-11-01")
    # Haiku 4.5 (1 / 5, read 0.10, writes 1.25 and 2): claude 4400, codex 7100, ollama 5000 µ$
    assert haiku["total"]["baseline_usd"] == "0.016500"
    assert haiku["total"]["saving_usd"] == "-0.008925"
    assert default["baseline"]["model"] == FLEET.reports.baseline.split(":")[1]


# --- flags, empty periods, the forward view ---------------------------------------------------------------


def test_zero_cost_on_a_paid_provider_and_unknown_cost_are_flagged(database_url: str) -> None:
    with session_scope(database_url) as session:
        write(
            session,
            FLEET,
            [
                Job(tries=[Try("claude", CLAUDE, AT, cost=0)]),
                Job(tries=[Try("claude", CLAUDE, AT, cost=50_000, unknown=True)]),
                Job(kind="pr_integ", tries=[Try("ollama", OLLAMA, AT)]),
            ],
        )
        report = cost_report(session, FLEET, now=NOW, since="2026-11-01", by="provider")
    rows = {row["provider"]: row for row in report["rows"]}
    assert rows["claude"]["zero_cost_paid_attempts"] == 1 and rows["claude"]["unknown_cost_attempts"] == 1
    assert any("tokens at $0 on a paid provider: 1" in flag for flag in rows["claude"]["flags"])
    assert any("unknown cost: 1 attempt(s)" in flag and "$0.050000" in flag for flag in report["flags"])
    assert rows["ollama"]["flags"] == []  # free: $0 is its price, not a gap


def test_an_empty_period_is_a_report_of_zeros(database_url: str) -> None:
    _three(database_url)
    with session_scope(database_url) as session:
        report = cost_report(session, FLEET, now=NOW, since="2026-10-01", until="2026-10-31", by="env,day")
    assert report["rows"] == []
    assert report["total"]["cost_usd"] == "0.000000" and report["total"]["tasks"] == 0
    assert report["ledger"]["reconciled"] and report["top_tasks"] == [] and report["peak_hour"] is None


def test_budgets_forward_projects_the_trailing_rate(database_url: str) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    hour_ago = now - timedelta(minutes=30)
    with session_scope(database_url) as session:
        write(session, FLEET, [Job(tries=[Try("claude", CLAUDE, hour_ago, cost=6_000_000)])])  # $6 in the last 24h
        report = cost_report(session, FLEET, now=now, since="1d")
    day = next(b for b in report["budgets"] if b["window"] == "day")
    assert (day["cap_micros"], day["used_micros"], day["remaining_micros"]) == (50_000_000, 6_000_000, 44_000_000)
    assert day["rate_micros_per_h"] == 250_000  # $6 over the trailing 24 h
    assert day["projected_window_micros"] == 6_000_000 + 12 * 250_000
    assert day["cap_reached_in_window"] is False  # 44 $ at 0.25 $/h: 176 h away
    assert day["cap_reached_at"] == (now + timedelta(hours=176)).isoformat()
    assert day["burn_down"][0]["remaining_micros"] == 50_000_000
    assert day["burn_down"][-1]["line"] == "projected"
    assert report["top_tasks"][0]["cost_micros"] == 6_000_000
    assert report["peak_hour"] == {"hour": "2026-11-20 11:00", "cost_micros": 6_000_000, "attempts": 1}


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "fragment"),
    [
        ("yesterday", None, "--since: cannot read 'yesterday'"),
        ("2026-11-10", "2026-11-02", "is after --until"),
        (None, "13/2026", "--until: cannot read '13/2026'"),
        ("999999d", None, "outside the years 1-9999"),
        (None, "9999-12-31", "outside the years 1-9999"),
    ],
)
def test_unreadable_or_reversed_periods_are_refused(since: str | None, until: str | None, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        parse_period(since, until, NOW)


def test_periods_take_dates_moments_and_durations() -> None:
    assert parse_period("7d", None, NOW) == Period(NOW - timedelta(days=7), NOW)
    assert parse_period("2026-11-01", "2026-11-30", NOW) == NOVEMBER
    assert parse_period(None, None, NOW).since == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_period("2026-11-01T08:00+01:00", "24h", NOW).since == datetime(2026, 11, 1, 7, tzinfo=UTC)


def _cli(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    from cli import main

    monkeypatch.setenv("SWITCHYARD_HOME", str(home))
    monkeypatch.setenv("SWITCHYARD_FLEET_FILE", str(Path(__file__).resolve().parent.parent / "switchyard.toml"))
    code = main(["report", *args])
    out = capsys.readouterr()
    dispose_all()
    return code, out.out + out.err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--by", "group,colour"], ["'colour'", "env, stage, group, kind, provider, model, day, hour"]),
        (["--since", "last week"], ["'last week'", "duration back from now"]),
        (["--since", "2026-11-10", "--until", "2026-11-01"], ["is after --until"]),
        (["--baseline", "gemini"], ["'gemini'", "['claude', 'codex', 'ollama']"]),
        (["--baseline", "claude:opus-9"], ["'opus-9'", "claude-opus-4-5"]),
        (["--format", "pdf"], ["'pdf'", "table, json, csv, html, png"]),
    ],
)
def test_cli_bad_input_exits_2_naming_the_value_and_the_choices(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragments: list[str],
) -> None:
    code, text = _cli(tmp_path, monkeypatch, capsys, *args)
    assert code == 2, text
    for fragment in fragments:
        assert fragment in text


def test_cli_prints_the_savings_table_and_writes_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _cli(tmp_path, monkeypatch, capsys, "--by", "group", "--baseline", "claude", "--savings")
    assert code == 0, text
    assert "Savings by group against claude-opus-4-5" in text and "reconciled" in text
    code, text = _cli(tmp_path, monkeypatch, capsys, "--by", "env", "--format", "csv", "--out", str(tmp_path / "r.csv"))
    assert code == 0, text
    assert (tmp_path / "r.csv").read_text().splitlines()[-1].startswith("total,0,0,0,0")
    code, text = _cli(tmp_path, monkeypatch, capsys, "--format", "png", "--out", str(tmp_path / "spend.png"))
    assert code == 0, text
    assert (tmp_path / "spend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, text = _cli(tmp_path, monkeypatch, capsys, "--format", "png")
    assert code == 2 and "--out FILE.png" in text


# --- over HTTP ------------------------------------------------------------------------------------------------


def test_the_http_route_answers_what_the_function_computes(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    recent = now - timedelta(hours=1)
    with session_scope(database_url) as session:
        write(
            session,
            FLEET,
            [Job(tries=[Try("claude", CLAUDE, recent)]), Job("pr_impl", tries=[Try("codex", CODEX, recent)])],
        )
    context = build_context(
        Settings(
            database_url=database_url,
            home=tmp_path / "home",
            fleet_file=Path(__file__).resolve().parent.parent / "switchyard.toml",
        )
    )
    with TestClient(create_app(context)) as client:
        answer = client.get("/api/reports/costs", params={"since": "2d", "by": "provider,group", "baseline": "claude"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        with session_scope(database_url) as session:
            direct = cost_report(session, FLEET, now=now, since="2d", by="provider,group", baseline="claude")
        assert body["rows"] == direct["rows"] and body["total"]["cost_usd"] == "0.025425"
        csv = client.get("/api/reports/costs", params={"since": "2d", "by": "provider", "format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0].startswith("provider,tasks,attempts")
        assert csv.text.splitlines()[-1].startswith("total,2,2,2,0,")
        for params, fragment in [
            ({"by": "colour"}, "'colour'"),
            ({"since": "soon"}, "'soon'"),
            ({"baseline": "claude:nope"}, "'nope'"),
            ({"since": "2026-11-10", "until": "2026-11-01"}, "is after --until"),
            ({"format": "xml"}, "format"),
            ({"unknown": "1"}, "unknown"),
        ]:
            bad = client.get("/api/reports/costs", params=params)
            assert bad.status_code == 422, (params, bad.text)
            assert fragment in bad.json()["error"], (params, bad.text)
        charts = client.get("/api/reports/costs", params={"charts": "true"}).json()["charts"]
        assert {"spend_per_day", "spend_by_group", "actual_vs_baseline"} <= set(charts)
    dispose_all()


def test_a_fleet_file_with_an_unknown_baseline_is_refused_with_its_line(tmp_path: Path) -> None:
    from switchyard.errors import ConfigError
    from switchyard.fleet import load_fleet

    text = (Path(__file__).resolve().parent.parent / "switchyard.toml").read_text()
    bad = tmp_path / "fleet.toml"
    bad.write_text(text.replace('baseline = "claude:claude-opus-4-5"', 'baseline = "claude:opus-9"'))
    line = next(i for i, row in enumerate(bad.read_text().splitlines(), start=1) if "opus-9" in row)
    with pytest.raises(ConfigError, match=rf"fleet.toml.*{line}.*'opus-9'.*claude-opus-4-5"):
        load_fleet(bad)
