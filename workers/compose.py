"""docker-compose.yml, generated from the fleet file: one worker service per session group.

The committed ``docker-compose.yml`` is ``render_compose(load_fleet(switchyard.toml))``; a test keeps them
equal. Regenerate with ``python -m workers.compose > docker-compose.yml`` (``--check`` compares instead).
Worker and Flower arguments come from :mod:`workers.services`, the same place ``switchyard up`` takes them.

Secrets are compose interpolations, never values: the database password and the key of every paid provider
some group's ladder uses are required (``${VAR:?…}``: compose refuses to start without them); the rest are
optional (``${VAR:-}``). Flower and the API are published on the host's loopback only, and Flower asks for
basic auth because inside its container it listens on every interface.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from switchyard.fleet import Fleet, GroupConfig, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE, REPO_ROOT
from workers.services import WORKER_PREFIX, api_args, beat_args, flower_args, worker_args, worker_node

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
HEADER = (
    "# Generated from switchyard.toml by workers/compose.py; do not edit by hand.\n"
    "# Regenerate: python -m workers.compose > docker-compose.yml\n"
    "# Needs POSTGRES_PASSWORD (letters and digits: it goes into a URL), FLOWER_BASIC_AUTH\n"
    "# (user:password) and the API keys of the paid providers below.\n"
)
IMAGE = "switchyard:latest"
API_PORT = 8700
FLOWER_PORT = 5555
PROVIDER_VARS = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY", "ollama": "OLLAMA_HOST"}
HEALTH_TIMING = {"interval": "5s", "timeout": "3s", "retries": 20}


def required(var: str, hint: str | None = None) -> str:
    return f"${{{var}:?set {hint or var}}}"


def optional(var: str, default: str = "") -> str:
    return f"${{{var}:-{default}}}"


def provider_env(fleet: Fleet) -> dict[str, str]:
    """Provider variables: required for paid providers some ladder uses, optional otherwise."""
    used = {rung for group in fleet.groups for rung in group.ladder}
    env: dict[str, str] = {}
    for name, var in PROVIDER_VARS.items():
        paid = name in fleet.providers and not fleet.providers[name].free
        env[var] = required(var) if paid and name in used else optional(var)
    return env


def app_env(fleet: Fleet) -> dict[str, str]:
    password = required("POSTGRES_PASSWORD")
    return {
        "SWITCHYARD_PROFILE": optional("SWITCHYARD_PROFILE", "production"),
        "SWITCHYARD_HOME": "/data",
        "SWITCHYARD_FLEET_FILE": "/app/switchyard.toml",
        "SWITCHYARD_BROKER_URL": "redis://redis:6379/0",
        "SWITCHYARD_DATABASE_URL": f"postgresql+psycopg://switchyard:{password}@postgres:5432/switchyard",
        **provider_env(fleet),
    }


def _healthy(*names: str) -> dict[str, Any]:
    return {name: {"condition": "service_healthy"} for name in names}


def _app_service(fleet: Fleet, command: list[str], **extra: Any) -> dict[str, Any]:
    depends = {**_healthy("postgres", "redis"), "migrate": {"condition": "service_completed_successfully"}}
    service: dict[str, Any] = {
        "image": IMAGE,
        "build": ".",
        "command": command,
        "environment": app_env(fleet),
        "volumes": ["switchyard-data:/data"],
        "depends_on": depends,
        "restart": "unless-stopped",
    }
    service.update(extra)
    return service


def worker_service(fleet: Fleet, group: GroupConfig) -> dict[str, Any]:
    # `$$` is a literal `$` for compose; Celery's %h is the container's host name, $HOSTNAME in the shell.
    node = worker_node(group, "$$HOSTNAME")
    ping = f"celery -A tasks.app inspect ping -d {node} --timeout 5"
    return _app_service(
        fleet,
        ["celery", *worker_args(group)],
        healthcheck={"test": ["CMD-SHELL", ping], "interval": "30s", "timeout": "10s", "retries": 3},
        stop_grace_period="60s",
    )


def _infrastructure() -> dict[str, Any]:
    postgres = {
        "image": "postgres:16-alpine",
        "environment": {
            "POSTGRES_USER": "switchyard",
            "POSTGRES_DB": "switchyard",
            "POSTGRES_PASSWORD": required("POSTGRES_PASSWORD"),
        },
        "volumes": ["pgdata:/var/lib/postgresql/data"],
        "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U switchyard -d switchyard"], **HEALTH_TIMING},
        "restart": "unless-stopped",
    }
    durable = ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
    redis = {
        "image": "redis:7-alpine",
        "command": ["redis-server", *durable],
        "volumes": ["redisdata:/data"],
        "healthcheck": {"test": ["CMD", "redis-cli", "ping"], **HEALTH_TIMING},
        "restart": "unless-stopped",
    }
    return {"postgres": postgres, "redis": redis}


def _monitoring(fleet: Fleet) -> dict[str, Any]:
    flower = _app_service(
        fleet,
        ["celery", *flower_args("0.0.0.0", FLOWER_PORT, Path("/data/flower.db"))],  # noqa: S104 - inside the container; published on loopback
        ports=[f"127.0.0.1:{FLOWER_PORT}:{FLOWER_PORT}"],
    )
    flower["environment"]["FLOWER_BASIC_AUTH"] = required("FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH to user:password")
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{API_PORT}/api/multi-env/health')"
    api = _app_service(
        fleet,
        api_args("0.0.0.0", API_PORT),  # noqa: S104 - inside the container; published on loopback
        ports=[f"127.0.0.1:{API_PORT}:{API_PORT}"],
        healthcheck={"test": ["CMD", "python", "-c", probe], **HEALTH_TIMING},
    )
    return {"flower": flower, "api": api}


def compose_document(fleet: Fleet) -> dict[str, Any]:
    """The compose file as data: infrastructure, a one-shot migration, one worker per group, Flower, API."""
    migrate = _app_service(fleet, ["switchyard", "db", "upgrade"], restart="no")
    migrate["depends_on"] = _healthy("postgres")
    services: dict[str, Any] = {**_infrastructure(), "migrate": migrate}
    services.update({f"{WORKER_PREFIX}{g.name}": worker_service(fleet, g) for g in fleet.groups})
    # one beat for the whole fleet (the sweeper of dead holds); two would send every periodic task twice
    services["beat"] = _app_service(fleet, ["celery", *beat_args(Path("/data/celerybeat-schedule"))])
    services.update(_monitoring(fleet))
    volumes: dict[str, Any] = {"pgdata": {}, "redisdata": {}, "switchyard-data": {}}
    return {"name": "switchyard", "services": services, "volumes": volumes}


def render_compose(fleet: Fleet) -> str:
    return HEADER + "".join(to_yaml(compose_document(fleet)))


# --- a small YAML emitter: block mappings, flow sequences, JSON-quoted strings (valid YAML 1.2) ----------

PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    return json.dumps(str(value))


def to_yaml(mapping: dict[str, Any], indent: int = 0) -> list[str]:
    """Lines of YAML for ``mapping``: nested mappings as blocks, everything else on the key's line."""
    lines: list[str] = []
    pad = " " * indent
    for key, value in mapping.items():
        name = key if PLAIN_KEY.match(key) else json.dumps(key)
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{name}:\n")
            lines += to_yaml(value, indent + 2)
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}\n")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the compose file; with ``--check``, exit 1 when the committed one differs."""
    args = sys.argv[1:] if argv is None else argv
    text = render_compose(load_fleet(DEFAULT_FLEET_FILE))
    if "--check" in args:
        current = COMPOSE_FILE.read_text(encoding="utf-8") if COMPOSE_FILE.exists() else ""
        if current != text:
            sys.stderr.write(f"{COMPOSE_FILE} is out of date; run: python -m workers.compose > {COMPOSE_FILE.name}\n")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
