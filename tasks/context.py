"""Settings and fleet of this process, loaded once on first use (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import Settings, load_settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    fleet: Fleet

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url


def build_context(settings: Settings | None = None) -> Context:
    settings = settings or load_settings()
    return Context(settings=settings, fleet=load_fleet(settings.fleet_file, settings.profile))


@lru_cache(maxsize=1)
def get_context() -> Context:
    """The process-wide context, from the environment (``SWITCHYARD_*``)."""
    return build_context()
