"""The fleet file's schema: environments, groups, kinds, providers with effective-dated prices, budgets and
the retry, breaker and limit policies, as frozen pydantic models. :mod:`switchyard.fleet` loads and checks it."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard import vocabulary
from switchyard.alert_urls import problem
from switchyard.errors import ConfigError

# the fleet's words live in switchyard.vocabulary (importable without pydantic); named here too, as before
Kind = vocabulary.Kind
KINDS = vocabulary.KINDS
Scope = vocabulary.Scope
Window = vocabulary.Window
CLI_KINDS = vocabulary.CLI_KINDS

Transport = Literal["api", "cli"]
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# the database connections of one worker process (store/db.py): the engine's pool and its overflow; each
# session (thread) may hold one from the pool and, up to DB_KEPT_MAX threads, one kept for the ledger; the
# lease renewer and the outbox's sender take DB_RESERVED more. PostgreSQL allows 100 by default, 3 reserved.
DB_POOL_SIZE = 10
DB_MAX_OVERFLOW = 20
DB_KEPT_MAX = 8
DB_RESERVED = 2
POSTGRES_DEFAULT_CONNECTIONS = 97


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must be lowercase letters, digits, '-' or '_', starting with a letter")
    return value


# `switchyard smoke`'s own environment: every fleet accepts tasks for it (in a scratch workspace), no fleet file
# may declare it, and smoke removes it with its tasks when it ends.
SCRATCH_ENVIRONMENT = "smoke-scratch"


class EnvironmentsConfig(_Strict):
    names: list[str] = Field(min_length=1, max_length=64)
    stages: list[str] = Field(default_factory=lambda: ["dev", "qa", "staging"], min_length=1)
    base_port: int = Field(default=8081, ge=1024, le=65000)
    check_command: str = "true"

    @field_validator("names", "stages")
    @classmethod
    def _unique_names(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_name(value, "name")
        if len(set(values)) != len(values):
            raise ValueError(f"names must be unique, got {values}")
        if SCRATCH_ENVIRONMENT in values:
            raise ValueError(f"{SCRATCH_ENVIRONMENT!r} is reserved for `switchyard smoke`; choose another name")
        return values

    def accepts(self, environment: str) -> bool:
        """A declared environment, or smoke's scratch one."""
        return environment in self.names or environment == SCRATCH_ENVIRONMENT

    def port_for(self, environment: str) -> int:
        return self.base_port + self.names.index(environment)


class GroupConfig(_Strict):
    name: str
    queue: str
    sessions: int = Field(ge=1, le=256)
    kinds: list[Kind] = Field(min_length=1)
    ladder: list[str] = Field(min_length=1)
    models: dict[str, str] = Field(default_factory=dict)
    transports: dict[str, Transport] = Field(default_factory=dict)  # per provider; "api" when not named

    @field_validator("name", "queue")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "name")


class KindConfig(_Strict):
    max_output_tokens: int = Field(default=2048, ge=16, le=200_000)
    free_fallback: bool = True
    max_subtasks: int = Field(default=8, ge=1, le=100)
    # the PR pipeline: how often request-changes sends a pr_impl back (pr_impl), whether an approving
    # review enqueues the integration (pr_review), how long an integration's check may run (pr_integ),
    # how deep plans nest and what a failed sub-task does to the sub-tasks that depend on it (plan)
    review_rounds: int = Field(default=1, ge=0, le=10)
    auto_integrate: bool = True
    check_timeout_s: float = Field(default=900.0, gt=0, le=24 * 3600)
    max_depth: int = Field(default=1, ge=0, le=8)
    on_child_failure: Literal["skip", "fail"] = "skip"
    review_subtasks: bool = True  # plan: a sub-task's change is reviewed before the merge queue takes it


class Price(_Strict):
    """USD per million tokens from ``effective`` on."""

    effective: date
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(default=0.0, ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    prices: list[Price] = Field(min_length=1)

    def price_at(self, day: date) -> Price:
        """The price in force on ``day``: the latest one whose ``effective`` date is not after it."""
        in_force = [p for p in self.prices if p.effective <= day]
        if not in_force:
            first = min(p.effective for p in self.prices)
            raise ConfigError(f"model {self.name!r} has no price before {first}; add one effective by {day}")
        return max(in_force, key=lambda p: p.effective)


_DEFAULT_KIND = KindConfig()  # frozen, so one instance serves every kind left out of a fleet file


class ProviderConfig(_Strict):
    transports: list[Transport] = Field(min_length=1)
    default_model: str
    max_in_flight: int = Field(default=4, ge=1, le=1024)
    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    free: bool = False
    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_model_known(self) -> ProviderConfig:
        names = [m.name for m in self.models]
        if self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not among the models {names}")
        if self.free and any(p.input or p.output or p.cache_read for m in self.models for p in m.prices):
            raise ValueError("a provider marked free = true must have zero prices")
        return self

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(m.name for m in self.models)}")


