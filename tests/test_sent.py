"""Scripts sent now and answered later (:mod:`routing.sent`) and the calls built on them, against a real Redis
(db 9): replies read first in, first out; a script Redis forgot, loaded and run once; a lost connection failing
every reply it owed; one connection per thread; the permit asked for before the hold given back when no call
follows (a cancel, a refused hold, a provider that could not be built); a success announced on flush.

Faults a healthy local Redis never shows (replies held back, then the connection cut) come from a TCP relay in
front of it: a ``CLIENT KILL`` arrives after Redis has answered, so those replies would still be read, and it
would cut other sessions' connections on the shared server too.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import REDIS_HOST, REDIS_PORT, SERVICES, flushed_redis, patient
from pipeline_kit import make_context
from redis.commands.core import Script

from providers.base import Provider
from routing.breaker import Breakers
from routing.permits import Denial, Permit, ProviderLimits, Transition
from routing.route import Refusal, RouteRequest
from routing.router import Place, Routed, Router
from routing.sent import Line
from simulator.server import BackgroundSimulator
from store.db import session_scope
from store.models import Attempt, Spend
from switchyard.errors import ProviderDown
from switchyard.fleet_models import BreakerPolicy
from tasks.attempt import Runner
from tasks.context import Context
from tasks.submit import submit

DB = 9  # no other test module uses it
P = "claude"
ECHO = "return ARGV[1]"
PUSH = "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('LLEN', KEYS[1])"
SLOW = "local t = redis.call('TIME') while (redis.call('TIME')[1] - t[1]) * 1e6 + redis.call('TIME')[2] - t[2] < tonumber(ARGV[1]) do end return 'late'"  # noqa: E501 -- one Lua line
POLICY = BreakerPolicy(failure_threshold=1, open_seconds=0.05, half_open_probes=1)


class Relay:
    """A TCP relay to the local Redis that a test can stall (replies held back) and cut (every connection
    closed), as a network or a Redis restart would."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.flowing = threading.Event()  # replies pass while set
        self.flowing.set()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((REDIS_HOST, REDIS_PORT))
            self.pairs.append((down, up))
            for src, dst, gate in ((down, up, None), (up, down, self.flowing)):
                thread = threading.Thread(target=self._pump, args=(src, dst, gate), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, gate: threading.Event | None) -> None:
        try:
            while data := src.recv(65536):
                if gate is not None:
                    gate.wait()
                dst.sendall(data)
        except OSError:
            pass

    def stall(self) -> None:
        self.flowing.clear()

    def cut(self) -> None:
        """Close every relayed connection (replies held back are lost); new connections flow again."""
        pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self.flowing.set()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.cut()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def url() -> str:
    return flushed_redis(DB)


@pytest.fixture
def admin(url: str) -> Iterator[redis.Redis]:
    """Registers the scripts (so a reload never goes through a line) and watches the server."""
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def named(url: str) -> Iterator[redis.Redis]:
    """A client whose connections carry a name of their own, to be found in ``CLIENT LIST``."""
    client = redis.Redis.from_url(url, client_name=f"test-sent-{uuid.uuid4().hex[:12]}")
    yield client
    client.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay()
    yield relay
    relay.close()


@pytest.fixture
def relayed(relay: Relay) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=relay.port, db=SERVICES.redis_db(DB))
    yield client
    client.close()


def script(admin: redis.Redis, lua: str) -> Script:
    """``lua`` registered and already loaded, so its first ``EVALSHA`` is answered by the script itself."""
    admin.script_load(lua)
    return admin.register_script(lua)


def connections_of(admin: redis.Redis, client: redis.Redis) -> list[dict[str, Any]]:
    name = client.get_connection_kwargs()["client_name"]
    return [c for c in admin.client_list() if c["name"] == name]


@pytest.fixture
def line_on() -> Iterator[Callable[[redis.Redis], Line]]:
    """Lines on a client, each closed (on this thread) when the test ends."""
    made: list[Line] = []

    def make(client: redis.Redis) -> Line:
        made.append(Line(client))
        return made[-1]

    yield make
    for line in made:
        line.close()


