"""``switchyard config show``: the effective settings, each with where its value came from, secrets masked.

Sources are derived, not guessed: the values pydantic-settings read from the environment are the ones its own
:class:`~pydantic_settings.EnvSettingsSource` finds for :class:`Settings` (same prefix, aliases and
empty-means-unset rule); a value passed by a command option is an override; the rest is a default (of the
profile, where the profile decides it). Derived values say what they derive from: the generated passwords
are read from their files in the data directory (``secrets file``), alert URLs and budgets from the fleet file.
Showing the settings writes nothing: a password not generated yet is said to be made by the first ``up`` (which
prints Flower's the one time it makes it), not generated here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import EnvSettingsSource

from switchyard.fleet import Fleet
from switchyard.logs import MASK, mask
from switchyard.settings import DEFAULT_LOG_LEVEL, LOCAL_PROFILES, Settings

SECRET_WORDS = ("key", "password", "token", "secret", "alert_url")


@dataclass(frozen=True)
class Entry:
    name: str
    value: str
    source: str

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def env_names(name: str) -> list[str]:
    """The variables that can set field ``name``: its aliases, else ``SWITCHYARD_<NAME>``."""
    alias = Settings.model_fields[name].validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c) for c in choices]
    return [f"SWITCHYARD_{name.upper()}"]


def shown(name: str, value: Any) -> str:
    """A value as it may be printed: secrets masked, URLs without passwords or webhook tokens."""
    if value is None:
        return "-"
    if isinstance(value, SecretStr):
        return f"{MASK} (set)"
    text = str(value)
    if any(word in name.lower() for word in SECRET_WORDS):
        return f"{MASK} (set)" if text else "-"
    return mask(text)


def _variable_set(name: str, environ: Mapping[str, str]) -> str | None:
    """Which of the field's variables holds its value (first of its aliases that is set and non-empty)."""
    lowered = {k.lower(): k for k, v in environ.items() if v != ""}
    for candidate in env_names(name):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def entries(settings: Settings, fleet: Fleet | None, *, overrides: Mapping[str, object] | None = None) -> list[Entry]:
    """Every setting of :class:`Settings` and the derived values, in declaration order, with their source."""
    from_env = EnvSettingsSource(Settings)()  # what pydantic-settings itself read from the environment
    overrides = overrides or {}
    rows: list[Entry] = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in overrides:
            source = "override (command option)"
        elif name in from_env or any(alias.lower() in {k.lower() for k in from_env} for alias in env_names(name)):
            source = f"environment variable {_variable_set(name, os.environ) or env_names(name)[0]}"
        else:
            source = "default"
        rows.append(Entry(name, shown(name, value), source))
    rows += derived(settings, {r.name: r.source for r in rows}, fleet)
    return rows


def derived(settings: Settings, sources: Mapping[str, str], fleet: Fleet | None) -> list[Entry]:
    """The values the processes use, worked out from the settings, the profile, the secrets files and the fleet."""
    s = settings
    profile_default = f"default of profile {s.profile!r}"
    rows = [
        Entry(
            "effective_log_level",
            s.effective_log_level,
            sources["log_level"] if s.log_level else (profile_default if s.profile in DEFAULT_LOG_LEVEL else "default"),
        ),
        Entry("api_auth_on", str(s.api_auth_on).lower(),
              sources["api_auth"] if s.api_auth is not None else profile_default),
        Entry("data_dir", str(s.data_dir), f"{sources['home']} (home) + profile"),
        Entry("effective_database_url", mask(s.effective_database_url), sources["database_url"]
              if s.database_url else "default: SQLite in the data directory"),
    ]  # fmt: skip
    if s.embedded_broker:
        # the URL's password masked without reading it: reading would generate it before `up` does
        url = f"redis://:{MASK}@{s.host}:{s.broker_port}/0"
        source = secret_source(s.broker_password_file)
        broker_source = "embedded broker; password " + ("from " if source.startswith("secrets file") else "") + source
        rows.append(Entry("effective_broker_url", url, broker_source))
    else:
        rows.append(Entry("effective_broker_url", mask(s.effective_broker_url), sources["broker_url"]))
    if s.flower_password is not None:
        rows.append(Entry("flower_login", f"{s.flower_user} / {MASK}", sources["flower_password"]))
    elif s.profile in LOCAL_PROFILES:
        rows.append(Entry("flower_login", "none (local profile, no password set)", profile_default))
    else:
        rows.append(Entry("flower_login", f"{s.flower_user} / {MASK}", secret_source(s.flower_password_file)))
    thresholds = s.health_thresholds
    rows.append(
        Entry(
            "health_thresholds",
            f"probe {thresholds.probe_timeout_s:g}s, inspect {thresholds.inspect_timeout_s:g}s, "
            f"slow {thresholds.slow_ms:g}ms",
            profile_default + (" (twice production's)" if s.profile == "staging" else ""),
        )
    )
    rows.append(Entry("placeholder_keys", "allowed" if s.profile in LOCAL_PROFILES else "refused", profile_default))
    if fleet is not None:
        where = f"fleet file {fleet.source}"
        urls = list(fleet.alerts.urls)
        rows.append(Entry("alerts.urls", ", ".join(mask(u) for u in urls) or "-", where))
        caps = ", ".join(f"{b.scope} {b.target} {b.window} ${b.cap_usd:g}" for b in fleet.budgets)
        rows.append(Entry("budgets", caps or "-", where))
        rows.append(Entry("groups", ", ".join(g.name for g in fleet.groups), where))
    return rows


def secret_source(path: Path) -> str:
    """Where a generated password comes from: its secrets file, or the first ``up``, which makes that file."""
    if path.exists():
        return f"secrets file {path}"
    return f"generated by the first `switchyard up` into secrets file {path}"