class BudgetConfig(_Strict):
    scope: Scope
    target: str = "*"
    window: Window
    cap_usd: float = Field(gt=0)
    alert_usd: float | None = Field(default=None, gt=0)
    action: Literal["block", "degrade"] = "block"

    @model_validator(mode="after")
    def _alert_below_cap(self) -> BudgetConfig:
        if self.alert_usd is not None and self.alert_usd > self.cap_usd:
            raise ValueError(f"alert_usd {self.alert_usd} is above cap_usd {self.cap_usd}")
        return self


class RetryPolicy(_Strict):
    """Attempts per provider and exponential backoff with jitter; ``retry-after`` is honoured up to a ceiling."""

    attempts: int = Field(default=3, ge=1, le=20)
    initial_s: float = Field(default=1.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=30.0, ge=0)
    jitter_s: float = Field(default=1.0, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)


class BreakerPolicy(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=60.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class LimitsConfig(_Strict):
    max_text_chars: int = Field(default=20_000, ge=100)
    task_time_limit_s: int = Field(default=900, ge=10)
    visibility_timeout_s: int = Field(default=3600, ge=60)
    provider_timeout_s: float = Field(default=120.0, gt=0)
    task_deadline_s: int = Field(default=1800, ge=1)  # how long a task may wait (deferred) for a provider
    max_defer_countdown_s: int = Field(default=60, ge=1)  # longest single deferral; well under the visibility
    # a running task's lease (tasks/lease.py): renewed by its worker every lease_renew_every_s; once it has run
    # out, the detector (celery beat, every lease_check_every_s) sends the task again to its group's queue
    lease_s: float = Field(default=60.0, ge=1, le=3600)
    lease_renew_every_s: float = Field(default=15.0, gt=0, le=1800)
    lease_check_every_s: float = Field(default=15.0, gt=0, le=3600)
    # storing a paid answer while the database is away: backoff from the first to the longest wait, tried
    # until the task's time limit is near (routing/parked.py)
    store_retry_initial_s: float = Field(default=0.25, gt=0)
    store_retry_max_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _visibility_after_time_limit(self) -> LimitsConfig:
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must be longer than task_time_limit_s "
                f"({self.task_time_limit_s}), or the broker redelivers tasks that are still running"
            )
        if self.max_defer_countdown_s * 2 > self.visibility_timeout_s:
            raise ValueError(
                f"max_defer_countdown_s ({self.max_defer_countdown_s}) must be well under visibility_timeout_s "
                f"({self.visibility_timeout_s}); at most half of it"
            )
        return self._check_lease()

    def _check_lease(self) -> LimitsConfig:
        if self.lease_renew_every_s * 2 > self.lease_s:
            raise ValueError(
                f"lease_renew_every_s ({self.lease_renew_every_s}) must be at most half of lease_s ({self.lease_s}), "
                "or one late renewal lets a running task's lease run out"
            )
        return self


class OutboxPolicy(_Strict):
    """How owed messages and follow-ups are sent (``[outbox]``; see :mod:`tasks.sender`)."""

    every_s: float = Field(default=15.0, gt=0)  # how often celery beat runs the sender
    grace_s: float = Field(default=20.0, ge=0)  # a fresh row is left this long to the process that wrote it
    retry_initial_s: float = Field(default=2.0, gt=0)  # wait after a failed send, doubling per failure
    retry_max_s: float = Field(default=60.0, gt=0)
    publish_retries: int = Field(default=2, ge=0, le=10)  # kombu reconnects (a stale pooled connection) per send
    lost_after_s: float = Field(default=30.0, gt=0)  # a queued task on no queue this long after its send: re-sent
    batch: int = Field(default=200, ge=1, le=10_000)  # rows per sender run

    @model_validator(mode="after")
    def _lost_after_a_sender_run(self) -> OutboxPolicy:
        if self.lost_after_s <= self.every_s:
            raise ValueError(f"lost_after_s ({self.lost_after_s}) must be longer than every_s ({self.every_s})")
        return self


