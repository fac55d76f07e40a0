"""Which providers can be used with these settings, and the client for each.

A provider is usable when its key (Claude, Codex) or host (Ollama) is set, or when the simulator is on
(``SWITCHYARD_SIMULATE``): then a provider without a key or host talks to the simulator with the dummy key
``simulated``. A provider with a real key never silently goes to the simulator.

The ``cli`` transport (Claude Code, the Codex CLI) uses the same endpoint and key, and is available where
its executable (``SWITCHYARD_CLAUDE_CLI``, ``SWITCHYARD_CODEX_CLI``) resolves on this host's PATH or in the
project's own install (``.agent-clis/``, by ``make agent-clis``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from providers.base import Provider
from providers.claude_cli import ClaudeCliProvider
from providers.codex_cli import CodexCliProvider
from switchyard.errors import ConfigError, ProviderDown
from switchyard.fleet import Fleet, Price
from switchyard.settings import REPO_ROOT, Settings

SIMULATED_KEY = "simulated"
KNOWN = ("claude", "codex", "ollama")
SETTING_NAMES = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY", "ollama": "OLLAMA_HOST"}
CLI_SETTINGS = {"claude": "claude_cli", "codex": "codex_cli"}  # providers with an agent CLI
PROJECT_CLIS = REPO_ROOT / ".agent-clis" / "node_modules" / ".bin"  # where `make agent-clis` installs them
WHICH_TTL_S = 30.0  # a CLI installed (or removed) while workers run is noticed within this
_WHICH_CACHE: dict[tuple[str, str, str], tuple[float, bool]] = {}  # (command, PATH, install) -> (at, found)


@dataclass(frozen=True)
class Endpoint:
    """Where a provider's client points; ``secret`` is the key (or None for Ollama)."""

    base_url: str | None
    secret: str | None
    simulated: bool


def _real_endpoint(name: str, settings: Settings) -> Endpoint | None:
    if name == "claude" and settings.anthropic_api_key is not None:
        return Endpoint(settings.anthropic_base_url, settings.anthropic_api_key.get_secret_value(), False)
    if name == "codex" and settings.openai_api_key is not None:
        return Endpoint(settings.openai_base_url, settings.openai_api_key.get_secret_value(), False)
    if name == "ollama" and settings.ollama_host:
        return Endpoint(settings.ollama_host, None, False)
    return None


def _simulated_endpoint(name: str, settings: Settings) -> Endpoint:
    url = settings.effective_simulator_url.rstrip("/")
    return Endpoint(f"{url}/v1" if name == "codex" else url, SIMULATED_KEY, True)


def endpoint(name: str, settings: Settings) -> Endpoint | None:
    """The endpoint ``name`` would use, or None when it is not configured and the simulator is off."""
    if name not in KNOWN:
        raise ConfigError(f"unknown provider {name!r}; known: {', '.join(KNOWN)}")
    real = _real_endpoint(name, settings)
    if real is not None:
        return real
    return _simulated_endpoint(name, settings) if settings.simulate else None


def available(name: str, settings: Settings) -> str | None:
    """None when ``name`` can be used; otherwise why not, in words an operator can act on."""
    if endpoint(name, settings) is not None:
        return None
    return f"{SETTING_NAMES[name]} is not set and the simulator is off (SWITCHYARD_SIMULATE=false)"


def _resolve(command: str) -> str | None:
    """``command`` on PATH, else in the project's own install (``make agent-clis``)."""
    return shutil.which(command, path=os.environ.get("PATH", os.defpath)) or shutil.which(
        command, path=str(PROJECT_CLIS)
    )


def cli_executable(name: str, settings: Settings) -> str | None:
    """The absolute path of ``name``'s agent CLI, or None when it has none or it cannot be found."""
    setting = CLI_SETTINGS.get(name)
    return _resolve(getattr(settings, setting)) if setting else None


def _found(command: str, now: float) -> bool:
    """:func:`_resolve` costs tens of microseconds a miss and the router asks per attempt: ask once per TTL."""
    key = (command, os.environ.get("PATH", os.defpath), str(PROJECT_CLIS))
    checked = _WHICH_CACHE.get(key)
    if checked is None or now - checked[0] > WHICH_TTL_S:
        checked = _WHICH_CACHE[key] = (now, _resolve(command) is not None)
    return checked[1]


def cli_unavailable(name: str, settings: Settings) -> str | None:
    """None when ``name``'s agent CLI can run here; otherwise why not, in words an operator can act on."""
    setting = CLI_SETTINGS.get(name)
    if setting is None:
        return f"{name} has no agent CLI; its transports are api only"
    configured = getattr(settings, setting)
    if not _found(configured, time.monotonic()):
        return (
            f"the {name} CLI {configured!r} is neither on PATH nor in {PROJECT_CLIS}; install it there with "
            f"`make agent-clis`, or set SWITCHYARD_{setting.upper()} to its path"
        )
    return None


def cli_available(name: str, settings: Settings) -> bool:
    """True when ``name`` has an agent CLI and it resolves on PATH (its credentials are :func:`available`'s)."""
    return cli_unavailable(name, settings) is None


def build_provider(name: str, settings: Settings, fleet: Fleet, transport: str = "api") -> Provider:
    """The client for ``name`` over ``transport``; ProviderDown when it is not configured (or its CLI is
    missing), ConfigError when the provider or transport is unknown."""
    if name not in fleet.providers:
        raise ConfigError(f"provider {name!r} is not in the fleet file {fleet.source}")
    if transport not in ("api", "cli"):
        raise ConfigError(f"unknown transport {transport!r}; known: api, cli")
    if transport == "cli" and "cli" not in fleet.providers[name].transports:
        raise ConfigError(f"provider {name!r} has no cli transport in the fleet file {fleet.source}")
    where = endpoint(name, settings)
    if where is None:
        raise ProviderDown(f"{name}: {available(name, settings)}", provider=name)
    if transport == "cli":
        return _build_cli(name, settings, fleet, where)
    timeout = fleet.limits.provider_timeout_s
    # each SDK (anthropic alone is ~45 MB) is loaded by the first process that calls its provider, not by
    # every worker, beat and Flower at start
    if name == "claude":
        from providers.claude import ClaudeProvider  # noqa: PLC0415

        return ClaudeProvider(base_url=where.base_url, api_key=where.secret or "", timeout=timeout)
    if name == "codex":
        from providers.codex import CodexProvider  # noqa: PLC0415

        return CodexProvider(base_url=where.base_url, api_key=where.secret or "", timeout=timeout)
    from providers.ollama import OllamaProvider  # noqa: PLC0415

    return OllamaProvider(host=where.base_url or "", timeout=timeout)


def _build_cli(name: str, settings: Settings, fleet: Fleet, where: Endpoint) -> Provider:
    executable = cli_executable(name, settings)
    if executable is None:
        raise ProviderDown(f"{name}: {cli_unavailable(name, settings)}", provider=name)
    path = os.environ.get("PATH", os.defpath)  # the agent finds node, git and its own helpers on it
    key = where.secret or ""
    if name == "claude":
        return ClaudeCliProvider(
            executable=executable, data_dir=settings.data_dir, base_url=where.base_url, api_key=key, path=path
        )

    def price_of(model: str) -> Price:
        return fleet.price(name, model, datetime.now(UTC).date())[1]

    return CodexCliProvider(
        executable=executable,
        data_dir=settings.data_dir,
        base_url=where.base_url,
        api_key=key,
        path=path,
        price_of=price_of,
    )