# --- Line ------------------------------------------------------------------------------------------------


def test_replies_are_read_first_in_first_out(
    admin: redis.Redis, named: redis.Redis, line_on: Callable[[redis.Redis], Line]
) -> None:
    push, line = script(admin, PUSH), line_on(named)
    first, second = line.send(push, ["fifo"], ["a"]), line.send(push, ["fifo"], ["b"])
    assert (first.read, second.read) == (False, False)
    assert second.answer() == 2
    assert first.read  # its reply came first on the connection, so it was read on the way
    assert first.answer() == 1
    third, fourth = line.send(push, ["fifo"], ["c"]), line.send(push, ["fifo"], ["d"])
    assert third.answer() == 3
    assert not fourth.read  # answering one never reads past it
    assert fourth.answer() == 4
    assert admin.lrange("fifo", 0, -1) == [b"a", b"b", b"c", b"d"]


def test_a_script_redis_forgot_is_loaded_and_run_once(
    admin: redis.Redis, named: redis.Redis, line_on: Callable[[redis.Redis], Line]
) -> None:
    push, echo, line = script(admin, PUSH), script(admin, ECHO), line_on(named)
    assert line.send(push, ["k"], ["a"]).answer() == 1
    admin.script_flush()
    first, second = line.send(push, ["k"], ["b"]), line.send(echo, [], ["after"])
    assert second.answer() == b"after"
    assert first.answer() == 2
    assert admin.lrange("k", 0, -1) == [b"a", b"b"]  # run once, after its NOSCRIPT reply
    assert admin.script_exists(push.sha, echo.sha) == [True, True]


def test_a_lost_connection_fails_every_reply_it_owed_and_the_next_send_reconnects(
    admin: redis.Redis, relay: Relay, relayed: redis.Redis, line_on: Callable[[redis.Redis], Line]
) -> None:
    push, line = script(admin, PUSH), line_on(relayed)
    assert line.send(push, ["lost"], ["a"]).answer() == 1
    relay.stall()
    first, second = line.send(push, ["lost"], ["b"]), line.send(push, ["lost"], ["c"])
    deadline = time.monotonic() + patient(5)
    while admin.llen("lost") < 3 and time.monotonic() < deadline:  # Redis ran both; their replies are held
        time.sleep(0.01)
    relay.cut()
    with pytest.raises(redis.ConnectionError):
        first.answer()
    assert second.read
    with pytest.raises(redis.ConnectionError):
        second.answer()
    assert line.send(push, ["lost"], ["d"]).answer() == 4  # a new connection, its own reply


def test_after_a_read_timeout_the_late_reply_never_answers_a_later_command(
    admin: redis.Redis, url: str, line_on: Callable[[redis.Redis], Line]
) -> None:
    slow, echo = script(admin, SLOW), script(admin, ECHO)
    impatient = redis.Redis.from_url(url, socket_timeout=0.05)
    try:
        line = line_on(impatient)
        late, queued = line.send(slow, [], [200_000]), line.send(echo, [], ["queued"])
        with pytest.raises(redis.TimeoutError):
            late.answer()
        with pytest.raises(redis.TimeoutError):
            queued.answer()  # its reply was behind the one that timed out: lost with the connection
        time.sleep(0.3)  # the slow script's reply has reached the old socket by now
        assert line.send(echo, [], ["fresh"]).answer() == b"fresh"
    finally:
        impatient.close()


def test_a_connection_closed_while_idle_is_reconnected_on_the_next_send(
    admin: redis.Redis, relay: Relay, relayed: redis.Redis, line_on: Callable[[redis.Redis], Line]
) -> None:
    echo, line = script(admin, ECHO), line_on(relayed)
    assert line.send(echo, [], ["before"]).answer() == b"before"
    relay.cut()  # as a Redis restart or an idle timeout does
    time.sleep(0.05)
    assert line.send(echo, [], ["after"]).answer() == b"after"