class AlertsPolicy(_Strict):
    """Where alerts go and how they are delivered (``[alerts]``; see :mod:`alerts.sender`). ``urls`` are apprise
    URLs (``json://host/path``, ``slack://…``); ``SWITCHYARD_ALERT_URLS`` adds more."""

    urls: list[str] = Field(default_factory=list)
    every_s: float = Field(default=15.0, gt=0)  # how often celery beat runs the alert sender
    timeout_s: float = Field(default=10.0, gt=0, le=300)  # per receiver, connect and read
    retry_initial_s: float = Field(default=5.0, gt=0)  # wait after a failed delivery, doubling per failure
    retry_max_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=20, ge=1, le=1000)  # then the alert is given up (state ``failed``)
    daily_report: bool = True  # yesterday's spend by provider and group, sent once a day

    @field_validator("urls")
    @classmethod
    def _apprise_can_send(cls, urls: list[str]) -> list[str]:
        problems = [f"urls[{i}]: {why}" for i, url in enumerate(urls) if (why := problem(url)) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return urls


class ReportsConfig(_Strict):
    """``[reports]``: what ``switchyard report`` compares spend with and how it projects it (:mod:`reports`)."""

    # the baseline every attempt's usage is repriced at: "PROVIDER" (its priciest model) or "PROVIDER:MODEL"
    baseline: str = "claude:claude-opus-4-5"
    trailing_hours: float = Field(default=24.0, gt=0, le=24 * 31)  # the spend rate behind the projections


class SimulatorProviderConfig(_Strict):
    latency_ms: int = Field(default=40, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)


class Fleet(_Strict):
    profile: str = "development"
    source: str = "switchyard.toml"
    environments: EnvironmentsConfig
    groups: list[GroupConfig] = Field(min_length=1)
    kinds: dict[Kind, KindConfig] = Field(default_factory=dict)
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    limits: LimitsConfig = LimitsConfig()
    outbox: OutboxPolicy = OutboxPolicy()
    alerts: AlertsPolicy = AlertsPolicy()
    reports: ReportsConfig = ReportsConfig()
    simulator: dict[str, SimulatorProviderConfig] = Field(default_factory=dict)
    features: dict[str, bool] = Field(default_factory=dict)

    def group_for_kind(self, kind: str) -> GroupConfig:
        for group in self.groups:
            if kind in group.kinds:
                return group
        raise ConfigError(f"no group runs kind {kind!r}")

    def group(self, name: str) -> GroupConfig:
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(f"unknown group {name!r}; known: {', '.join(g.name for g in self.groups)}")

    def kind(self, kind: str) -> KindConfig:
        """The kind's settings; the defaults for a kind the fleet file does not configure."""
        return self.kinds.get(cast("Kind", kind), _DEFAULT_KIND)  # any name: an unknown one gets the defaults

    def model_for(self, group: GroupConfig, provider: str) -> str:
        return group.models.get(provider) or self.providers[provider].default_model

    def baseline_model(self, spec: str) -> tuple[str, str]:
        """``PROVIDER`` or ``PROVIDER:MODEL`` as (provider, model); a bare provider means its priciest model (by
        the output, then input, price of each model's latest price). ValueError names the value and the choices."""
        provider, _, model = spec.partition(":")
        if provider not in self.providers:
            known = sorted(self.providers)
            raise ValueError(f"unknown baseline provider {provider!r} in {spec!r}; choose one of {known}")
        config = self.providers[provider]
        names = [m.name for m in config.models]
        if not model:
            latest = {m.name: max(m.prices, key=lambda p: p.effective) for m in config.models}
            return provider, max(names, key=lambda name: (latest[name].output, latest[name].input))
        if model not in names:
            raise ValueError(f"unknown baseline model {model!r} of {provider!r}; choose one of {names}")
        return provider, model

    def price(self, provider: str, model: str, day: date) -> tuple[str, Price]:
        """The price in force and its version label, e.g. ``claude/claude-sonnet-4-5@2025-09-29``."""
        price = self.providers[provider].model(model).price_at(day)
        return f"{provider}/{model}@{price.effective.isoformat()}", price
