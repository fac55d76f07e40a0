"""Celery settings, derived from the validated settings and fleet: never written by hand.

One queue per session group (from the fleet file) and one for the upkeep beat sends, every task kind routed
to its group's queue, JSON only, acknowledged late and rejected (so redelivered) when its worker dies,
one message prefetched per slot,
and a visibility timeout longer than the longest task. The broker's redelivery is the last resort: a task
whose worker died is found sooner by its lease, by the detector beat runs for every group (tasks/lease.py).
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from switchyard.fleet import KINDS, Fleet
from switchyard.settings import Settings


def task_name(kind: str) -> str:
    """The Celery task name of a task kind."""
    return f"switchyard.{kind}"


# Upkeep sent by `celery beat` (tasks/maintenance.py). The hold sweeper and the outbox sender go to a queue of
# their own, which every group's worker also consumes (workers/services.py): whichever group is up runs them,
# and they never wait behind a group's long tasks. The lease detectors stay on each group's queue (below).
MAINTENANCE_QUEUE = "switchyard.maintenance"
SWEEP_HOLDS_TASK = "switchyard.maintenance.sweep_holds"
SWEEP_HOLDS_EVERY_S = 60.0
RECOVER_LEASES_TASK = "switchyard.maintenance.recover_leases"


def lease_checks(fleet: Fleet) -> dict[str, Any]:
    """One lease detector per group, sent to the group's own queue: a group's live workers re-send the tasks
    of the group's dead ones (tasks/lease.py), whatever other groups are up."""
    every = fleet.limits.lease_check_every_s
    return {
        f"recover-leases-{group.name}": {
            "task": RECOVER_LEASES_TASK,
            "schedule": every,
            "args": [group.name],
            "options": {"queue": group.queue, "expires": every},  # no piling up while the group is down
        }
        for group in fleet.groups
    }


SEND_OUTBOX_TASK = "switchyard.maintenance.send_outbox"  # every [outbox] every_s (tasks/sender.py)
SEND_ALERTS_TASK = "switchyard.alerts.send"  # every [alerts] every_s (alerts/beat.py)
REDIS_TRANSPORT = "tasks.redis_transport:Transport"


def build(settings: Settings, fleet: Fleet) -> dict[str, Any]:
    """The Celery configuration for this fleet, as a mapping for ``app.add_defaults``."""
    names = [g.queue for g in fleet.groups] + [MAINTENANCE_QUEUE]
    queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]
    routes: dict[str, dict[str, str]] = {task_name(kind): {"queue": fleet.group_for_kind(kind).queue} for kind in KINDS}
    routes.update({name: {"queue": MAINTENANCE_QUEUE} for name in (SWEEP_HOLDS_TASK, SEND_OUTBOX_TASK)})
    limits = fleet.limits
    conf = {
        "broker_url": settings.effective_broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": limits.visibility_timeout_s},
        "task_queues": queues,
        "task_routes": routes,
        "task_default_queue": fleet.groups[0].queue,
        "task_create_missing_queues": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limits.task_time_limit_s,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "sweep-holds": {
                "task": SWEEP_HOLDS_TASK,
                "schedule": SWEEP_HOLDS_EVERY_S,
                # no piling up while no worker runs
                "options": {"queue": MAINTENANCE_QUEUE, "expires": SWEEP_HOLDS_EVERY_S},
            },
            **lease_checks(fleet),
            "send-outbox": {
                "task": SEND_OUTBOX_TASK,
                "schedule": fleet.outbox.every_s,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": fleet.outbox.every_s},
            },
            "send-alerts": {
                "task": SEND_ALERTS_TASK,
                "schedule": fleet.alerts.every_s,
                "options": {"expires": fleet.alerts.every_s},
            },
        },
    }
    if settings.effective_broker_url.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with a narrow fix: a broker restart while tasks run no longer kills a
        # worker (AttributeError 'hostname' in kombu's reconnect); see tasks/redis_transport.py
        conf["broker_transport"] = REDIS_TRANSPORT
    return conf
