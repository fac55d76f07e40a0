"""Access control of the status API: bearer tokens by scope, the audit of admin actions, the token commands.

The probe table runs against a real uvicorn server on a free port, with the provider simulator over HTTP, a
real Redis (breakers) and SQLite: every route of the app (``app.routes``, so a route added later without a row
in ROUTES fails here) is asked with no token, a read, a submit and an admin token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import NO_PROVIDER_KEYS, free_port, patient
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from cli import main as cli_main
from cli.ops import api_open_warning
from simulator.server import BackgroundSimulator
from store import audit, tokens
from store.db import dispose_all, session_scope
from store.migrate import upgrade
from switchyard.settings import Settings
from tasks.context import Context, build_context
from web.app import create_app
from web.auth import bearer

pytestmark = pytest.mark.integration
TASK = "0" * 32  # a task id of the right shape that no task has
OPEN = None  # the route answers without a token
# Every route of the app and the scope it needs; the path to probe, the method, and the body to send.
ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/"): OPEN,
    ("GET", "/static"): OPEN,
    ("GET", "/costs"): OPEN,
    ("GET", "/costs/vega.js"): OPEN,
    ("GET", "/openapi.json"): OPEN,
    ("GET", "/docs"): OPEN,
    ("GET", "/docs/oauth2-redirect"): OPEN,
    ("GET", "/redoc"): OPEN,
    ("GET", "/static-offline-docs"): OPEN,
    ("GET", "/api/multi-env/status"): "read",
    ("GET", "/api/multi-env/directories"): "read",
    ("GET", "/api/multi-env/environments"): "read",
    ("GET", "/api/multi-env/pr-groups"): "read",
    ("GET", "/api/multi-env/health"): "read",
    ("GET", "/api/tasks"): "read",
    ("GET", "/api/tasks/{task_id}"): "read",
    ("GET", "/api/tasks/{task_id}/diff"): "read",
    ("GET", "/api/costs"): "read",
    ("GET", "/api/budgets"): "read",
    ("GET", "/api/breakers"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/api/reports/costs"): "read",
    ("POST", "/api/tasks"): "submit",
    ("POST", "/api/tasks/{task_id}/retry"): "submit",
    ("POST", "/api/tasks/{task_id}/cancel"): "submit",
    ("POST", "/api/tasks/{task_id}/resume"): "submit",
    ("POST", "/api/admin/breakers/{provider}/reset"): "admin",
    ("PUT", "/api/admin/budgets"): "admin",
    ("DELETE", "/api/admin/budgets"): "admin",
    ("GET", "/api/admin/simulator"): "admin",
    ("POST", "/api/admin/simulator/{provider}/fault"): "admin",
    ("POST", "/api/admin/simulator/{provider}/heal"): "admin",
    ("GET", "/api/audit"): "admin",
}
PROBE_PATH = {"/static": "/static/dashboard.js"}
QUERY = {"/api/admin/budgets": {"scope": "all", "window": "day"}}
BODY: dict[tuple[str, str], Any] = {
    ("POST", "/api/tasks"): {},
    ("PUT", "/api/admin/budgets"): {"scope": "all", "window": "day", "cap_usd": 12.5},
    ("POST", "/api/admin/simulator/{provider}/fault"): {"error_rate": 0.5},
}


@dataclass
class Api:
    url: str
    context: Context
    tokens: dict[str, str]  # scope (or "revoked") -> token
    sim: BackgroundSimulator


def auth_context(tmp_path: Path, database_url: str, broker_url: str, simulator_url: str, **more: Any) -> Context:
    settings = Settings(
        **NO_PROVIDER_KEYS,
        home=tmp_path / "home",
        database_url=database_url,
        broker_url=broker_url,
        simulate=True,
        simulator_url=simulator_url,
        **more,
    )
    return build_context(settings)


def make_tokens(database_url: str) -> dict[str, str]:
    made = {}
    with session_scope(database_url) as session:
        for scope in tokens.SCOPES:
            made[scope] = tokens.create_token(session, name=f"probe-{scope}", scope=scope)
        made["revoked"] = tokens.create_token(session, name="gone", scope="admin")
        tokens.revoke_token(session, name="gone")
    return made


@contextlib.contextmanager
def serve(context: Context) -> Iterator[str]:
    """The status API of ``context`` on a real uvicorn server (a thread of this process) on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + patient(30)
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the status API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=patient(30))


@pytest.fixture
def api(tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str) -> Iterator[Api]:
    upgrade(sqlite_url, "head")
    context = auth_context(tmp_path, sqlite_url, redis_url, server.url, api_auth="on")
    made = make_tokens(sqlite_url)
    with serve(context) as url:
        yield Api(url=url, context=context, tokens=made, sim=server)
    dispose_all()


def headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves (those of included routers too), HEAD and OPTIONS aside."""
    found = []
    for route in iter_route_contexts(create_app(build_context(Settings(**NO_PROVIDER_KEYS))).routes):
        if isinstance(route.original_route, Mount):
            found.append(("GET", str(route.path)))
        else:
            found += [(m, str(route.path)) for m in sorted(route.methods or ()) if m not in {"HEAD", "OPTIONS"}]
    return found


def probe(api: Api, method: str, path: str, token: str | None) -> httpx.Response:
    concrete = PROBE_PATH.get(path, path).replace("{task_id}", TASK).replace("{provider}", "claude")
    body = BODY.get((method, path))
    return httpx.request(
        method, api.url + concrete, headers=headers(token), json=body, params=QUERY.get(path), timeout=patient(30)
    )


def one_line_error(response: httpx.Response) -> str:
    assert "\n" not in response.text.strip() and "Traceback" not in response.text, response.text
    error: str = response.json()["error"]
    return error


def test_every_route_is_in_the_table() -> None:
    served = app_routes()
    missing = [route for route in served if route not in ROUTES]
    assert missing == [], f"routes without a row in ROUTES (add the scope each needs): {missing}"
    assert sorted(set(ROUTES) - set(served)) == [], "rows of ROUTES the app no longer serves"


def test_every_route_answers_by_scope(api: Api) -> None:
    """The probe table: 401 without a token, 403 naming the scope below it, neither (and no 5xx) from it up."""
    table = []
    for method, path in app_routes():
        need = ROUTES[(method, path)]
        for who in (None, *tokens.SCOPES):
            answer = probe(api, method, path, None if who is None else api.tokens[who])
            table.append((method, path, who, answer.status_code))
            assert answer.status_code < 500, (method, path, who, answer.text)
            if need is None or (who is not None and tokens.allows(who, need)):
                assert answer.status_code not in (401, 403), (method, path, who, answer.text)
            elif who is None:
                assert answer.status_code == 401, (method, path, who, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer"), answer.headers
                assert "switchyard token create" in one_line_error(answer)
            else:
                assert answer.status_code == 403, (method, path, who, answer.text)
                assert f"scope {need!r}" in one_line_error(answer), answer.text
    print("\n" + "\n".join(f"{m:6} {p:45} {w or '-':7} {c}" for m, p, w, c in table))
    assert len(table) == 4 * len(ROUTES)


def test_admin_token_drives_the_admin_routes_and_they_are_audited(api: Api) -> None:
    admin = headers(api.tokens["admin"])
    client = httpx.Client(base_url=api.url, headers=admin, timeout=patient(30))
    fault = client.post("/api/admin/simulator/claude/fault", json={"status": "503", "latency_ms": 5})
    assert fault.status_code == 200, fault.text
    assert api.sim.sim.providers["claude"].view()["error_status"] == 503  # the simulator took it
    assert client.post("/api/admin/simulator/claude/heal").status_code == 200
    assert api.sim.sim.providers["claude"].view()["error_rate"] == 0
    put = client.put("/api/admin/budgets", json={"scope": "all", "window": "day", "cap_usd": 7, "alert_usd": 5})
    assert put.status_code == 200, put.text
    rows = client.get("/api/budgets").json()["budgets"]
    assert any(r["source"] == "override" and r["cap_usd"] == 7 for r in rows), rows
    assert client.delete("/api/admin/budgets", params={"scope": "all", "window": "day"}).status_code == 200
    gone = client.delete("/api/admin/budgets", params={"scope": "all", "window": "day"})
    assert gone.status_code == 404 and "no budget set" in one_line_error(gone)
    assert client.post("/api/admin/breakers/claude/reset").status_code == 200
    assert client.post("/api/admin/breakers/nope/reset").status_code == 404
    bad = client.put("/api/admin/budgets", json={"scope": "nowhere", "window": "day", "cap_usd": 1})
    assert bad.status_code == 422, bad.text

    rows = client.get("/api/audit", params={"limit": 10}).json()["audit"]
    done = [(r["actor"], r["action"]) for r in rows][::-1]
    assert done == [
        ("probe-admin", "simulator.fault"),
        ("probe-admin", "simulator.heal"),
        ("probe-admin", "budget.set"),
        ("probe-admin", "budget.remove"),
        ("probe-admin", "breaker.reset"),
    ]
    assert rows[-1]["arguments"] == {"provider": "claude", "error_status": 503, "latency_ms": 5, "error_rate": 1.0}
    assert client.get("/api/audit", headers=headers(api.tokens["submit"])).status_code == 403
    client.close()


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer sy_ " + "a" * 43,
        "Basic dXNlcjpwdw==",
        "Bearer sy_short",
        "Bearer not-a-switchyard-token-at-all-but-long-enough-to-look-like-one",
        "token sy_" + "a" * 43,
        "Bearer sy_" + "a" * 42 + "\u00e9",
    ],
)
def test_malformed_headers_are_401_in_one_line(api: Api, value: str) -> None:
    answer = httpx.get(f"{api.url}/api/tasks", headers={"Authorization": value.encode("utf-8")}, timeout=30)
    assert answer.status_code == 401, answer.text
    assert "malformed" in one_line_error(answer) or "needs a token" in one_line_error(answer)
    sent = value.partition(" ")[2]
    assert not sent or sent not in answer.text  # what was sent is never echoed


def test_unknown_and_revoked_tokens_are_401(api: Api) -> None:
    for token in (api.tokens["revoked"], tokens.PREFIX + "A" * 43):
        answer = httpx.get(f"{api.url}/api/tasks", headers=headers(token), timeout=30)
        assert answer.status_code == 401, answer.text
        assert "unknown or revoked" in one_line_error(answer)
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    # revoking a live token takes effect on the next request
    read = headers(api.tokens["read"])
    assert httpx.get(f"{api.url}/api/tasks", headers=read, timeout=30).status_code == 200
    with session_scope(api.context.database_url) as session:
        tokens.revoke_token(session, name="probe-read")
    assert httpx.get(f"{api.url}/api/tasks", headers=read, timeout=30).status_code == 401


def test_tokens_are_stored_hashed_only(api: Api, sqlite_url: str) -> None:
    httpx.get(f"{api.url}/api/tasks", headers=headers(api.tokens["admin"]), timeout=30).raise_for_status()
    dispose_all()  # the WAL checkpointed into the file
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert raw, "the database file was found"
    for token in api.tokens.values():
        assert token.encode() not in raw
    assert hashlib.sha256(api.tokens["admin"].encode()).hexdigest().encode() in raw
    listed = json.dumps(tokens_list(sqlite_url))
    assert "token_hash" not in listed and api.tokens["admin"] not in listed
    assert tokens_list(sqlite_url)[2]["last_used_at"] is not None  # the admin token was just used


def tokens_list(database_url: str) -> list[dict[str, Any]]:
    with session_scope(database_url) as session:
        return tokens.list_tokens(session)


def test_the_hashes_are_compared_in_constant_time(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    upgrade(sqlite_url, "head")
    calls: list[tuple[str, str]] = []
    real = tokens.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    with session_scope(sqlite_url) as session:
        token = tokens.create_token(session, name="ct", scope="read")
        assert tokens.check_token(session, token) == tokens.TokenInfo(name="ct", scope="read")
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert calls == [(digest, digest)]


def test_bearer_parsing_is_pure() -> None:
    token = tokens.PREFIX + "x" * 43
    assert bearer(f"Bearer {token}") == token
    assert bearer(f"bearer   {token}  ".replace("   ", " ")) == token
    for bad in (None, "", "Bearer", f"Bearer {token}x", f"Basic {token}"):
        with pytest.raises(Exception) as caught:
            bearer(bad)
        assert getattr(caught.value, "status_code", None) == 401


def test_audit_arguments_are_masked(sqlite_url: str) -> None:
    upgrade(sqlite_url, "head")
    with session_scope(sqlite_url) as session:
        audit.record(
            session,
            actor="cli:tester",
            action="budget.set",
            arguments={
                "password": "hunter2hunter2",
                "api_key": "plain-looking-value",
                "url": "https://deploy:s3cretpw@example.com/x",
                "note": "key sk-ant-abcdef123456 and Bearer abcdefgh1234",
                "alert": "slack://T000/B000/XXXXYYYY",
                "cap_usd": 5,
            },
        )
        (row,) = audit.listing(session, limit=5)
    text = json.dumps(row)
    for secret in ("hunter2hunter2", "plain-looking-value", "s3cretpw", "abcdef123456", "abcdefgh1234", "XXXXYYYY"):
        assert secret not in text
    assert row["arguments"]["cap_usd"] == 5 and row["actor"] == "cli:tester"
    assert row["arguments"]["url"] == "https://deploy:***@example.com/x"


def test_with_auth_off_everything_answers_as_anonymous(
    tmp_path: Path, server: BackgroundSimulator, redis_url: str, sqlite_url: str
) -> None:
    upgrade(sqlite_url, "head")
    context = auth_context(tmp_path, sqlite_url, redis_url, server.url, api_auth="off")
    with serve(context) as url:
        assert httpx.get(f"{url}/api/tasks", timeout=30).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200
        assert httpx.post(f"{url}/api/admin/breakers/claude/reset", timeout=30).status_code == 200
        rows = httpx.get(f"{url}/api/audit", timeout=30).json()["audit"]
    assert [(r["actor"], r["action"]) for r in rows] == [("anonymous", "breaker.reset")]
    warning = api_open_warning(context.settings)
    assert "\n" not in warning and "open" in warning and "SWITCHYARD_API_AUTH=on" in warning
    dispose_all()


@pytest.mark.parametrize(
    ("profile", "value", "on"),
    [
        ("development", None, False),
        ("demo", None, False),
        ("staging", None, True),
        ("production", None, True),
        ("development", "on", True),
        ("staging", "off", False),
    ],
)
def test_api_auth_defaults_by_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, value: str | None, on: bool
) -> None:
    monkeypatch.setenv("SWITCHYARD_PROFILE", profile)
    if value is None:
        monkeypatch.delenv("SWITCHYARD_API_AUTH", raising=False)
    else:
        monkeypatch.setenv("SWITCHYARD_API_AUTH", value)
    assert Settings(home=tmp_path).api_auth_on is on


# --- the CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWITCHYARD_HOME", str(tmp_path / "home"))
    for name in ("SWITCHYARD_DATABASE_URL", "SWITCHYARD_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_commands(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "token", "create", "ci-bot", "--scope", "submit")
    assert code == 0, err
    token = out.strip()
    assert tokens.well_formed(token) and "shown only now" in err
    code, out, _ = run_cli(capsys, "token", "list", "--json")
    (row,) = json.loads(out)["tokens"]
    assert (row["name"], row["scope"], row["revoked"], row["last_used_at"]) == ("ci-bot", "submit", False, None)
    assert token not in out
    code, out, _ = run_cli(capsys, "token", "list")
    assert code == 0 and "ci-bot" in out and token not in out
    assert run_cli(capsys, "token", "revoke", "ci-bot")[0] == 0
    code, out, _ = run_cli(capsys, "token", "list", "--json")
    assert json.loads(out)["tokens"][0]["revoked"] is True

    code, out, _ = run_cli(capsys, "audit", "--json", "--limit", "5")
    rows = json.loads(out)["audit"]
    assert [r["action"] for r in rows] == ["token.revoke", "token.create"]
    assert all(r["actor"].startswith("cli:") for r in rows)
    assert rows[1]["arguments"] == {"name": "ci-bot", "scope": "submit"}
    code, out, _ = run_cli(capsys, "audit")
    assert code == 0 and "token.create" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("token", "create", "x", "--scope", "root"), "unknown scope 'root'; choose one of: read, submit, admin"),
        (("token", "create", "bad name", "--scope", "read"), "token name 'bad name'"),
        (("token", "revoke", "nobody"), "no token named 'nobody'"),
    ],
)
def test_token_bad_input_exits_2_with_one_line(
    cli_home: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], fragment: str
) -> None:
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_token_names_are_unique_and_revoke_once(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "token", "create", "ops", "--scope", "admin")[0] == 0
    code, out, err = run_cli(capsys, "token", "create", "ops", "--scope", "read")
    assert code == 2 and "exists already" in err and out == ""
    assert run_cli(capsys, "token", "revoke", "ops")[0] == 0
    code, _, err = run_cli(capsys, "token", "revoke", "ops")
    assert code == 2 and "revoked already" in err


def test_cli_admin_commands_are_audited(
    cli_home: Path, capsys: pytest.CaptureFixture[str], server: BackgroundSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHYARD_SIMULATOR_URL", server.url)
    assert run_cli(capsys, "simulator", "fault", "codex", "--fail-next", "2")[0] == 0
    assert run_cli(capsys, "simulator", "heal", "codex")[0] == 0
    assert run_cli(capsys, "budget", "set", "--scope", "all", "--window", "month", "--cap", "40")[0] == 0
    assert run_cli(capsys, "budget", "remove", "--scope", "all", "--window", "month")[0] == 0
    code, _, err = run_cli(capsys, "budget", "remove", "--scope", "all", "--window", "month")
    assert code == 2 and "no budget set" in err
    code, out, _ = run_cli(capsys, "audit", "--json")
    rows = json.loads(out)["audit"][::-1]
    assert [r["action"] for r in rows] == ["simulator.fault", "simulator.heal", "budget.set", "budget.remove"]
    assert rows[0]["arguments"] == {"provider": "codex", "fail_next": 2}
    assert rows[2]["arguments"]["cap_usd"] == 40
    assert {r["actor"] for r in rows} == {rows[0]["actor"]} and rows[0]["actor"].startswith("cli:")
