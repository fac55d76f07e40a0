"""Which providers can be used with these settings, and the client for each.

A provider is usable when its key (Claude, Codex) or host (Ollama) is set, or when the simulator is on
(``SWITCHYARD_SIMULATE``): then a provider without a key or host talks to the simulator with the dummy key
``simulated``. A provider with a real key never silently goes to the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import Provider
from providers.claude import ClaudeProvider
from providers.codex import CodexProvider
from providers.ollama import OllamaProvider
from switchyard.errors import ConfigError, ProviderDown
from switchyard.fleet import Fleet
from switchyard.settings import Settings

SIMULATED_KEY = "simulated"
KNOWN = ("claude", "codex", "ollama")
SETTING_NAMES = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY", "ollama": "OLLAMA_HOST"}


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


def build_provider(name: str, settings: Settings, fleet: Fleet) -> Provider:
    """The API client for ``name``; ProviderDown when it is not configured, ConfigError when unknown."""
    if name not in fleet.providers:
        raise ConfigError(f"provider {name!r} is not in the fleet file {fleet.source}")
    where = endpoint(name, settings)
    if where is None:
        raise ProviderDown(f"{name}: {available(name, settings)}", provider=name)
    timeout = fleet.limits.provider_timeout_s
    if name == "claude":
        return ClaudeProvider(base_url=where.base_url, api_key=where.secret or "", timeout=timeout)
    if name == "codex":
        return CodexProvider(base_url=where.base_url, api_key=where.secret or "", timeout=timeout)
    return OllamaProvider(host=where.base_url or "", timeout=timeout)
