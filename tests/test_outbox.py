"""The outbox's pure decisions (retry timing, lost messages, reading kombu's messages) and its rows in SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REDIS_PORT, flushed_redis
from pydantic import ValidationError

from store import outbox, repo
from store.db import session_scope
from store.migrate import ensure_schema
from store.models import Outbox, Task
from store.pipeline import HELD
from switchyard.fleet_models import OutboxPolicy
from tasks.outbox import is_lost, owed_before, retry_delay, sent_before
from tasks.queues import Reserved, message_eta, message_task_id, reserved_eta, reserved_task_id
from tasks.sender import _unstarted

POLICY = OutboxPolicy(every_s=15, grace_s=20, retry_initial_s=2, retry_max_s=60, lost_after_s=120)
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(seconds=121)
FRESH = NOW - timedelta(seconds=119)


@pytest.mark.parametrize(
    ("tries", "delay"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (40, 60.0), (10_000, 60.0)]
)
def test_a_failed_send_waits_doubling_up_to_the_cap(tries: int, delay: float) -> None:
    assert retry_delay(tries, POLICY) == delay


def test_the_sender_leaves_fresh_rows_to_their_writer_and_calls_old_sends_lost() -> None:
    assert owed_before(NOW, POLICY) == NOW - timedelta(seconds=20)
    assert sent_before(NOW, POLICY) == NOW - timedelta(seconds=120)


def lost(
    status: str = "queued", *, reason: str | None = None, sent_at: datetime = OLD, on: bool | None = False
) -> bool:
    return is_lost(status=status, reason=reason, sent_at=sent_at, now=NOW, policy=POLICY, on_broker=on)


def test_a_queued_task_with_no_message_long_after_its_send_is_lost() -> None:
    assert lost("queued")


def test_a_task_deferred_by_a_worker_with_no_message_is_lost() -> None:
    assert lost("deferred", reason="no provider now: claude breaker open")


def test_a_message_still_on_the_broker_is_never_sent_twice() -> None:
    assert not lost("queued", on=True)


def test_a_broker_that_cannot_be_looked_into_calls_nothing_lost() -> None:
    assert not lost("queued", on=None)


def test_a_recent_send_is_normal_queue_latency_not_a_loss() -> None:
    assert not lost("queued", sent_at=FRESH)


def test_a_held_task_has_no_message_on_purpose() -> None:
    assert not lost("deferred", reason=f"{HELD}: 1234abcd")


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "rejected", "cancelled"])
def test_a_task_that_runs_or_finished_is_not_lost(status: str) -> None:
    assert not lost(status)


def test_the_policy_refuses_a_loss_threshold_inside_one_sender_run() -> None:
    with pytest.raises(ValidationError, match="lost_after_s"):
        OutboxPolicy(every_s=30, lost_after_s=30)


def kombu_message(task_id: str) -> str:
    """A message as kombu's Redis transport stores it (protocol 2: the task id is in the headers)."""
    return json.dumps({"body": "W10=", "headers": {"id": task_id, "task": "switchyard.pr_review"}, "properties": {}})


def test_the_task_id_is_read_from_a_waiting_message_and_from_a_reserved_one() -> None:
    assert message_task_id(kombu_message("t-1")) == "t-1"
    assert message_task_id(kombu_message("t-1").encode()) == "t-1"
    reserved = json.dumps([json.loads(kombu_message("t-2")), "pr_review", "pr_review"])
    assert reserved_task_id(reserved) == "t-2"


def test_a_deferral_eta_is_read_from_a_reserved_message() -> None:
    message = json.loads(kombu_message("t-3"))
    message["headers"]["eta"] = "2026-12-02T17:49:53.000000+00:00"
    reserved = json.dumps([message, "pr_integ", "pr_integ"])
    due = datetime(2026, 12, 2, 17, 49, 53, tzinfo=UTC).timestamp()
    assert message_eta(json.dumps(message)) == due and reserved_eta(reserved) == due
    assert reserved_eta(json.dumps([json.loads(kombu_message("t-4")), "q", "q"])) is None  # no countdown
    assert message_eta('{"headers": {"eta": "not a date"}}') is None


def test_a_deferred_message_a_dead_worker_holds_is_stale_once_its_eta_is_lost_after_s_past() -> None:
    """A live worker runs an ETA message when it comes due: one still reserved lost_after_s (30 s) past its eta
    goes back to its queue then, not after the longest countdown (60 s) more, which held a merge queue's head
    past the chaos suite's 90 s recovery deadline."""
    now, lost_after, longest = 1_000.0, 30.0, 60.0
    old, deferred_old = now - lost_after, now - lost_after - longest
    reason = "waiting in the merge queue of dev5/dev behind af25a92f (running)"
    due_long_ago = Reserved("t", since=now - 35, eta=now - 33)
    assert _unstarted("deferred", reason, due_long_ago, deferred_old, old)
    assert not _unstarted("deferred", reason, Reserved("t", since=now - 35, eta=now - 20), deferred_old, old)
    assert not _unstarted("deferred", reason, Reserved("t", since=now - 20, eta=now - 40), deferred_old, old)
    no_eta = Reserved("t", since=now - 35)  # without an eta: the longest countdown as before
    assert not _unstarted("deferred", reason, no_eta, deferred_old, old)
    assert _unstarted("deferred", reason, Reserved("t", since=now - 95), deferred_old, old)
    assert not _unstarted("deferred", "held until its sub-tasks land", due_long_ago, deferred_old, old)  # parked
    assert not _unstarted("running", None, due_long_ago, deferred_old, old)


