"""The outbox against a real broker (the embedded valkey, stopped and started): a submit or a follow-up while
the broker is away is recorded and sent once it is back, and a message the broker lost is sent again once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from conftest import free_port
from pipeline_kit import drain, make_context, tasks
from sqlalchemy import update

from simulator.server import BackgroundSimulator
from store import outbox
from store.db import session_scope
from store.models import Task
from switchyard.errors import NotYetSent
from switchyard.settings import Settings
from tasks.context import Context, build_context
from tasks.queues import BrokerView, Reserved, on_broker, reservations
from tasks.sender import release_stale, resend_lost, run_once
from tasks.submit import submit
from workers import broker

pytestmark = pytest.mark.integration


class Broker:
    """The embedded broker on a port of its own, started and stopped by the test."""

    def __init__(self, home: Path) -> None:
        self.settings = Settings(home=home, broker_port=free_port())
        self.url = broker.local_url(self.settings)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = broker.start_broker(self.settings, timeout_s=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            broker.shutdown(self.settings, self.process)
        self.process = None


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker-home")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, valkey: Broker, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, valkey.url, sqlite_url)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def row(ctx: Context, task_id: str, action: str = outbox.SEND) -> outbox.Outbox:
    with session_scope(ctx.database_url) as session:
        found = outbox.get(session, task_id=task_id, action=action)
        assert found is not None
        session.expunge(found)
        return found


def status(ctx: Context, task_id: str) -> str:
    return next(t.status for t in tasks(ctx) if t.id == task_id)


CHORE = {"kind": "dev_task", "environment": "dev1", "title": "add a health endpoint"}


def test_a_submit_while_the_broker_is_down_is_recorded_and_sent_when_it_is_back(ctx: Context, valkey: Broker) -> None:
    with pytest.raises(NotYetSent) as refused:
        submit(CHORE, context=ctx)
    task_id = refused.value.task_id
    assert "recorded" in str(refused.value) and "Do not submit it again" in str(refused.value)
    assert status(ctx, task_id) == "queued"  # not rejected: it will run
    owed = row(ctx, task_id)
    assert owed.sent_at is None and owed.tries == 1 and "broker unavailable" in (owed.last_error or "")

    assert run_once(ctx, now=later(300)).failed == 1  # still away: one more failed try, still queued
    assert row(ctx, task_id).tries == 2 and status(ctx, task_id) == "queued"

    valkey.start()
    done = run_once(ctx, now=later(600))
    assert (done.sent, done.failed) == (1, 0)
    assert task_id in (on_broker(ctx) or set())
    assert row(ctx, task_id).sent_at is not None and status(ctx, task_id) == "queued"


def test_a_message_the_broker_lost_is_found_and_sent_again_once(ctx: Context, valkey: Broker) -> None:
    valkey.start()
    task_id = submit(CHORE, context=ctx)
    queue = ctx.fleet.group_for_kind("dev_task").queue
    client = redis.Redis.from_url(valkey.url)
    assert client.llen(queue) == 1
    past_threshold = later(ctx.fleet.outbox.lost_after_s + 1)

    assert run_once(ctx, now=past_threshold).resent == 0  # still on its queue: never sent twice
    assert client.llen(queue) == 1

    client.flushall()  # the broker lost its data
    assert run_once(ctx, now=later(1)).resent == 0  # a recent send is queue latency, not a loss
    assert run_once(ctx, now=past_threshold).resent == 1
    assert client.llen(queue) == 1 and task_id in (on_broker(ctx) or set())
    assert run_once(ctx, now=past_threshold).resent == 0  # its new send is recent
    assert row(ctx, task_id).resends == 1 and status(ctx, task_id) == "queued"
    client.close()


def test_follow_ups_while_the_broker_is_down_are_recorded_never_rejected(
    ctx: Context, valkey: Broker, redis_url: str
) -> None:
    # the breakers live in a Redis of their own here (by default they share the broker, and fail closed)
    ctx = build_context(ctx.settings.model_copy(update={"state_url": redis_url}))
    with pytest.raises(NotYetSent):
        submit({"kind": "pr_impl", "environment": "dev1", "title": "greet there"}, context=ctx)
    drain(ctx)  # the in-process runner: implement -> review -> integrate, the broker away all along
    finished = {t.kind: t for t in tasks(ctx)}
    assert sorted(finished) == ["pr_impl", "pr_integ", "pr_review"]
    assert {t.status for t in finished.values()} == {"succeeded"}  # no `rejected: broker unavailable`
    for task in finished.values():
        assert row(ctx, task.id, outbox.FOLLOW_UPS).sent_at is not None  # every follow-up ran
        assert row(ctx, task.id).sent_at is None  # every message still owed

    valkey.start()
    done = run_once(ctx, now=later(600))
    assert done.sent == 3 and done.failed == 0
    assert {t.id for t in finished.values()} <= (on_broker(ctx) or set())


def test_a_message_seen_on_the_second_look_or_a_broker_that_cannot_be_looked_into_is_not_resent(
    ctx: Context, valkey: Broker
) -> None:
    valkey.start()
    task_id = submit(CHORE, context=ctx)
    redis.Redis.from_url(valkey.url).flushall()
    past_threshold = later(ctx.fleet.outbox.lost_after_s + 1)
    looks = iter(
        [BrokerView(), BrokerView(reserved={task_id: Reserved("t", 0.0)})]
    )  # passing from its queue to a worker: in neither for an instant
    assert resend_lost(ctx, now=past_threshold, look=lambda _: next(looks)) == 0
    assert resend_lost(ctx, now=past_threshold, look=lambda _: None) == 0  # RabbitMQ: a backlog is no loss
    assert row(ctx, task_id).resends == 0
    assert resend_lost(ctx, now=past_threshold) == 1  # the real broker, looked into twice


# A worker that reserves one message (kombu's basic_get with acknowledgement owed) and is then killed with -9:
# kombu's close would have restored the message, a kill leaves it in the ``unacked`` hash.
RESERVE = """
import sys, time
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    channel = conn.default_channel
    message = channel.basic_get(sys.argv[2], no_ack=False)
    print("reserved" if message is not None else "empty", flush=True)
    time.sleep(600)
