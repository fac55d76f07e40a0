"""The embedded broker: a real valkey-server under the data directory, durable through a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import free_port, port_open, stop_process_group

from switchyard.errors import ConfigError
from switchyard.settings import Settings
from workers import broker

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, broker_port=free_port())


@pytest.fixture
def started(settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Brokers a test started; each is stopped by its process group at the end, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process_group(proc.pid, timeout=0)
            proc.wait(timeout=5)


def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(broker.local_url(settings), socket_timeout=2)


def test_config_file_has_the_durability_settings(settings: Settings) -> None:
    text = broker.render_config(settings)
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction", "bind 127.0.0.1"):
        assert line in text.splitlines()
    assert f"port {settings.broker_port}" in text
    assert f'dir "{settings.data_dir / "broker"}"' in text


def test_starts_answers_and_is_configured_for_a_queue(
    settings: Settings, started: list[subprocess.Popen[bytes]]
) -> None:
    started.append(broker.start_broker(settings))
    with client(settings) as c:
        assert c.ping() is True
        assert c.config_get("appendonly") == {"appendonly": "yes"}
        assert c.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert c.config_get("dir")["dir"] == str(settings.data_dir / "broker")
    aof = broker.broker_paths(settings).aof_dir
    assert aof.is_dir() and any(aof.glob("*.aof"))
    assert aof.is_relative_to(settings.data_dir)


def test_a_key_survives_a_restart(settings: Settings, started: list[subprocess.Popen[bytes]]) -> None:
    first = broker.start_broker(settings)
    started.append(first)
    with client(settings) as c:
        c.rpush("high_level", "task-1", "task-2")
    broker.shutdown(settings, first)
    assert first.returncode == 0
    assert broker.ping(broker.local_url(settings)) is not None

    started.append(broker.start_broker(settings))
    with client(settings) as c:
        assert c.lrange("high_level", 0, -1) == [b"task-1", b"task-2"]


def test_stops_cleanly_and_frees_its_port(settings: Settings, started: list[subprocess.Popen[bytes]]) -> None:
    proc = broker.start_broker(settings)
    started.append(proc)
    broker.shutdown(settings, proc)
    assert proc.returncode == 0
    assert "ready to exit" in broker.broker_paths(settings).logfile.read_text()
    assert not port_open("127.0.0.1", settings.broker_port)


def test_a_port_taken_by_another_program_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.broker_port))
        squatter.listen()
        with pytest.raises(ConfigError) as info:
            broker.start_broker(settings)
    message = str(info.value)
    assert str(settings.broker_port) in message
    assert "SWITCHYARD_BROKER_PORT" in message


def test_our_own_broker_on_the_port_says_how_to_stop_it(
    settings: Settings, started: list[subprocess.Popen[bytes]]
) -> None:
    started.append(broker.start_broker(settings))
    with pytest.raises(ConfigError, match="switchyard down"):
        broker.start_broker(settings)
