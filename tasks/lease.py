"""The leases of the tasks a worker process runs, kept alive by one renewer thread, and the detector that
sends a task again when its lease ran out.

Celery alone recovers a task whose worker died only when the broker redelivers its unacknowledged message:
after the visibility timeout on Redis (an hour by default, and it must outlast the longest task), or when the
connection drops on RabbitMQ. ``acks_late`` and ``reject_on_worker_lost`` keep the message from being lost,
but cannot say sooner that its worker is gone. So every run takes a lease (:mod:`store.leases`) that a
thread of its worker renews every ``lease_renew_every_s``, however long the provider call or check command
takes; a worker killed with ``kill -9`` stops renewing, and celery beat's detector (every
``lease_check_every_s``, one entry per group, run by the group's own workers) finds the lease run out and
sends the task again to its group's queue. Another worker of the group takes it over within about
``lease_s + lease_check_every_s``. Sooner when the dead worker ran on the detector's own host: a lease owner
names its host and process, and a lease whose process is gone (no such pid) is treated as run out at once,
so a ``kill -9`` costs one ``lease_check_every_s``, not a whole lease. (A pid that was reused meanwhile looks
alive: then the lease runs out as usual.) The message the dead worker held comes back after the visibility timeout
too, and ends quietly (the task finished, or runs under a live lease).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from store import leases
from store.db import session_scope
from store.leases import Verdict, lease_end
from switchyard.fleet_models import LimitsConfig
from switchyard.processes import process_gone, run_name, this_host

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
T = TypeVar("T")
Send = Callable[[str, str, str], None]  # (task id, kind, lease token): put the task's message on its queue
RENEW_RETRY_S = 1.0  # after a failed renewal round (the database was away), the next one this soon
RESEND_LEASES = 2  # a re-sent message has two leases' time to be picked up before it is sent once more


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_owner() -> str:
    """A run's name as a lease owner: host, process, and a part of its own (:func:`switchyard.processes.run_name`)."""
    return run_name()


class Leases:
    """The leases this process holds: taken per run, renewed together by one daemon thread, started on the
    first run (after any fork: one instance per process, see :meth:`tasks.context.Context.part`)."""

    def __init__(self, database_url: str, limits: LimitsConfig, *, now: Clock = utcnow) -> None:
        self.database_url = database_url
        self.limits = limits
        self.now = now
        self._held: dict[str, str] = {}  # task id -> owner
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def take(self, task_id: str, token: str | None) -> tuple[Verdict, str]:
        """Claim the task for a new run (see :func:`store.leases.decide`); the verdict and the run's owner."""
        verdict, owner, _ = self.take_then(task_id, token, lambda _: None)
        return verdict, owner

    def take_then(self, task_id: str, token: str | None, then: Callable[[Session], T]) -> tuple[Verdict, str, T | None]:
        """:meth:`take`, and when the task is taken, ``then`` in the same transaction (the run's claim of the
        task: one transaction for the lease and the claim); the verdict, the run's owner and what ``then`` gave."""
        owner, now = new_owner(), self.now()
        with session_scope(self.database_url) as session:
            until = lease_end(now, self.limits.lease_s)
            verdict = leases.take(session, task_id=task_id, owner=owner, token=token, until=until, now=now)
            return verdict, owner, then(session) if verdict == "take" else None

    @contextmanager
    def holding(self, task_id: str, owner: str) -> Iterator[None]:
        """Keep ``owner``'s lease on ``task_id`` renewed while the block runs."""
        with self._lock:
            self._held[task_id] = owner
            self._start()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(task_id) == owner:
                    del self._held[task_id]

    def extend(self, task_id: str, owner: str, seconds: float) -> bool:
        """Hold the lease ``seconds`` from now (a deferral: the retry's message carries ``owner`` as its token)."""
        with session_scope(self.database_url) as session:
            return leases.renew(session, task_id=task_id, owner=owner, until=lease_end(self.now(), seconds))

    def renew_all(self) -> list[str]:
        """Renew every lease held, in one transaction; the ids of those another owner took (they are dropped)."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return []
        until = lease_end(self.now(), self.limits.lease_s)
        with session_scope(self.database_url) as session:
            lost = [i for i, owner in held.items() if not leases.renew(session, task_id=i, owner=owner, until=until)]
        with self._lock:
            for task_id in lost:
                if self._held.get(task_id) == held[task_id]:
                    del self._held[task_id]
        for task_id in lost:
            log.error("task %s: its lease was taken over (renewals came too late); another worker runs it", task_id)
        return lost

    def still_mine(self, task_id: str, owner: str) -> bool:
        """Whether ``owner`` still holds ``task_id``'s lease as far as this process knows (a renewal that found
        it taken over drops it)."""
        with self._lock:
            return self._held.get(task_id) == owner

    def close(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._renew_forever, name="switchyard-leases", daemon=True)
            self._thread.start()

    def _renew_forever(self) -> None:
        wait = self.limits.lease_renew_every_s
        while not self._stop.wait(wait):
            try:
                self.renew_all()
                wait = self.limits.lease_renew_every_s
            except SQLAlchemyError as exc:  # soon again: the lease must be renewed as soon as the database is back
                log.warning("could not renew task leases: %s: %s", type(exc).__name__, exc)
                wait = min(RENEW_RETRY_S, self.limits.lease_renew_every_s)


def resend_expired(database_url: str, limits: LimitsConfig, send: Send, *, group: str, now: datetime) -> list[str]:
    """Send again every task of ``group`` whose lease ran out; the ids sent. A send that fails is tried again
    on a later round (the lease given to the message runs out too)."""
    host = this_host()
    with session_scope(database_url) as session:
        found = leases.expired(session, now=now, group=group)
        ran_here = leases.held_by(session, prefix=f"{host}/", group=group)
    expired = {view.task_id for view in found}
    dead = [view for view in ran_here if view.task_id not in expired and process_gone(view.owner, host)]
    sent: list[str] = []
    for view in [*found, *dead]:
        token = leases.resend_token(view.owner)
        with session_scope(database_url) as session:
            won = leases.mark_resent(session, view, token=token, until=lease_end(now, limits.lease_s * RESEND_LEASES))
        if not won:
            continue
        why = "its process is gone" if view in dead else "lease ran out"
        log.warning("task %s (%s, %s) lost its worker: %s; sent again", view.task_id, view.kind, view.status, why)
        send(view.task_id, view.kind, token)
        sent.append(view.task_id)
    return sent
