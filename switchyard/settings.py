"""The one validated settings object. Built by :func:`load_settings`, never at import.

Everything Switchyard reads from the process environment is declared here, with the ``SWITCHYARD_`` prefix,
except the providers' own conventional variables (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ``OLLAMA_HOST``
and the SDK base URLs), which keep the names users already have set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchyard.alert_urls import problem, split
from switchyard.errors import ConfigError
from switchyard.private import stored_secret

# ``demo`` is `switchyard demo`'s own: its data directory (database, broker, workspace) apart from every
# other profile's; it reads the fleet file's ``development`` overlay
Profile = Literal["development", "staging", "production", "demo"]
LOCAL_PROFILES = ("development", "demo")  # one person's machine: Flower without a login, placeholder keys allowed

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FLEET_FILE = REPO_ROOT / "switchyard.toml"
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "xxx", "your-key-here", "sk-...", ""}


DEMO_APART = ("database_url", "broker_url", "state_url", "workspace")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class HealthThresholds:
    """How long a health check waits for an answer and how slow an answer may be before it counts as slow.

    The one place these numbers live: production's are below, staging's are twice as lenient (the staging guide's
    "relaxed thresholds"), development and the demo keep production's (today's behaviour)."""

    probe_timeout_s: float = 1.0  # a broker PING or a database SELECT 1 (web/health.py)
    inspect_timeout_s: float = 1.5  # Celery's inspect/ping for the live workers of each group (status, smoke)
    slow_ms: float = 100.0  # a health answer slower than this is reported slow (checklist: health check < 100 ms)

    def relaxed(self, factor: float) -> HealthThresholds:
        return HealthThresholds(self.probe_timeout_s * factor, self.inspect_timeout_s * factor, self.slow_ms * factor)


PRODUCTION_HEALTH = HealthThresholds()
HEALTH_THRESHOLDS: dict[str, HealthThresholds] = {
    "development": PRODUCTION_HEALTH,
    "demo": PRODUCTION_HEALTH,
    "staging": PRODUCTION_HEALTH.relaxed(2.0),
    "production": PRODUCTION_HEALTH,
}
# The log level when SWITCHYARD_LOG_LEVEL is unset: staging is verbose (the staging guide's "verbose logging").
DEFAULT_LOG_LEVEL = {"staging": "DEBUG"}


class Settings(BaseSettings):
    """Process settings. Ports default to loopback and can be moved so several fleets can coexist."""

    # A variable set but empty (``SWITCHYARD_HOME=``, ``ANTHROPIC_API_KEY=``) counts as unset: the default holds.
    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="ignore", frozen=True, env_ignore_empty=True)

    profile: Profile = "development"
    home: Path = Field(default_factory=lambda: Path.cwd() / ".switchyard")
    fleet_file: Path = DEFAULT_FLEET_FILE
    broker_url: str | None = None
    database_url: str | None = None
    state_url: str | None = None
    workspace: Path | None = None
    simulate: bool = False
    # production starts the simulator only when asked for by this name (SWITCHYARD_PRODUCTION_SIMULATOR=true)
    production_simulator: bool = False
    simulator_url: str | None = None
    # the agent CLIs of the ``cli`` transport: a name looked up on PATH, or a path
    claude_cli: str = "claude"
    codex_cli: str = "codex"

    host: str = "127.0.0.1"
    broker_port: int = 6399
    api_port: int = 8700
    flower_port: int = 5555
    simulator_port: int = 8790
    # unset: DEBUG in staging, INFO elsewhere (see effective_log_level)
    log_level: str | None = None
    # Seconds `up` and `demo` wait for the services they start to answer; unset, the wait adapts to the
    # machine (workers/readiness.py). `--ready-timeout` on `up`, `demo` and `restart` overrides it.
    ready_timeout: float | None = Field(default=None, gt=0)
    # Holds (routing/sizing.py): an api call's hold covers the ``hold_output_percentile`` of the output tokens of
    # the last ``hold_history`` answers of its kind on its model (the kind's whole cap while there are fewer than
    # ``hold_min_history``), read again at most every ``hold_history_ttl_s`` seconds per process
    hold_history: int = Field(default=200, ge=1, le=10_000)
    hold_min_history: int = Field(default=20, ge=1, le=10_000)
    hold_output_percentile: float = Field(default=99.0, gt=0, le=100)
    hold_history_ttl_s: float = Field(default=30.0, ge=0, le=3600)

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHYARD_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHYARD_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHYARD_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHYARD_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    ollama_host: str | None = Field(
        default=None, validation_alias=AliasChoices("SWITCHYARD_OLLAMA_HOST", "OLLAMA_HOST")
    )
    # Flower's basic auth. Unset outside development, the password is generated once and kept in
    # ``flower_password_file``; in development without them, Flower on loopback answers without a login.
    flower_user: str = "switchyard"
    flower_password: SecretStr | None = None
    # The status API's bearer tokens (`switchyard token create`): "on" or "off"; unset, on outside the local
    # profiles (development, demo), where the API answers anyone on loopback and `up` says so
    api_auth: Literal["on", "off"] | None = None

    # apprise URLs alerts go to, besides the fleet file's `[alerts] urls` (spaces or commas between them)
    alert_urls: SecretStr | None = None

    @field_validator("alert_urls")
    @classmethod
    def _alert_urls(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            urls = split(value.get_secret_value())
            problems = [why for url in urls if (why := problem(url)) is not None]
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="before")
    @classmethod
    def _demo_keeps_apart(cls, data: Any) -> Any:
        """The demo profile keeps its data apart: the user's database, broker, state Redis and workspace are
        never the demo's, whichever variables are exported."""
        if isinstance(data, dict) and data.get("profile") == "demo":
            return {k: v for k, v in data.items() if k not in DEMO_APART}
        return data

    @field_validator("state_url")
    @classmethod
    def _state_scheme(cls, value: str | None) -> str | None:
        allowed = ("redis://", "rediss://", "unix://")
        if value and not value.startswith(allowed):
            raise ValueError(f"SWITCHYARD_STATE_URL must start with one of {', '.join(allowed)}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        allowed = ("redis://", "rediss://", "valkey://", "amqp://", "pyamqp://", "unix://")
        if value and not value.startswith(allowed):
            raise ValueError(f"SWITCHYARD_BROKER_URL must start with one of {', '.join(allowed)}")
        return value

    @field_validator("flower_user")
    @classmethod
    def _flower_user_shape(cls, value: str) -> str:
        if not value or any(c in value for c in ":, "):
            raise ValueError("SWITCHYARD_FLOWER_USER must be a non-empty name without ':', ',' or spaces")
        return value

    @field_validator("flower_password")
    @classmethod
    def _flower_password_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "," in value.get_secret_value():
            # Flower reads FLOWER_BASIC_AUTH as a comma-separated list of user:password pairs.
            raise ValueError("SWITCHYARD_FLOWER_PASSWORD must not contain ','")
        return value

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.profile in LOCAL_PROFILES:
            return self
        for name in ("anthropic_api_key", "openai_api_key", "flower_password"):
            secret: SecretStr | None = getattr(self, name)
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name.upper()} is a placeholder; set a real key for profile {self.profile!r}")
        return self

    @model_validator(mode="after")
    def _profile_refusals(self) -> Settings:
        """What staging and production refuse to start with: each names the setting to fix."""
        if self.profile in LOCAL_PROFILES:
            return self
        if self.host not in LOOPBACK_HOSTS and not self.api_auth_on:
            raise ValueError(
                f"SWITCHYARD_HOST={self.host} binds beyond loopback while SWITCHYARD_API_AUTH is off; "
                "turn SWITCHYARD_API_AUTH on or set SWITCHYARD_HOST=127.0.0.1"
            )
        if self.profile != "production":
            return self
        if not self.api_auth_on:
            raise ValueError("SWITCHYARD_API_AUTH is off; the production profile requires it on (unset it or =on)")
        if self.simulate and not self.production_simulator:
            raise ValueError(
                "the simulator was asked for in production; production uses real providers unless "
                "SWITCHYARD_PRODUCTION_SIMULATOR=true names it"
            )
        return self

    @property
    def effective_log_level(self) -> str:
        return (self.log_level or DEFAULT_LOG_LEVEL.get(self.profile, "INFO")).upper()

    @property
    def health_thresholds(self) -> HealthThresholds:
        return HEALTH_THRESHOLDS[self.profile]

    @cached_property
    def fleet_profile(self) -> str:
        """The fleet file's profile overlay this profile reads (the demo reads ``development``'s)."""
        return "development" if self.profile == "demo" else self.profile

    @property
    def data_dir(self) -> Path:
        """Where this profile keeps its database, broker data, pidfiles and logs."""
        return (self.home / self.profile).resolve()

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def workspace_dir(self) -> Path:
        return (self.workspace or self.data_dir / "workspace").resolve()

    @property
    def embedded_broker(self) -> bool:
        """True when Switchyard runs its own valkey-server instead of a broker the user named."""
        return self.broker_url is None

    @property
    def secrets_dir(self) -> Path:
        """The 0700 directory of the secrets Switchyard generates for itself (files 0600)."""
        return self.data_dir / "secrets"

    @property
    def broker_password_file(self) -> Path:
        return self.secrets_dir / "broker-password"

    @property
    def flower_password_file(self) -> Path:
        return self.secrets_dir / "flower-password"

    @cached_property
    def broker_password(self) -> str:
        """The embedded broker's password: generated on first use, kept 0600 in the data directory."""
        return stored_secret(self.broker_password_file)

    @property
    def effective_broker_url(self) -> str:
        """The broker every process uses; the embedded one's URL carries its password (mask it to print)."""
        if self.broker_url:
            return self.broker_url
        return f"redis://:{self.broker_password}@{self.host}:{self.broker_port}/0"

    @cached_property
    def flower_credentials(self) -> tuple[str, str] | None:
        """Flower's basic-auth user and password; None in development when no password is set."""
        if self.flower_password is not None:
            return self.flower_user, self.flower_password.get_secret_value()
        if self.profile in LOCAL_PROFILES:
            return None
        return self.flower_user, stored_secret(self.flower_password_file)

    @property
    def api_auth_on(self) -> bool:
        """Whether the status API asks for a bearer token: SWITCHYARD_API_AUTH, else on outside local profiles."""
        if self.api_auth is not None:
            return self.api_auth == "on"
        return self.profile not in LOCAL_PROFILES

    @property
    def effective_state_url(self) -> str:
        """The Redis that holds state every worker shares (breakers, in-flight calls, request rates).

        Defaults to the broker when the broker is Redis or Valkey; a RabbitMQ fleet must name one."""
        if self.state_url:
            return self.state_url
        broker = self.effective_broker_url
        if broker.startswith(("redis://", "rediss://", "valkey://", "unix://")):
            return broker.replace("valkey://", "redis://", 1)
        raise ConfigError(
            "the broker is not Redis, so shared router state needs one: set SWITCHYARD_STATE_URL=redis://host:6379/1"
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'switchyard.db'}"

    @property
    def effective_simulator_url(self) -> str:
        return self.simulator_url or f"http://{self.host}:{self.simulator_port}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and explicit overrides), turning mistakes into ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def _problem(err: Any) -> str:
    """One validation error as a phrase: the variable and the message; a check of the whole (no field) says
    only its message, which names the settings involved."""
    if not err["loc"]:
        return str(err["msg"]).removeprefix("Value error, ")
    return f"SWITCHYARD_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
