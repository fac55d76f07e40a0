"""A Celery app with the fleet's own configuration (transport, acks_late, prefetch, queues) and two tiny tasks,
for tests/test_broker_restart.py: a broker restart is tested on tasks in flight without providers or git."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

import celeryconfig
from tasks.context import get_context

app = Celery("blip")
_ctx = get_context()
app.conf.update({k: v for k, v in celeryconfig.build(_ctx.settings, _ctx.fleet).items() if k != "beat_schedule"})


@app.task(name="blip.work")  # type: ignore[untyped-decorator]
def work(seconds: float, tag: str) -> str:
    time.sleep(seconds)  # in flight (its message unacknowledged) while the broker is killed
    with redis.Redis.from_url(os.environ["BLIP_RESULTS"]) as results:
        results.sadd("done", tag)
    return tag