def test_each_thread_sends_on_a_connection_of_its_own(
    admin: redis.Redis, named: redis.Redis, line_on: Callable[[redis.Redis], Line]
) -> None:
    echo, line = script(admin, ECHO), line_on(named)
    both_sent, answered, counted = threading.Barrier(2), threading.Barrier(3), threading.Barrier(3)
    got: dict[str, list[Any]] = {}

    def work(tag: str) -> None:
        sent = [line.send(echo, [], [f"{tag}{i}"]) for i in range(3)]
        both_sent.wait(timeout=5)  # a shared connection would now hold both threads' replies, interleaved
        got[tag] = [s.answer() for s in sent]
        answered.wait(timeout=5)
        counted.wait(timeout=5)
        line.close()

    assert connections_of(admin, named) == []
    threads = [threading.Thread(target=work, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    answered.wait(timeout=5)
    open_now = connections_of(admin, named)
    counted.wait(timeout=5)
    for thread in threads:
        thread.join(timeout=5)
    assert got == {"a": [b"a0", b"a1", b"a2"], "b": [b"b0", b"b1", b"b2"]}
    assert len({c["id"] for c in open_now}) == 2


# --- PermitRequest and the success verdict -------------------------------------------------------------


def breakers(client: redis.Redis, seen: list[Transition] | None = None, *, max_in_flight: int = 1) -> Breakers:
    record = None if seen is None else seen.append
    return Breakers(client, POLICY, {P: ProviderLimits(max_in_flight=max_in_flight)}, on_transition=record)


def in_flight(b: Breakers, provider: str = P) -> int:
    return b.status([provider])[provider].in_flight


def test_cancel_gives_back_a_granted_permit_nobody_took(admin: redis.Redis) -> None:
    b = breakers(admin)
    request = b.request(P)
    request.cancel()
    assert in_flight(b) == 0
    assert isinstance(b.acquire(P), Permit)  # the only slot is free again


def test_cancel_after_take_leaves_the_slot_to_the_verdict(admin: redis.Redis) -> None:
    b = breakers(admin)
    request = b.request(P)
    permit = request.take()
    assert isinstance(permit, Permit)
    request.cancel()
    assert in_flight(b) == 1
    busy = b.acquire(P)
    assert isinstance(busy, Denial) and busy.reason == "busy"
    b.success(permit)
    assert in_flight(b) == 0


def test_cancel_of_a_denial_gives_back_nothing(admin: redis.Redis) -> None:
    b = breakers(admin)
    holder = b.acquire(P)
    assert isinstance(holder, Permit)
    refused = b.request(P)
    refused.cancel()
    assert isinstance(refused.take(), Denial)
    assert in_flight(b) == 1  # the holder's slot is still the holder's
    b.release(holder)
    assert in_flight(b) == 0


def test_cancel_when_redis_is_away_logs_and_returns(
    relay: Relay, relayed: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    b = breakers(relayed)
    warm = b.acquire(P)  # the line's connection is open before the replies stop
    assert isinstance(warm, Permit)
    b.release(warm)
    relay.stall()
    request = b.request(P)
    time.sleep(0.05)
    relay.cut()
    with caplog.at_level(logging.WARNING, logger="routing.breaker"):
        request.cancel()
    assert "could not give back an unused permit of claude" in caplog.text


@pytest.mark.parametrize(
    "read",
    [Breakers.flush, lambda b: b.status([P]), lambda b: b.acquire(P)],
    ids=["flush", "status", "acquire"],
)
def test_a_probe_success_is_announced_when_read(admin: redis.Redis, read: Callable[[Breakers], object]) -> None:
    seen: list[Transition] = []
    b, observer = breakers(admin, seen, max_in_flight=4), breakers(admin)
    first = b.acquire(P)
    assert isinstance(first, Permit)
    b.failure(first, "TransientError: HTTP 500 (test)")
    time.sleep(POLICY.open_seconds * 2)
    probe = b.acquire(P)
    assert isinstance(probe, Permit) and probe.probe
    assert [(t.from_state, t.to_state) for t in seen] == [("closed", "open"), ("open", "half_open")]
    b.send_success(probe)
    deadline = time.monotonic() + patient(5)
    while observer.status([P])[P].state != "closed" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert observer.status([P])[P].state == "closed"  # Redis applied the verdict on arrival
    assert len(seen) == 2  # but this process has not read it yet
    read(b)
    assert [(t.from_state, t.to_state) for t in seen[2:]] == [("half_open", "closed")]
    b.flush()
    assert len(seen) == 3


# --- Router and Runner ------------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path, server: BackgroundSimulator, url: str, sqlite_url: str) -> Context:
    return make_context(tmp_path, server.url, url, sqlite_url)


def holds(ctx: Context, task_id: str) -> dict[int, str]:
    with session_scope(ctx.database_url) as session:
        return {row.attempt: row.state for row in session.query(Spend).filter_by(task_id=task_id)}


def test_the_router_gives_back_the_permit_of_a_refused_hold(ctx: Context) -> None:
    task_id = submit({"kind": "plan", "environment": "dev1", "goal": "anything"}, context=ctx)
    request = RouteRequest(kind="plan", group="high_level", environment="dev1", stage="dev", prompt_chars=100)
    state, ledger = ctx.breakers(), ctx.ledger()
    router = Router(ctx.settings, ctx.fleet, ledger, state, clock=lambda: 0.0)  # snapshots never expire
    routed = router.route(request, Place(task_id, 1, "high_level", "dev1", "dev"))
    assert isinstance(routed, Routed) and routed.provider == P
    assert routed.permit is not None and routed.permit.provider == P
    permit = routed.permit.take()
    assert isinstance(permit, Permit) and permit.provider == P
    assert in_flight(state) == 1
    state.release(permit)
    ledger.release(task_id=task_id, attempt=1, reason="test")

    ledger.set_budget(scope="all", window="day", cap_usd=0.000001)  # the router's cached budgets still allow it
    refused = router.route(request, Place(task_id, 2, "high_level", "dev1", "dev"))
    assert isinstance(refused, Refusal) and refused.status == "budget_exhausted"
    status = state.status(ctx.fleet.providers)
    assert status[P].calls_last_minute == 2  # the refused route did ask for claude's permit
    assert {name: s.in_flight for name, s in status.items()} == dict.fromkeys(ctx.fleet.providers, 0)
    assert holds(ctx, task_id) == {1: "released"}


def unbuildable(exc: Exception) -> Callable[[str, Context, str], Provider]:
    def make(name: str, ctx: Context, transport: str) -> Provider:
        raise exc

    return make


def test_a_provider_that_cannot_be_built_gives_its_permit_back(ctx: Context) -> None:
    task_id = submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    runner = Runner(ctx, make_provider=unbuildable(RuntimeError("no client")), sleep=lambda _: None)
    with pytest.raises(RuntimeError, match="no client"):
        runner.run(task_id)
    status = ctx.breakers().status(["ollama"])["ollama"]
    assert status.calls_last_minute == 1  # a permit was asked for the attempt
    assert status.in_flight == 0


def test_a_provider_that_cannot_be_built_leaves_no_hold(ctx: Context) -> None:
    task_id = submit({"kind": "pr_integ", "environment": "dev1", "branch": "feature/sample-1"}, context=ctx)
    runner = Runner(
        ctx, make_provider=unbuildable(ProviderDown("not configured", provider="ollama")), sleep=lambda _: None
    )
    assert runner.run(task_id) == "no_provider"  # ollama is pr_integ's only rung
    assert ctx.breakers().status(["ollama"])["ollama"].in_flight == 0
    assert set(holds(ctx, task_id).values()) == {"released"}
    with session_scope(ctx.database_url) as session:
        rows = session.query(Attempt).filter_by(task_id=task_id).all()
        assert [(row.status, row.error_class) for row in rows] == [("failed", "ProviderDown")]