"""


def reserve_and_die(url: str, queue: str) -> None:
    worker = subprocess.Popen([sys.executable, "-c", RESERVE, url, queue], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "reserved"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)
        if worker.stdout is not None:
            worker.stdout.close()


def test_a_message_a_killed_worker_reserved_is_put_back_long_before_the_visibility_timeout(
    ctx: Context, valkey: Broker
) -> None:
    valkey.start()
    task_id = submit(CHORE, context=ctx)
    queue = ctx.fleet.group_for_kind("dev_task").queue
    client = redis.Redis.from_url(valkey.url)
    reserve_and_die(valkey.url, queue)
    assert client.llen(queue) == 0 and task_id in (reservations(ctx) or {})
    assert ctx.fleet.limits.visibility_timeout_s >= 600  # what kombu alone would wait for

    assert release_stale(ctx, now=later(1)) == 0  # a fresh reservation: its worker may be starting it
    assert client.llen(queue) == 0
    assert run_once(ctx, now=later(ctx.fleet.outbox.lost_after_s + 1)).resent == 1
    assert client.llen(queue) == 1 and not reservations(ctx)  # back at the head of its queue, once
    assert row(ctx, task_id).resends == 1 and status(ctx, task_id) == "queued"
    assert release_stale(ctx, now=later(ctx.fleet.outbox.lost_after_s + 1)) == 0
    client.close()


def test_a_reservation_of_an_ended_task_is_dropped_and_one_of_a_running_task_is_left_to_its_lease(
    ctx: Context, valkey: Broker
) -> None:
    valkey.start()
    ended, running = submit(CHORE, context=ctx), submit(CHORE, context=ctx)
    queue = ctx.fleet.group_for_kind("dev_task").queue
    reserve_and_die(valkey.url, queue)
    reserve_and_die(valkey.url, queue)
    with session_scope(ctx.database_url) as session:
        session.execute(update(Task).where(Task.id == ended).values(status="succeeded"))
        session.execute(update(Task).where(Task.id == running).values(status="running"))
    assert release_stale(ctx, now=later(ctx.fleet.outbox.lost_after_s + 1)) == 0
    left = reservations(ctx) or {}
    assert ended not in left and running in left  # the running one's lease decides (tasks/lease.py)
    assert redis.Redis.from_url(valkey.url).llen(queue) == 0