@pytest.mark.parametrize("raw", ["not json", "[]", "{}", '{"headers": "x"}', '{"headers": {"id": 7}}', "42"])
def test_a_message_without_a_task_id_is_skipped(raw: str) -> None:
    assert message_task_id(raw) is None
    assert reserved_task_id(raw) is None


# --- rows in SQL --------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    ensure_schema(url)
    return url


def new_task(url: str, task_id: str, *, send: bool = True) -> None:
    with session_scope(url) as session:
        repo.create_task(
            session, task_id=task_id, kind="pr_review", group="pr_review", environment="dev1", stage="dev",
            title="t", payload={"kind": "pr_review", "environment": "dev1"},
        )  # fmt: skip
        if send:
            outbox.add(session, task_id=task_id, action=outbox.SEND)


def row(url: str, task_id: str, action: str) -> Outbox:
    with session_scope(url) as session:
        found = outbox.get(session, task_id=task_id, action=action)
        assert found is not None
        session.expunge(found)
        return found


def test_the_terminal_status_and_its_follow_ups_are_committed_together(db: str) -> None:
    new_task(db, "t-1")
    with pytest.raises(RuntimeError), session_scope(db) as session:
        repo.finish_task(session, task_id="t-1", status="succeeded")
        raise RuntimeError("the transaction rolls back")
    with session_scope(db) as session:
        assert outbox.get(session, task_id="t-1", action=outbox.FOLLOW_UPS) is None
        assert repo.finish_task(session, task_id="t-1", status="succeeded")
    assert row(db, "t-1", outbox.FOLLOW_UPS).sent_at is None
    with session_scope(db) as session:  # a second terminal status changes nothing, owes nothing more
        assert not repo.finish_task(session, task_id="t-1", status="failed")
        outbox.mark_sent(session, task_id="t-1", action=outbox.FOLLOW_UPS)
    with session_scope(db) as session:  # run again (a retry, a redelivery) and finished again: owed afresh
        session.get(Task, "t-1").status = "running"  # type: ignore[union-attr]
    with session_scope(db) as session:
        assert repo.finish_task(session, task_id="t-1", status="succeeded")
    assert row(db, "t-1", outbox.FOLLOW_UPS).sent_at is None


def test_owed_rows_wait_out_the_grace_and_each_failed_try(db: str) -> None:
    new_task(db, "t-1")
    created = row(db, "t-1", outbox.SEND).created_at.replace(tzinfo=UTC)
    with session_scope(db) as session:
        assert outbox.owed(session, created_before=created - timedelta(seconds=1), now=NOW, limit=10) == []
        due = outbox.owed(session, created_before=created, now=created, limit=10)
        assert due == [outbox.Owed("t-1", outbox.SEND, "pr_review", 0)]
        later = created + timedelta(seconds=30)
        outbox.mark_failed(session, task_id="t-1", action=outbox.SEND, error="broker down", retry_at=later)
        assert outbox.owed(session, created_before=created, now=later - timedelta(seconds=1), limit=10) == []
        assert [o.tries for o in outbox.owed(session, created_before=created, now=later, limit=10)] == [1]
        outbox.mark_sent(session, task_id="t-1", action=outbox.SEND, now=later)
        assert outbox.owed(session, created_before=later, now=later, limit=10) == []
    assert row(db, "t-1", outbox.SEND).last_error == "broker down"


def test_sent_tasks_that_did_not_start_are_listed_by_the_age_of_their_send(db: str) -> None:
    new_task(db, "t-1")
    new_task(db, "t-2", send=False)  # held, say: no message owed
    with session_scope(db) as session:
        outbox.mark_sent(session, task_id="t-1", action=outbox.SEND, now=OLD)
        assert (
            outbox.sent_not_started(session, sent_before=OLD - timedelta(seconds=1), statuses=("queued",), limit=9)
            == []
        )
        found = outbox.sent_not_started(session, sent_before=OLD, statuses=("queued",), limit=9)
        assert [(s.task_id, s.status, s.sent_at) for s in found] == [("t-1", "queued", OLD)]
        assert outbox.sent_not_started(session, sent_before=NOW, statuses=("running",), limit=9) == []
        outbox.mark_resent(session, task_id="t-1", now=NOW, why="re-sent")
    assert row(db, "t-1", outbox.SEND).resends == 1


def test_an_unknown_action_is_refused(db: str) -> None:
    new_task(db, "t-1", send=False)
    with pytest.raises(ValueError, match="not one of"), session_scope(db) as session:
        outbox.add(session, task_id="t-1", action="shout")


def test_a_detached_broker_connection_is_a_connection_error_not_an_attribute_error() -> None:
    """The narrow fix of tasks/redis_transport.py: kombu's channel of a collected connection (transport.client
    None) made Celery's consumer die with AttributeError 'hostname'; a connection error is one it handles."""
    import redis
    from kombu import Connection

    from tasks.redis_transport import Transport

    url = flushed_redis(13)
    with Connection(url, transport=Transport) as conn:
        channel = conn.default_channel
        assert channel._connparams()["port"] == REDIS_PORT
        conn.transport.client = None  # what Connection.collect() does to the transport
        with pytest.raises(redis.ConnectionError):
            channel._connparams()
        assert redis.ConnectionError in conn.transport.connection_errors
