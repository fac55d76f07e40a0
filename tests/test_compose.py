"""docker-compose.yml is generated from the fleet file, and the committed copy is the generated one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from celeryconfig import MAINTENANCE_QUEUE
from switchyard.fleet import Fleet, load_fleet
from switchyard.settings import DEFAULT_FLEET_FILE, REPO_ROOT
from workers.compose import COMPOSE_FILE, compose_document, render_compose

SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "FLOWER_BASIC_AUTH": "u:p",
    "ANTHROPIC_API_KEY": "test-key",
    "OPENAI_API_KEY": "test-key",
}


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET_FILE)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def check_workers(document: dict[str, Any], fleet: Fleet) -> None:
    """Every group has a worker service consuming its queue with one slot per session."""
    services = document["services"]
    for group in fleet.groups:
        command = services[f"worker-{group.name}"]["command"]
        assert flag(command, "-Q") == f"{group.queue},{MAINTENANCE_QUEUE}"
        assert flag(command, "-c") == str(group.sessions)
        assert flag(command, "-P") == "threads"
    workers = [name for name in services if name.startswith("worker-")]
    assert len(workers) == len(fleet.groups)


def test_committed_file_is_the_generated_one(fleet: Fleet) -> None:
    assert COMPOSE_FILE.read_text(encoding="utf-8") == render_compose(fleet), (
        "docker-compose.yml is out of date; run: python -m workers.compose > docker-compose.yml"
    )


def test_every_group_has_its_worker(fleet: Fleet) -> None:
    check_workers(compose_document(fleet), fleet)


def test_services_wait_for_healthy_infrastructure(fleet: Fleet) -> None:
    services = compose_document(fleet)["services"]
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    for name in ("worker-high_level", "flower", "api"):
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_secrets_are_interpolations_not_values(fleet: Fleet) -> None:
    env = compose_document(fleet)["services"]["worker-high_level"]["environment"]
    assert env["ANTHROPIC_API_KEY"] == "${ANTHROPIC_API_KEY:?set ANTHROPIC_API_KEY}"
    assert env["OLLAMA_HOST"] == "${OLLAMA_HOST:-}"  # ollama is free and optional
    assert "${POSTGRES_PASSWORD:?" in env["SWITCHYARD_DATABASE_URL"]


def test_published_ports_are_loopback_only(fleet: Fleet) -> None:
    for service in compose_document(fleet)["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")


def test_yaml_parses_to_the_document(fleet: Fleet) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed in this environment")
    parsed = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert parsed == compose_document(fleet)
    check_workers(parsed, fleet)


def docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    command = docker_compose()
    if command is None:
        pytest.skip("`docker compose` is not available here")
    env = {**os.environ, **SECRETS}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO_ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_exactly_one_beat_runs_the_periodic_upkeep(fleet: Fleet) -> None:
    services = compose_document(fleet)["services"]
    beats = [name for name, s in services.items() if "beat" in s.get("command", [])]
    assert beats == ["beat"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "tasks.app", "beat"]
    assert "migrate" in services["beat"]["depends_on"]
