"""Is a started service ready? Each one is asked in its own terms, never judged by its log.

* the broker: its port answers Redis ``PING``;
* the simulator, Flower, the status API: their HTTP health endpoint answers (any status: the server serves);
* a worker: its node answers a Celery ``ping`` addressed to it alone (``destination=[node]``), which
  proves it consumes its control queue, so it also receives tasks;
* beat serves nothing to ask: it is ready once started, and a beat that exits is noticed like any other.

A probe that cannot reach its service returns "not ready"; it never raises for a service that is down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx
from celery import Celery

from workers import broker, health
from workers.services import CeleryReady, HttpReady, Readiness, RedisReady, ServiceSpec, Started

HTTP_PROBE_S = 2.0


def answers(ready: Readiness) -> bool:
    """True when a broker, HTTP or started-only service answers; workers are asked by :func:`ready_services`."""
    if isinstance(ready, Started):
        return True
    if isinstance(ready, RedisReady):
        return broker.ping(ready.url) is None
    if isinstance(ready, HttpReady):
        try:
            httpx.get(ready.url, timeout=HTTP_PROBE_S)
        except httpx.TransportError:
            return False
        return True
    return False


def ready_services(specs: Sequence[ServiceSpec], ping: Callable[[list[str]], set[str]] | None) -> list[str]:
    """The names among ``specs`` that are ready now: one ping round for all the workers among them."""
    ready = [s.name for s in specs if not isinstance(s.ready, CeleryReady) and answers(s.ready)]
    nodes = {s.ready.node: s.name for s in specs if isinstance(s.ready, CeleryReady)}
    if nodes and ping is not None:
        ready += [nodes[node] for node in ping(sorted(nodes)) if node in nodes]
    return ready


class Pinger:
    """Pings worker nodes, widening its reply window after every round in which one did not answer.

    Why the window must widen: a reply that arrives after the window closed is not late but lost. kombu's
    ``Mailbox._collect`` stops consuming the client's auto-delete reply queue when the window ends, and the
    worker's later reply finds no binding and is dropped without a word (``_publish_reply`` ignores the
    InconsistencyError). With the former fixed 1 s window, a worker that took longer than that to answer on a
    loaded machine failed every round, however long ``up`` waited, although its log said ``ready``. The
    window ends early as soon as every addressed node answered, so a wide window costs nothing then.
    """

    def __init__(self, app: Celery, window_s: float, max_s: float) -> None:
        self.app, self.window_s, self.max_s = app, window_s, max_s

    def __call__(self, nodes: list[str]) -> set[str]:
        answered = health.ping_nodes(self.app, nodes, timeout=self.window_s)
        if not set(nodes) <= answered:
            self.window_s = min(self.window_s * 2, self.max_s)
        return answered
