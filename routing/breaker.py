"""Per-provider circuit breakers and call limits, shared by every worker process and host through Redis.

    closed ──(failure_threshold failures in a row)──▶ open ──(open_seconds)──▶ half_open
       ▲                                               ▲                          │
       └──────────────── probe succeeded ──────────────┼──────────────────────────┤
                                                       └──── probe failed ────────┘
    any state ──disable (401/403)──▶ disabled ──enable (an operator)──▶ closed

Every try of a provider call first asks :meth:`Breakers.acquire` for a :class:`Permit`. One Lua script
checks the breaker (and hands out the half-open probes: exactly ``half_open_probes``, however many processes
ask at once), takes an in-flight slot (``max_in_flight``) and counts the call against ``requests_per_minute``
(a sliding 60 s window), or answers a :class:`Denial` that says why and when to ask again. The call then
ends with exactly one of :meth:`~Breakers.success`, :meth:`~Breakers.failure` or :meth:`~Breakers.release`
(no verdict). A slot is a lease: a worker that dies mid-call frees it when the lease runs out.

On an attempt's path neither round trip is waited for alone (:mod:`routing.sent`): :meth:`Breakers.request`
sends the permit's script before the ledger's hold and the permit is read after it, and
:meth:`Breakers.send_success` sends the verdict of an answered call, read by :meth:`Breakers.flush` after the
settle (or by the next call of this object). Redis applies both when they arrive, as a blocking call would.

The same Redis holds the models a provider answered 404 for (:mod:`routing.marks`): :meth:`Breakers.mark_model`
writes a mark, :meth:`Breakers.heal_models` (and :meth:`Breakers.reset`) forgets them, and the snapshot and
status read them with the breaker, in the same round trip.

This module talks only to Redis. Transitions come back to ``on_transition`` (which records them in SQL, see
:mod:`routing.state`); the last one also stays in Redis for ``switchyard status --providers``. When Redis
cannot be reached every method raises :class:`~switchyard.errors.StateUnavailable`: nothing is called blind.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import redis

from routing import breaker_lua, marks
from routing.keys import provider_keys
from routing.marks import ModelMark
from routing.permits import (
    BUSY_RETRY_S,
    BreakerStatus,
    Denial,
    DenialReason,
    OnTransition,
    Permit,
    ProviderLimits,
    Transition,
    limits_from_fleet,
)
from routing.route import ProviderState
from routing.sent import Line, Sent
from switchyard.errors import StateUnavailable
from switchyard.fleet_models import BreakerPolicy, Fleet
from switchyard.processes import process_gone, run_name, this_host

log = logging.getLogger(__name__)
T = TypeVar("T")


class PermitRequest:
    """A permit asked for whose answer is not read yet: :meth:`take` reads it for the call; :meth:`cancel`
    gives it back when no call will be made (the hold was refused, or the attempt stopped before calling)."""

    def __init__(self, breakers: Breakers, provider: str, permit_id: str, sent: Sent) -> None:
        self.breakers, self.provider, self._id, self._sent = breakers, provider, permit_id, sent
        self._got: Permit | Denial | None = None
        self._taken = False

    def take(self) -> Permit | Denial:
        """The permit (or why not), for the one call it is for; raises StateUnavailable when Redis is away."""
        self._taken = True
        return self._read()

    def cancel(self) -> None:
        """Release the permit if it was granted and not taken (a Redis that is away lets its lease expire)."""
        if self._taken:
            return
        self._taken = True
        try:
            got = self._read()
            if isinstance(got, Permit):
                self.breakers.release(got)
        except StateUnavailable as exc:
            log.warning("could not give back an unused permit of %s (its lease expires): %s", self.provider, exc)

    def _read(self) -> Permit | Denial:
        if self._got is None:
            answer = self.breakers._answer(self.provider, self._sent)
            self._got = self.breakers._permit_of(self.provider, self._id, answer)
        return self._got


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Breakers:
    """The breakers and limits of every provider, over a Redis client the caller made (one per process)."""

    def __init__(
        self,
        client: redis.Redis,
        policy: BreakerPolicy,
        limits: Mapping[str, ProviderLimits],
        *,
        on_transition: OnTransition | None = None,
    ) -> None:
        self.client, self.policy, self.limits = client, policy, dict(limits)
        self.on_transition = on_transition
        self._acquire = client.register_script(breaker_lua.ACQUIRE)
        self._verdict = client.register_script(breaker_lua.VERDICT)
        self._operate = client.register_script(breaker_lua.OPERATE)
        self._read = client.register_script(breaker_lua.READ)
        self._keys: dict[tuple[str, ...], list[str]] = {}  # the READ script's KEYS per list of providers
        self._line = Line(client)  # the permit and the verdict of a call, sent without waiting (routing.sent)
        self._sent = threading.local()  # per thread: `unread`, the verdicts sent by send_success not read yet

    @classmethod
    def from_fleet(cls, client: redis.Redis, fleet: Fleet, *, on_transition: OnTransition | None = None) -> Breakers:
        return cls(client, fleet.breaker, limits_from_fleet(fleet), on_transition=on_transition)

    def limits_for(self, provider: str) -> ProviderLimits:
        return self.limits.get(provider) or ProviderLimits()

    def acquire(self, provider: str) -> Permit | Denial:
        """A permit for one call of ``provider``, or why not now (atomic across every process)."""
        return self.request(provider).take()

    def request(self, provider: str) -> PermitRequest:
        """Ask for a permit and return before Redis answers; :meth:`PermitRequest.take` reads the answer."""
        self.flush()
        limits, permit_id = self.limits_for(provider), run_name()  # host/pid/…: see reclaim_gone
        args = [permit_id, self.policy.half_open_probes, limits.max_in_flight, limits.requests_per_minute or 0]
        args += [int(limits.lease_s * 1000), self.policy.failure_threshold]
        return PermitRequest(self, provider, permit_id, self._send(self._acquire, provider, args))

    def _permit_of(self, provider: str, permit_id: str, out: dict[str, Any]) -> Permit | Denial:
        if out["ok"]:
            return Permit(provider, permit_id, int(out["epoch"]), bool(out["probe"]))
        reason: DenialReason = out["reason"]
        retry = None if reason == "disabled" else max(float(out.get("retry_in_ms", 0)) / 1000, 0.0)
        if reason in {"busy", "probing", "suspect"} and retry is not None:
            retry = min(retry, BUSY_RETRY_S)
        return Denial(provider, reason, retry)

    def send_success(self, permit: Permit) -> None:
        """:meth:`success` without waiting for Redis: the answer is read by :meth:`flush` or the next call."""
        sent = self._send(self._verdict, permit.provider, self._verdict_args(permit, "success", ""))
        self._unread().append((permit.provider, sent))

    def flush(self) -> None:
        """Read the verdicts :meth:`send_success` left unread in this thread (their transitions are announced
        now). A Redis that went away costs the record of the verdict, never the call's outcome: it is logged."""
        unread = self._unread()
        if not unread:
            return
        done, unread[:] = list(unread), []
        for provider, sent in done:
            try:
                self._answer(provider, sent)
            except StateUnavailable as exc:
                log.warning("could not record a breaker verdict: %s", exc)

    def success(self, permit: Permit) -> None:
        """The call answered: closes a half-open breaker (probe) and resets the failure count."""
        self._end(permit, "success", "")

    def failure(self, permit: Permit, cause: str) -> None:
        """The call failed in a way that counts against the provider (timeout, connection, 5xx, 529)."""
        self._end(permit, "failure", cause)

    def release(self, permit: Permit) -> None:
        """The call ended without a verdict on the provider's health: frees the slot (and a probe's turn)."""
        self._end(permit, "release", "")

    def reclaim_gone(self, provider: str) -> int:
        """Free the in-flight slots and half-open probes held by calls whose process on this host is gone (a
        worker killed mid-call), at once instead of when their lease (the provider timeout and a margin) runs
        out; how many were freed. The breaker's state and counts are left as they are."""
        keys, host = provider_keys(provider), this_host()
        freed = 0
        for key in (keys.inflight, keys.probes):
            freed += self._redis(partial(self._free_gone, key, host))
        if freed:
            log.warning("%s: freed %d in-flight slot(s) of calls whose process is gone", provider, freed)
        return freed

    def _free_gone(self, key: str, host: str) -> int:
        members: list[bytes | str] = self.client.zrange(key, 0, -1)  # type: ignore[assignment]
        gone = [m for m in members if process_gone(m.decode() if isinstance(m, bytes) else m, host)]
        return int(self.client.zrem(key, *gone)) if gone else 0

    def disable(self, provider: str, cause: str) -> None:
        """Stop every call to ``provider`` until :meth:`enable` (credentials refused: 401/403)."""
        self._run(self._operate, provider, ["disable", cause])

    def enable(self, provider: str, cause: str = "enabled by an operator") -> None:
        self._run(self._operate, provider, ["enable", cause])

    def reset(self, provider: str, cause: str = "reset by an operator") -> None:
        """Back to closed with no failures, whatever the state (disabled included); its unusable models are
        forgotten too."""
        self._run(self._operate, provider, ["reset", cause])

    def mark_model(self, provider: str, mark: ModelMark) -> None:
        """Mark one of ``provider``'s models unusable for every worker (:mod:`routing.marks`)."""
        log.warning("ALERT: model %s of provider %s marked unusable: %s", mark.model, provider, mark.reason)
        self._redis(lambda: self.client.hset(provider_keys(provider).models, mark.model, mark.encode()))

    def heal_models(self, provider: str, model: str | None = None) -> int:
        """Forget ``provider``'s unusable-model marks (only ``model``'s when named); answers how many went."""
        key = provider_keys(provider).models
        if model is not None:
            return int(self._redis(lambda: self.client.hdel(key, model)))
        pipe = self.client.pipeline(transaction=True)
        pipe.hlen(key)
        pipe.delete(key)
        return int(self._redis(pipe.execute)[0])

    def status(self, providers: Iterable[str]) -> dict[str, BreakerStatus]:
        """Every named provider's state, read in one round trip."""
        return {name: self._status(name, out) for name, out in self._read_all(tuple(providers), whole=True)}

    def snapshot(self, providers: Iterable[str]) -> dict[str, ProviderState]:
        """The router's view (:class:`routing.route.ProviderState`) of every named provider, in one round trip.

        The router reads it before every attempt, so it is built straight from the script's answer."""
        return {name: self._provider_state(name, out) for name, out in self._read_all(tuple(providers), whole=False)}

    def _read_all(self, names: tuple[str, ...], *, whole: bool) -> list[tuple[str, dict[str, Any]]]:
        if not names:
            return []
        self.flush()
        keys = self._keys.get(names)
        if keys is None:
            if len(self._keys) >= 64:  # a few lists of providers in practice (one per group and kind)
                self._keys.clear()
            keys = self._keys[names] = [key for name in names for key in provider_keys(name).as_list()]
        try:
            # redis-py's Script runs EVALSHA, and loads the script on first use (or after SCRIPT FLUSH)
            raw = self._read(keys=keys, args=[self.policy.half_open_probes, int(whole)])
        except redis.RedisError as exc:
            raise _unavailable(exc) from None
        return list(zip(names, json.loads(raw), strict=True))

    def _provider_state(self, name: str, out: dict[str, Any]) -> ProviderState:
        limits = self.limits_for(name)
        return ProviderState(
            name=name,
            breaker=out["state"],
            probe_free=bool(out["probe_free"]),
            retry_in_s=max(float(out["retry_in_ms"]) / 1000, 0.0),
            in_flight=int(out["in_flight"]),
            max_in_flight=limits.max_in_flight,
            calls_last_minute=int(out["calls_last_minute"]),
            requests_per_minute=limits.requests_per_minute,
            unusable_models=marks.decode(out.get("marks")),
        )

    def _status(self, name: str, out: dict[str, Any]) -> BreakerStatus:
        last = out.get("last")
        return BreakerStatus(
            provider=name,
            state=out["state"],
            failures=int(out["failures"]),
            retry_in_s=max(float(out["retry_in_ms"]) / 1000, 0.0),
            probe_free=bool(out["probe_free"]),
            in_flight=int(out["in_flight"]),
            limits=self.limits_for(name),
            calls_last_minute=int(out["calls_last_minute"]),
            last_transition=self._transition(name, last) if last else None,
            last_failure=out.get("last_failure"),
            unusable_models=marks.decode(out.get("marks")),
        )

    def _redis(self, command: Callable[[], T]) -> T:
        self.flush()
        try:
            return command()
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    def _end(self, permit: Permit, verdict: str, cause: str) -> None:
        self._run(self._verdict, permit.provider, self._verdict_args(permit, verdict, cause))

    def _verdict_args(self, permit: Permit, verdict: str, cause: str) -> list[Any]:
        args = [verdict, permit.id, permit.epoch, int(permit.probe), cause]
        return [*args, self.policy.failure_threshold, self._open_ms()]

    def _open_ms(self) -> int:
        return int(self.policy.open_seconds * 1000)

    def _run(self, script: Any, provider: str, args: list[Any]) -> dict[str, Any]:
        self.flush()
        try:
            raw = script(keys=provider_keys(provider).as_list(), args=args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from None
        return self._decoded(provider, raw)

    def _unread(self) -> list[tuple[str, Sent]]:
        unread: list[tuple[str, Sent]] | None = getattr(self._sent, "unread", None)
        if unread is None:
            unread = self._sent.unread = []
        return unread

    def _send(self, script: Any, provider: str, args: list[Any]) -> Sent:
        try:
            return self._line.send(script, provider_keys(provider).as_list(), args)
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    def _answer(self, provider: str, sent: Sent) -> dict[str, Any]:
        try:
            raw = sent.answer()
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return self._decoded(provider, raw)

    def _decoded(self, provider: str, raw: Any) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(raw)
        if "transition" in out:
            self._announce(self._transition(provider, out["transition"]))
        return out

    def _transition(self, provider: str, data: dict[str, Any]) -> Transition:
        return Transition(provider, data["from"], data["to"], data["cause"], _at(float(data["at"])))

    def _announce(self, transition: Transition) -> None:
        if transition.to_state == "disabled":
            log.warning("ALERT: provider %s disabled: %s", transition.provider, transition.cause)
        else:
            t = transition
            log.info("provider %s breaker %s -> %s: %s", t.provider, t.from_state, t.to_state, t.cause)
        if self.on_transition is not None:
            self.on_transition(transition)


def _unavailable(exc: Exception) -> StateUnavailable:
    return StateUnavailable(
        f"the shared provider state (Redis) did not answer ({type(exc).__name__}: {exc}); "
        "no provider is called until it does"
    )
