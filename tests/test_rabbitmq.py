"""The fleet on RabbitMQ instead of Redis: real workers consume from AMQP queues, inspection and queue depth
work, on a private virtual host that is removed afterwards. Needs RabbitMQ on 5672 and `rabbitmqctl`."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI, NO_PROVIDER_KEYS, flushed_redis, free_port, require_service

from cli.envs import init_environments
from environments.sample import make_sample_repo
from store.db import session_scope
from store.queries import task_detail
from switchyard.errors import ConfigError
from switchyard.settings import Settings
from tasks.context import build_context
from tasks.submit import submit
from workers import launcher
from workers.health import control_app, queue_depths, workers_by_group

pytestmark = pytest.mark.integration


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not on PATH; CI needs it to make a private virtual host")
        pytest.skip("rabbitmqctl is not on PATH")
    vhost = f"switchyard-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def test_tasks_run_over_amqp(amqp_url: str, tmp_path: Path) -> None:
    settings = Settings(
        **NO_PROVIDER_KEYS,
        home=tmp_path / "home",
        broker_url=amqp_url,
        state_url=flushed_redis(13),  # breakers and limits are shared through Redis whatever the broker
        simulate=True,
        simulator_port=free_port(),
        api_port=free_port(),
        flower_port=free_port(),
    )
    ctx = build_context(settings)
    sample = make_sample_repo(tmp_path / "sample", feature_branches=2)
    init_environments(ctx, str(sample), tmp_path / "workspace", ["dev1"])
    services = {"simulator", "worker-pr_review", "worker-pr_integ"}
    launcher.up(settings, ctx.fleet, simulate=True, services=services, on_event=lambda _: None)
    try:
        ids = [
            submit({"kind": "pr_review", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx),
            submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-2"}, context=ctx),
        ]
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            with session_scope(ctx.database_url) as session:
                statuses = [task_detail(session, i)["status"] for i in ids]  # type: ignore[index]
            if all(s not in ("queued", "running") for s in statuses):
                break
            time.sleep(0.3)
        assert statuses == ["succeeded", "succeeded"]
        app = control_app(settings, ctx.fleet)
        try:
            live = workers_by_group(app, ctx.fleet, timeout=2.0)
        finally:
            app.close()
        assert len(live["pr_review"]) == 1 and len(live["pr_integ"]) == 1 and live["high_level"] == []
        assert queue_depths(amqp_url, ctx.fleet) == {g.name: 0 for g in ctx.fleet.groups}
    finally:
        launcher.down(settings, on_event=lambda _: None)


def test_a_rabbitmq_fleet_without_a_state_redis_is_refused_at_start(tmp_path: Path) -> None:
    settings = Settings(**NO_PROVIDER_KEYS, home=tmp_path / "home", broker_url="amqp://guest:guest@127.0.0.1:5672//")
    with pytest.raises(ConfigError, match="SWITCHYARD_STATE_URL"):
        launcher.up(settings, build_context(settings).fleet, simulate=True, on_event=lambda _: None)
    assert not list(settings.run_dir.glob("*.pid"))
