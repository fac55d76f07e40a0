"""The Celery configuration is derived from the fleet: one queue per group, every kind routed, JSON only."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

import celeryconfig
from switchyard.fleet import KINDS, load_fleet
from switchyard.settings import Settings

FLEET = load_fleet(REPO / "switchyard.toml")


def test_queues_and_routes_come_from_the_groups(tmp_path: Path) -> None:
    conf = celeryconfig.build(Settings(home=tmp_path), FLEET)
    assert [q.name for q in conf["task_queues"]] == [g.queue for g in FLEET.groups] + [celeryconfig.MAINTENANCE_QUEUE]
    assert {k: conf["task_routes"][celeryconfig.task_name(k)]["queue"] for k in KINDS} == {
        "plan": "high_level",
        "dev_task": "dev_workers",
        "pr_review": "pr_review",
        "pr_impl": "pr_impl",
        "pr_integ": "pr_integ",
    }
    assert conf["task_create_missing_queues"] is False


def test_upkeep_goes_to_the_maintenance_queue_and_lease_detectors_to_their_groups(tmp_path: Path) -> None:
    conf = celeryconfig.build(Settings(home=tmp_path), FLEET)
    schedule, routes = conf["beat_schedule"], conf["task_routes"]
    for entry in ("sweep-holds", "send-outbox"):
        assert schedule[entry]["options"]["queue"] == celeryconfig.MAINTENANCE_QUEUE
        assert routes[schedule[entry]["task"]]["queue"] == celeryconfig.MAINTENANCE_QUEUE
    for group in FLEET.groups:  # a group's detector runs only where the group has a live worker
        assert schedule[f"recover-leases-{group.name}"]["options"]["queue"] == group.queue


def test_delivery_is_safe_and_json_only(tmp_path: Path) -> None:
    conf = celeryconfig.build(Settings(home=tmp_path, broker_url="redis://example:6379/0"), FLEET)
    assert conf["broker_url"] == "redis://example:6379/0"
    assert (conf["task_serializer"], conf["accept_content"]) == ("json", ["json"])
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert visibility > conf["task_time_limit"] == FLEET.limits.task_time_limit_s


def test_beat_runs_the_outbox_sender_at_the_fleets_pace(tmp_path: Path) -> None:
    conf = celeryconfig.build(Settings(home=tmp_path), FLEET)
    entry = conf["beat_schedule"]["send-outbox"]
    assert entry["task"] == celeryconfig.SEND_OUTBOX_TASK
    assert entry["schedule"] == entry["options"]["expires"] == FLEET.outbox.every_s


def test_a_redis_broker_uses_the_transport_that_survives_a_restart(tmp_path: Path) -> None:
    from tasks import redis_transport

    redis_conf = celeryconfig.build(Settings(home=tmp_path, broker_url="redis://example:6379/0"), FLEET)
    assert redis_conf["broker_transport"] == celeryconfig.REDIS_TRANSPORT == redis_transport.TRANSPORT
    amqp_conf = celeryconfig.build(Settings(home=tmp_path, broker_url="amqp://guest@example//"), FLEET)
    assert "broker_transport" not in amqp_conf  # the URL's own transport
