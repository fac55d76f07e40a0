"""Logs and traces of the processes Celery runs (workers, beat, Flower): hooked to Celery's signals.

* ``setup_logging``: Celery leaves its logging to us; every logger writes through :mod:`switchyard.logs`
  (JSON lines in staging and production, console in development, secrets masked), so the worker's log file
  (its stderr, ``log_dir/worker-<group>.log``) has that format, Celery's own lines included.
* ``task_prerun``/``task_postrun``: the task's id and kind are bound for every line of its run (the attempt
  loop adds environment, stage, group, provider and attempt), and cleared after Celery's "succeeded" line.
* ``worker_init``/``worker_process_init``: OpenTelemetry's Celery instrumentation and, when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, the OTLP exporter (:mod:`switchyard.traces`).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from celery import signals

from switchyard import logs, traces
from switchyard.settings import load_settings

TASK_PREFIX = "switchyard."


def configure_logging(loglevel: object = None) -> None:
    """This process's logging, in its profile's format, with the settings' secret values masked too."""
    settings = load_settings()
    secrets = (settings.anthropic_api_key, settings.openai_api_key)
    logs.remember_secrets(s.get_secret_value() for s in secrets if s is not None)
    urls = (settings.broker_url, settings.state_url, settings.database_url, settings.ollama_host)
    logs.remember_secrets(urlsplit(url).password for url in urls if url)
    level = loglevel if isinstance(loglevel, int) else settings.effective_log_level
    logs.configure(settings.profile, level)


def instrument_celery(service: str) -> bool:
    """Celery's publish and run spans (context carried in the message headers), exported when an endpoint is
    set; without one nothing is instrumented, so a run costs nothing extra."""
    if not traces.configure(service):
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(loglevel: object = None, **_: Any) -> None:
    configure_logging(loglevel)


@signals.worker_init.connect  # type: ignore[untyped-decorator]
@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _instrument(**_: Any) -> None:
    instrument_celery(os.environ.get("OTEL_SERVICE_NAME") or "switchyard-worker")


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _redirect_prints(sender: Any = None, **_: Any) -> None:
    """Taking over the logging setup also skips Celery's redirect of print() and stray writes to stderr: done
    here for the `celery worker` command, so those lines are formatted and masked like the rest."""
    from celery.apps.worker import Worker  # noqa: PLC0415

    if isinstance(sender, Worker) and sender.app.conf.worker_redirect_stdouts:
        sender.app.log.redirect_stdouts(sender.app.conf.worker_redirect_stdouts_level)


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _flush(**_: Any) -> None:
    traces.flush()


@signals.task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    logs.clear()
    name = getattr(task, "name", "") or ""
    if not name.startswith(TASK_PREFIX) or ".maintenance." in name:
        return
    task_id = (kwargs or {}).get("task_id") or (args[0] if args else None)
    logs.bind(task_id=task_id, kind=name.removeprefix(TASK_PREFIX))


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _unbind_task(**_: Any) -> None:
    logs.clear()
