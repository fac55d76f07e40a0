"""The budget ledger: hold the most an attempt may cost against every budget that applies, atomically, then
settle the hold to the real cost or release it.

    hold     one transaction: the spend row (held) and every applicable counter raised by the amount, each
             only while it stays within its cap; any counter at its cap refuses the whole hold
             (:class:`BudgetRefused`) and nothing changes
    settle   the real cost replaces the held amount on the same counters (the windows the hold was made
             in, even after they rolled over); a settle after a release still records the real cost
    release  the hold goes back (the call failed without charge, or never happened)
    sweep    ends holds whose worker died (still held after their task ended or its lease ran out; a hold
             of a task never leased, older than a limit) as their attempt says: settled at the stored cost,
             closed as unknown cost when the call was left open, else released
    close_open_call
             a call its worker left open (it died during the call, or while the answer waited for the
             database): the provider may have charged, so the hold is settled at the held amount, flagged
             ``unknown cost`` (:data:`store.costs.UNKNOWN_COST`); never released to $0

All of them are idempotent on (task id, attempt): a second hold returns the first without counting again
(a released hold is held anew), a second settle or release changes nothing. The budgets in force are read
on every call (the fleet file overlaid by ``switchyard budget set``), so an override applies on the next hold.

The ledger fails closed: when the database cannot be read or written, :class:`LedgerUnavailable` is raised
and the router refuses; nothing is ever allowed because the ledger could not say. Reaching a budget's alert
line records one alert per budget and window and logs one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from routing.budget_alerts import budget_alert, cap_alert, over_hold_alert
from store import alerts as alert_rows
from store import budgets as sql
from store.budgets import Ending, OverrideRow, SpendRow
from store.costs import UNKNOWN_COST
from store.db import drop_held, get_engine, get_read_engine, held_connection
from store.migrate import masked
from switchyard import traces
from switchyard.budgets import (
    Alert,
    Budget,
    BudgetState,
    CounterKey,
    applicable,
    as_utc,
    check_override,
    counter_keys,
    effective,
    state,
    window_bounds,
)
from switchyard.errors import BudgetRefused, InputError, LedgerUnavailable, NotFound
from switchyard.fleet_models import Fleet

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], datetime]
Crossing = tuple[CounterKey, Budget, int]
Applicable = dict[tuple[str, str, str], Budget]
PLACES = 256  # (overrides, place, hour) -> counters, remembered; forgotten all at once past it


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Hold:
    """The money held for one attempt. ``reused``: (task, attempt) had this hold already, nothing was counted
    now; ``state`` ``settled`` means the attempt was charged already, so it must not call the provider again."""

    task_id: str
    attempt: int
    provider: str
    model: str
    held_micros: int
    state: str
    budgets: tuple[str, ...]
    reused: bool = False


@dataclass(frozen=True)
class Closed:
    """How a call left open ended in the ledger: ``charged_micros`` at ``price_version``; ``unknown`` when it
    was charged at the amount held for it because nobody knows what the provider charged; ``held`` False when
    there was no hold still held (none was made, or the dead worker had settled or released it already)."""

    charged_micros: int
    price_version: str | None
    unknown: bool
    held: bool


def closing(row: SpendRow | None) -> Closed:
    """What closing an open call does to its hold (pure): a hold still held is charged in full, flagged."""
    if row is None:
        return Closed(0, None, unknown=False, held=False)
    if row.state == "held":
        return Closed(row.held_micros, UNKNOWN_COST, unknown=True, held=True)
    charged = row.charged_micros if row.state == "settled" else 0
    return Closed(charged, row.price_version, unknown=row.price_version == UNKNOWN_COST, held=False)


def stale_ending(call: tuple[str, bool, int, str | None] | None) -> str:
    """How the sweep ends a hold its worker left (pure), from its attempt's (status, answer stored, cost,
    price version): ``settle`` at the stored cost when the answer was stored, ``unknown`` (charged at the hold,
    flagged) when the call was left open, ``release`` when no call began or it ended without an answer."""
    if call is None:
        return "release"
    status, answered, _, _ = call
    if answered:
        return "settle"
    return "unknown" if status == "running" else "release"


@dataclass(frozen=True)
class _Place:
    """The scopes a hold counts in (besides ``all``)."""

    provider: str
    group: str
    environment: str
    stage: str

    def columns(self) -> dict[str, str]:
        return {"provider": self.provider, "group": self.group, "environment": self.environment, "stage": self.stage}


@dataclass
class _Counters:
    """The counters a hold from one place raises in one hour, worked out once (see :meth:`Ledger._counters`).

    ``seen``: every one of them existed when a hold that raised them committed. Counters are never deleted, so
    later holds do not look them up again; a hold that finds one missing after all (its database was made
    anew under the same URL) forgets what it saw and holds again."""

    budgets: dict[CounterKey, Budget]  # in lock order
    caps: dict[CounterKey, int]
    as_json: list[list[str]]  # as the spend row keeps them
    labels: tuple[str, ...]
    seen: bool = False


class _CounterGone(Exception):
    """A counter remembered as existing is not in the database: the hold is rolled back and made again."""


def _hold_of(row: SpendRow, task_id: str, attempt: int) -> Hold:
    labels = tuple(CounterKey.from_json(key).label for key in row.budget_keys or [])
    return Hold(task_id, attempt, row.provider, row.model, row.held_micros, row.state, labels, reused=True)


class Ledger:
    """The ledger of one database for one fleet. Cheap to build: engines are per process (:mod:`store.db`)."""

    def __init__(self, database_url: str, fleet: Fleet, *, now: Clock = utcnow) -> None:
        self.database_url = database_url
        self.fleet = fleet
        self.now = now
        # The overrides are read on every hold (so `budget set` applies to the next one); the counters they
        # make a place count against are worked out once per distinct set of overrides and hour.
        self._places: dict[tuple[tuple[OverrideRow, ...], _Place, datetime], _Counters] = {}

    # --- reading ---------------------------------------------------------------------------------------

    def effective_budgets(self) -> list[Budget]:
        with self._transaction("read the budgets", read=True) as conn:
            return self._in_force(conn)

    def budgets(
        self, *, environment: str, stage: str, group: str, provider: str | None = None, now: datetime | None = None
    ) -> list[BudgetState]:
        """The budgets a call from this place counts against, with what their current windows hold.

        ``provider`` None gives the provider-scoped budgets of every provider of the fleet at once (each state's
        ``target`` names its provider), so a router can read one snapshot before choosing among them."""
        now = now or self.now()
        providers = (provider,) if provider is not None else tuple(self.fleet.providers)
        with self._transaction("read the budgets", read=True) as conn:
            found = applicable(
                self._in_force(conn), environment=environment, stage=stage, group=group, providers=providers
            )
            keys = counter_keys(found, now)
            used = sql.used(conn, keys)
        return [state(key, budget, used[key], now) for key, budget in keys.items()]

    def alerts(self, *, since: datetime | None = None) -> list[Alert]:
        """The alerts recorded, oldest first (``since``: only those recorded from then on)."""
        with self._transaction("read the alerts", read=True) as conn:
            return sql.alerts(conn, since=since)

    # --- holding and settling --------------------------------------------------------------------------

    def hold(
        self,
        *,
        task_id: str,
        attempt: int,
        provider: str,
        model: str,
        group: str,
        environment: str,
        stage: str,
        micros: int,
        also: Callable[[Connection], None] | None = None,
    ) -> Hold:
        """Hold ``micros`` against every budget that applies, or raise :class:`BudgetRefused` (nothing held).
        ``also``: more writes made in the hold's transaction once it is held (the attempt's row), so both or
        neither are stored."""
        if micros < 0:
            raise InputError(f"a hold is zero or more micro-dollars, not {micros}")
        place = _Place(provider, group, environment, stage)
        with traces.span("hold", provider=provider, model=model, attempt=attempt, micros=micros):
            try:
                return self._again_if_dropped(lambda: self._hold(task_id, attempt, model, place, micros, also))
            except _CounterGone:  # a counter this ledger saw is not there (its database was made anew): look again
                self._places.clear()
                return self._hold(task_id, attempt, model, place, micros, also)

    def _hold(  # noqa: PLR0917 -- private: the hold and its retry pass the same six
        self,
        task_id: str,
        attempt: int,
        model: str,
        place: _Place,
        micros: int,
        also: Callable[[Connection], None] | None,
    ) -> Hold:
        now = self.now()
        with self._transaction("hold", task_id=task_id) as conn:
            counters = self._counters(conn, place, now)
            if not counters.seen:  # before the spend row: a new counter starts from the rows before it
                sql.ensure_counters(conn, counters.budgets)
            row = {"task_id": task_id, "attempt": attempt, "model": model, **place.columns(), "held_micros": micros}
            row.update(budget_keys=counters.as_json, created_at=now, settled_at=None)
            reused = self._insert_or_reuse(conn, row)
            if reused is not None:
                if also is not None and reused.state == "held":
                    also(conn)
                return reused
            crossed = self._raise_counters(conn, counters, micros, now)
            recorded = self._record_alerts(conn, crossed, task_id, now)
            if also is not None:
                also(conn)
        counters.seen = True
        self._warn(recorded)
        return Hold(task_id, attempt, place.provider, model, micros, "held", counters.labels)

    def settle(
        self,
        *,
        task_id: str,
        attempt: int,
        charged_micros: int,
        price_version: str | None,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Replace the held amount by the real cost on the counters the hold raised. A second call does nothing.
        ``also``: writes made first in the settle's transaction (the answer that was charged), both or neither."""
        if charged_micros < 0:
            raise InputError(f"a charge is zero or more micro-dollars, not {charged_micros}")
        with traces.span("settle", attempt=attempt, charged_micros=charged_micros, price_version=price_version):
            self._again_if_dropped(lambda: self._settle(task_id, attempt, charged_micros, price_version, also))

    def _settle(
        self,
        task_id: str,
        attempt: int,
        charged_micros: int,
        price_version: str | None,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        now = self.now()
        settled = Ending("settled", charged_micros, now, price_version)
        with self._transaction("settle", task_id=task_id) as conn:
            if also is not None:
                also(conn)
            row = sql.end_held(conn, task_id=task_id, attempt=attempt, ending=settled)
            held, before = (0, 0) if row is None else (row.held_micros, 0)
            if row is None:
                row, before = self._settle_unheld(conn, task_id, attempt, settled)
            if row is None:  # settled already
                return
            after = self._move(row, conn, used_delta=charged_micros - held - before, held_delta=-held)
            crossed = self._crossed_by_charge(conn, row, after) if charged_micros > held else []
            recorded = self._record_alerts(conn, crossed, task_id, now)
            over = held > 0 and charged_micros > held and price_version != UNKNOWN_COST
            if over:  # in the settle's transaction: recorded with the charge, or neither
                alert = over_hold_alert(task_id, attempt, row, charged_micros)
                alert_rows.record(conn, **alert, now=now)
        self._warn(recorded)
        if over:
            log.error(
                "task %s attempt %s on %s/%s charged $%.6f above its hold of $%.6f: the hold must cover the call",
                task_id,
                attempt,
                row.provider,
                row.model,
                charged_micros / 1e6,
                held / 1e6,
            )

    def close_open_call(self, *, task_id: str, attempt: int) -> Closed:
        """Settle the hold of a call whose worker died before its answer was stored at the amount held
        (:func:`closing`). Idempotent: a second close finds it settled and says the same."""
        closed = closing(self._again_if_dropped(lambda: self._spend_row(task_id, attempt)))
        if closed.held:
            self.settle(
                task_id=task_id, attempt=attempt, charged_micros=closed.charged_micros, price_version=UNKNOWN_COST
            )
            log.warning(
                "task %s attempt %s: a call left open was charged at its hold ($%.6f): its real cost is unknown",
                task_id,
                attempt,
                closed.charged_micros / 1e6,
            )
        return closed

    def _spend_row(self, task_id: str, attempt: int) -> SpendRow | None:
        with self._transaction("read the hold", task_id=task_id) as conn:
            return sql.locked_spend(conn, task_id=task_id, attempt=attempt)

    def release(self, *, task_id: str, attempt: int, reason: str) -> bool:
        """Give the hold back (charged 0). False when there was no hold still held (nothing changed)."""
        with traces.span("release", attempt=attempt, reason=reason):
            return self._again_if_dropped(lambda: self._release(task_id, attempt, reason))

    def _release(self, task_id: str, attempt: int, reason: str) -> bool:
        released = Ending("released", 0, self.now())
        with self._transaction("release", task_id=task_id) as conn:
            row = sql.end_held(conn, task_id=task_id, attempt=attempt, ending=released)
            if row is None:
                return False
            self._move(row, conn, used_delta=-row.held_micros, held_delta=-row.held_micros)
        log.info("released the hold of task %s attempt %s: %s", task_id, attempt, reason)
        return True

    def sweep(self, *, older_than: timedelta) -> int:
        """End holds still held whose task ended or whose task's lease ran out (its worker died) -- of a task that
        never had a lease, older than ``older_than`` -- as their attempt says (:func:`stale_ending`); how many."""
        now = self.now()
        with self._transaction("find stale holds") as conn:
            stale = sql.stale_holds(conn, created_before=now - older_than, now=now)
            calls = sql.calls_of(conn, stale)
        reason = "swept: its task ended, or its worker died (the task's lease ran out)"
        return sum(self._end_stale(task_id, number, calls.get((task_id, number)), reason) for task_id, number in stale)

    def _end_stale(self, task_id: str, attempt: int, call: tuple[str, bool, int, str | None] | None, why: str) -> bool:
        ending = stale_ending(call)
        if ending == "unknown":
            return self.close_open_call(task_id=task_id, attempt=attempt).held
        if ending == "settle" and call is not None:
            self.settle(task_id=task_id, attempt=attempt, charged_micros=call[2], price_version=call[3])
            return True
        return self.release(task_id=task_id, attempt=attempt, reason=why)

    # --- operators' overrides --------------------------------------------------------------------------

    def set_budget(
        self,
        *,
        scope: str,
        window: str,
        cap_usd: float,
        target: str = "*",
        alert_usd: float | None = None,
        action: str | None = None,
    ) -> Budget:
        """Add or replace the budget (scope, target, window), in force from the next hold. An alert or action
        left out keeps the current budget's (an alert only while it is still at or under the new cap)."""
        checked = check_override(
            self.fleet,
            scope=scope,
            target=target,
            window=window,
            cap_usd=cap_usd,
            alert_usd=alert_usd,
            action=action or "block",
        )
        with self._transaction("save the budget") as conn:
            current = next((b for b in self._in_force(conn) if b.key == checked.key), None)
            if current is not None and alert_usd is None and (current.alert_micros or 0) <= checked.cap_micros:
                checked = replace(checked, alert_micros=current.alert_micros)
            if current is not None and action is None:
                checked = replace(checked, action=current.action)
            sql.upsert_override(conn, budget=checked, now=self.now())
        return checked

    # --- inside a transaction --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, doing: str, *, task_id: str | None = None, read: bool = False) -> Iterator[Connection]:
        """A Core connection in one transaction (on SQLite from ``BEGIN IMMEDIATE``, see :mod:`store.db`): the
        connection this thread keeps for the ledger (one from the pool when too many threads keep one). A kept
        connection that failed is dropped for a new one. ``read``: a read-only transaction, which on SQLite
        takes no write lock (:func:`store.db.get_read_engine`)."""
        kept = None
        try:
            if read:
                with get_read_engine(self.database_url).connect() as conn, conn.begin() as txn:
                    yield conn
                    txn.rollback()
                return
            kept = held_connection(self.database_url)
            if kept is None:
                with get_engine(self.database_url).begin() as conn:
                    yield conn
            else:
                with kept.begin():
                    yield kept
        except IntegrityError as exc:  # the spend row names a task that is not there
            raise NotFound(f"cannot {doing} for task {task_id!r}: no such task") from exc
        except SQLAlchemyError as exc:
            if kept is not None:
                drop_held(self.database_url)
            raise LedgerUnavailable(
                f"the budget ledger ({masked(self.database_url)}) could not {doing}: {type(exc).__name__}; "
                "nothing is spent until it answers"
            ) from exc

    def _again_if_dropped(self, fn: Callable[[], T]) -> T:
        """``fn()``, once more when the kept connection turned out dead (the database restarted since the last
        transaction): holds, settles and releases are idempotent on (task, attempt), so a second run is safe."""
        try:
            return fn()
        except LedgerUnavailable as exc:
            if isinstance(exc.__cause__, DBAPIError) and exc.__cause__.connection_invalidated:
                return fn()
            raise

    def _in_force(self, conn: Connection) -> list[Budget]:
        return effective(self.fleet.budgets, sql.overrides(conn))

    def _applicable(self, conn: Connection, place: _Place) -> Applicable:
        """The budgets in force now (overrides read in this transaction) that count a call from ``place``."""
        return self._applicable_with(sql.override_rows(conn), place)

    def _applicable_with(self, overrides: tuple[OverrideRow, ...], place: _Place) -> Applicable:
        budgets = effective(self.fleet.budgets, sql.budgets_of(overrides))
        return applicable(
            budgets, environment=place.environment, stage=place.stage, group=place.group, providers=[place.provider]
        )

    def _counters(self, conn: Connection, place: _Place, now: datetime) -> _Counters:
        """The counters a hold from ``place`` raises at ``now`` (overrides read in this transaction). Worked out
        once per set of overrides, place and UTC hour: every window (hour, day, month) stays the same within an
        hour."""
        memo = (sql.override_rows(conn), place, window_bounds("hour", now)[0])
        found = self._places.get(memo)
        if found is None:
            if len(self._places) >= PLACES:
                self._places.clear()
            keys = counter_keys(self._applicable_with(memo[0], place), now)
            caps = {key: budget.cap_micros for key, budget in keys.items()}
            labels = tuple(key.label for key in keys)
            found = self._places[memo] = _Counters(keys, caps, [key.to_json() for key in keys], labels)
        return found

    def _insert_or_reuse(self, conn: Connection, row: dict[str, Any]) -> Hold | None:
        """Insert the hold's spend row: None when it is a new (or renewed) hold, the hold already there if not."""
        if sql.insert_hold(conn, row=row):
            return None
        task_id, attempt = row["task_id"], row["attempt"]
        existing = sql.locked_spend(conn, task_id=task_id, attempt=attempt)  # the twin that committed first
        if existing is None:
            raise NotFound(f"the hold of task {task_id!r} attempt {attempt} vanished while it was made; hold again")
        if existing.state != "released":
            return _hold_of(existing, task_id, attempt)
        sql.set_spend(conn, existing.id, **row, state="held", charged_micros=0, price_version=None)
        return None

    def _settle_unheld(
        self, conn: Connection, task_id: str, attempt: int, settled: Ending
    ) -> tuple[SpendRow | None, int]:
        """Settle a hold that is not held any more, and what was charged for it before: (None, 0) when it was
        settled already; a released one records the real cost (nothing is held to give back); one charged as
        unknown cost (the sweep found its call open) takes the real cost when it is known after all (the
        answer waited in the state Redis), the counters moved by the difference."""
        row = sql.locked_spend(conn, task_id=task_id, attempt=attempt)
        if row is None:
            raise NotFound(f"task {task_id!r} attempt {attempt} has no hold to settle; hold before calling")
        corrects = row.price_version == UNKNOWN_COST and settled.price_version != UNKNOWN_COST
        if row.state == "settled" and not corrects:
            return None, 0
        values = {"charged_micros": settled.charged_micros, "price_version": settled.price_version}
        sql.set_spend(conn, row.id, state="settled", settled_at=settled.at, **values)
        return row, row.charged_micros if corrects else 0

    def _raise_counters(self, conn: Connection, counters: _Counters, micros: int, now: datetime) -> list[Crossing]:
        if micros == 0:  # a free call spends nothing: it passes even a budget that is already full
            return []
        after = sql.add_within_caps(conn, counters.caps, micros=micros)
        if len(after) < len(counters.caps):  # the first one (in lock order) that refused
            key = next(key for key in counters.caps if key not in after)
            raise self._refusal(conn, key, counters.budgets[key], micros, now)
        return [(key, budget, after[key]) for key, budget in counters.budgets.items()]

    def _refusal(self, conn: Connection, key: CounterKey, budget: Budget, micros: int, now: datetime) -> BudgetRefused:
        used = sql.counter(conn, key)
        if used is None:
            raise _CounterGone(key.label)
        return BudgetRefused(
            budget=key.label,
            cap_micros=budget.cap_micros,
            used_micros=used,
            amount_micros=micros,
            action=budget.action,
            window_ends_in_s=max(0.0, (window_bounds(key.window, now)[1] - as_utc(now)).total_seconds()),
        )

    def _move(self, row: SpendRow, conn: Connection, *, used_delta: int, held_delta: int) -> dict[CounterKey, int]:
        keys = [CounterKey.from_json(key) for key in row.budget_keys or []]
        return sql.move_counters(conn, keys, used_delta=used_delta, held_delta=held_delta)

    def _crossed_by_charge(self, conn: Connection, row: SpendRow, after: dict[CounterKey, int]) -> list[Crossing]:
        """A charge above its hold can reach an alert line too; the budgets now in force say where it is."""
        in_force = self._applicable(conn, _Place(row.provider, row.group, row.environment, row.stage))
        found = [(key, in_force.get((key.scope, key.target, key.window)), used) for key, used in after.items()]
        return [(key, budget, used) for key, budget, used in found if budget is not None]

    def _record_alerts(self, conn: Connection, crossed: list[Crossing], task_id: str, now: datetime) -> list[Crossing]:
        """Alerts for the counters at or past their alert line; only those recorded now (once per window). Each
        is also an alert row to deliver (:mod:`store.alerts`), in the same transaction."""
        recorded = [
            (key, budget, used)
            for key, budget, used in crossed
            if budget.alert_micros is not None
            and used >= budget.alert_micros
            and sql.record_alert(conn, key, budget=budget, used_micros=used, task_id=task_id, now=now)
        ]
        for key, budget, used in recorded:
            alert_rows.record(conn, **budget_alert(key, budget, used, task_id), now=now)
        return recorded

    def record_caps(self, capped: list[BudgetState], *, provider: str, now: datetime | None = None) -> int:
        """A budget's cap blocked (or degraded) ``provider``: one alert per budget and window; how many new."""
        now = now or self.now()
        with self._transaction("record a budget cap alert") as conn:
            return sum(alert_rows.record(conn, **cap_alert(state, provider, now), now=now) for state in capped)

    def _warn(self, recorded: list[Crossing]) -> None:
        for key, budget, used in recorded:
            log.warning(
                "budget %s reached its alert line: $%.6f used of $%.6f (alert at $%.6f) in the window from %s",
                key.label,
                used / 1e6,
                budget.cap_micros / 1e6,
                (budget.alert_micros or 0) / 1e6,
                key.window_start.isoformat(),
            )
