"""Running it for a team: ``config show``, ``seed`` and ``smoke``.

* ``config show``: the effective settings and where each came from, secrets masked.
* ``seed``: sample environments (dev1..dev5 on a generated sample repository) and a few tasks in the current
  profile; running it again adds nothing. Refused in production unless ``--force``.
* ``smoke``: a running fleet checked end to end (:mod:`ops.smoke`); exit 0 all pass, 1 a check failed, 3 no
  fleet runs.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from cli.context import cli_context
from cli.render import console, print_json, table

config_app = typer.Typer(help="The effective settings and where they came from.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SWITCHYARD_API_TOKEN", help="Bearer token for the status API.", show_default=False),
]
SEED_FEATURES = 5


def register(app: typer.Typer) -> None:
    app.command()(seed)
    app.command()(smoke)


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Every setting's effective value and its source (default, fleet file, environment variable, secrets
    file); keys, passwords, tokens and alert URLs masked."""
    from switchyard.config_view import entries

    ctx = cli_context()
    rows = entries(ctx.settings, ctx.fleet)
    if as_json:
        print_json({"profile": ctx.settings.profile, "settings": [r.as_json() for r in rows]})
        return
    console.print(
        table(f"Settings (profile {ctx.settings.profile})", ("setting", "value", "source"),
              ((r.name, r.value, r.source) for r in rows))
    )  # fmt: skip


def seed(
    force: Annotated[bool, typer.Option("--force", help="Seed even in the production profile.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load sample environments and tasks into the current profile; a second run adds nothing."""
    from cli.envs import init_report
    from environments.git import git_ok
    from environments.sample import make_sample_repo
    from store.db import session_scope
    from store.models import Environment, Task
    from switchyard.errors import InputError, NotYetSent
    from tasks.send import prepare_database
    from tasks.submit import submit

    ctx = cli_context()
    if ctx.settings.profile == "production" and not force:
        raise InputError("seed writes sample environments and tasks; refused in production (pass --force to seed)")
    sample = (ctx.settings.data_dir / "seed" / "sample-repo").resolve()
    if not (
        sample.exists() and git_ok(["rev-parse", "--verify", "--quiet", f"feature/sample-{SEED_FEATURES}"], cwd=sample)
    ):
        make_sample_repo(sample, feature_branches=SEED_FEATURES)
    prepare_database(ctx.database_url)
    with session_scope(ctx.database_url) as session:
        theirs = [e.name for e in session.query(Environment) if e.repository != str(sample)]
    theirs = [name for name in theirs if name in ctx.fleet.environments.names]
    if theirs:
        raise InputError(
            f"environments {', '.join(theirs)} already point at another repository; seed only fills a profile "
            "without environments of its own (use another SWITCHYARD_PROFILE or SWITCHYARD_HOME)"
        )
    report = init_report(ctx, str(sample), None, None)
    added, kept, unsent = [], [], []
    for task_id, request in seed_tasks(ctx.settings.profile, ctx.fleet.environments.names):
        with session_scope(ctx.database_url) as session:
            exists = session.get(Task, task_id) is not None
        if exists:
            kept.append(task_id)
            continue
        try:
            submit(request, context=ctx, task_id=task_id)
        except NotYetSent:
            unsent.append(task_id)
        added.append(task_id)
    data: dict[str, Any] = {
        "profile": ctx.settings.profile,
        "repository": str(sample),
        "environments": [e.name for e in report.environments],
        "changes": report.changes,
        "tasks_added": added,
        "tasks_already_there": len(kept),
        "tasks_not_yet_sent": unsent,
    }
    if as_json:
        print_json(data)
        return
    console.print(f"Seeded profile {ctx.settings.profile!r} from the sample repository {sample}")
    for change in report.changes:
        console.print(f"  {change}", markup=False)
    console.print(f"  tasks: {len(added)} added, {len(kept)} already there")
    if unsent:
        console.print(f"  {len(unsent)} task(s) recorded; the fleet runs them once it is up (switchyard up)")


def seed_tasks(profile: str, environments: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The sample tasks, each with an id fixed by (profile, environment, kind): a second seed finds them."""
    out = []
    for index, env in enumerate(environments, start=1):
        branch = f"feature/sample-{(index - 1) % SEED_FEATURES + 1}"
        requests = [
            {"kind": "dev_task", "environment": env, "title": f"Seed: write release notes for {env}"},
            {"kind": "pr_review", "environment": env, "branch": branch, "title": f"Seed: review {branch}"},
        ]
        for request in requests:
            task_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard-seed:{profile}:{env}:{request['kind']}"))
            out.append((task_id, request))
    return out


def smoke(
    real: Annotated[
        bool, typer.Option("--real", help="Real providers, capped by a budget smoke sets for itself and removes.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=10.0, help="Seconds the scratch tasks may take in all.")
    ] = 110.0,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a running fleet end to end: workers, API, Flower, metrics, health, one task of each kind, a budget
    hold, a breaker that opens and recovers. Exit 0 all pass, 1 a check failed, 3 the fleet is not running."""
    from ops.smoke import run

    ctx = cli_context()
    result = run(ctx, real=real, timeout=timeout, token=token)
    if as_json:
        print_json(result.as_json())
    else:
        marks = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "skip"}
        rows = ((c.name, marks[c.ok], f"{c.seconds:.2f}s", c.detail) for c in result.checks)
        console.print(table("Smoke", ("check", "result", "time", "detail"), rows))
        for left in result.left_behind:
            console.print(f"[red]left behind:[/red] {left}")
        console.print("All checks passed." if result.ok else "Smoke FAILED.")
    if not result.ok:
        raise typer.Exit(1)
