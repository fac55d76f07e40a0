"""Logs: one format per profile, the running task's context on every line, secrets masked at the handler.

``development`` prints a readable console line; ``staging`` and ``production`` print one JSON object per line.
Both go through structlog's :class:`~structlog.stdlib.ProcessorFormatter`, so the lines of the standard library's
loggers (ours, Celery's, kombu's, uvicorn's) get the same format as structlog's own. The fields bound with
:func:`bind` (task id, kind, environment, stage, group, provider, attempt) live in contextvars: every line logged
while a task runs carries them, whichever logger wrote it.

Secrets never reach a log line: :class:`MaskSecrets` (a filter on the handler) masks the message and its
arguments, and the formatter masks the rendered line once more (tracebacks, fields), so a key inside an
exception's text is caught too. :func:`mask` is the same masking for text stored in rows.

structlog rather than python-json-logger: it renders both formats from one pipeline, its contextvars support
carries the task's fields into foreign (stdlib) records, and it is actively maintained.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
TASK_FIELDS = ("task_id", "kind", "environment", "stage", "group", "provider", "attempt")

# Apprise-style notification URLs (and Slack/Discord webhooks): the whole URL is a secret.
ALERT_SCHEMES = (
    "json", "jsons", "xml", "xmls", "form", "forms", "slack", "discord", "mailto", "mailtos", "tgram", "pover",
    "pushover", "ntfy", "ntfys", "msteams", "gotify", "gotifys", "matrix", "matrixs", "rocket", "rockets", "mmost",
    "mmosts", "zulip", "webex", "twilio", "sns", "ses", "gchat", "signal", "signals", "apprise", "apprises",
    "pagerduty", "opsgenie", "pushbullet", "teams", "workflows", "mattermost",
)  # fmt: skip
_KEY_VALUE = (
    r"(?i)\b((?:x-api-key|api[_-]?key|authorization|token|password|secret)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\*\*\*|(?i:bearer)\s)[^\s\"',;}&]{4,}"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys: Anthropic (sk-ant-…), OpenAI (sk-…, sk-proj-…); not inside a word ("task-…" stays)
    (re.compile(r"(?<![A-Za-z0-9_-])sk-(?:ant-)?[A-Za-z0-9_\-]{6,}"), "sk-" + MASK),
    # bearer tokens, in a header or anywhere in text
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{4,}"), r"\1" + MASK),
    # key=value and "key": "value" forms (headers, query strings, JSON bodies)
    (re.compile(_KEY_VALUE), r"\1" + MASK),
    # alert URLs: the scheme stays (it says which service), the rest goes
    (re.compile(r"(?i)\b(" + "|".join(ALERT_SCHEMES) + r")://[^\s\"'<>]+"), r"\1://" + MASK),
    (
        re.compile(r"(?i)https?://(?:hooks\.slack\.com|discord(?:app)?\.com/api/webhooks)/[^\s\"'<>]+"),
        "https://" + MASK,
    ),
    # URL passwords: scheme://user:password@host keeps the user and host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@\"']*:)[^\s@/\"']+@"), r"\1" + MASK + "@"),
)
_known: set[str] = set()  # secret values from the settings, masked wherever they appear


def remember_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values too (keys that do not look like keys: an Ollama token, a custom gateway's)."""
    _known.update(v for v in values if v and len(v) >= 6)


def mask(text: str) -> str:
    """``text`` with every API key, bearer token, URL password and alert URL replaced by ``***``."""
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask_data(value: Any) -> Any:
    """:func:`mask` applied to every string inside ``value`` (dicts, lists), the rest kept as it is."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {k: mask_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_data(v) for v in value)
    return value


class MaskSecrets(logging.Filter):
    """On a handler: the record's message is rendered, masked, and its arguments dropped (they are in it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # structlog's own event, rendered by the formatter: mask its values
            record.msg = mask_data(record.msg)
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: keep the raw parts, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


def _mask_rendered(_: WrappedLogger, __: str, rendered: Any) -> Any:
    """The last processor: the line as it will be written, masked (fields, tracebacks, everything)."""
    return mask(rendered) if isinstance(rendered, str) else rendered


def _exc_text(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """A stdlib record whose traceback the filter already rendered (and masked) keeps that text."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord) and record.exc_text and "exception" not in event:
        event["exception"] = record.exc_text
        event.pop("exc_info", None)
    return event


def _order_task_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The task's fields first after the message, in one order, so lines read alike."""
    fields = {k: event.pop(k) for k in TASK_FIELDS if k in event}
    return {"event": event.pop("event", ""), **fields, **event}


def _trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The trace and span a line was logged in (when traces are recorded), to find a line's trace and back."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"], event["span_id"] = format(context.trace_id, "032x"), format(context.span_id, "016x")
    return event


def _shared() -> list[Processor]:
    """What every line gets, whoever logged it: the task's fields, trace ids, level, logger, a UTC timestamp."""
    return [
        structlog.contextvars.merge_contextvars,
        _trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(profile: str) -> logging.Formatter:
    """The formatter for ``profile``: JSON lines in staging and production, a console line in development."""
    shared = _shared()
    renderer: Processor
    if profile == "development":
        # plain tracebacks: rich's would print local variables, and a local may hold a key
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
        tail: list[Processor] = [_exc_text]
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [_exc_text, structlog.processors.format_exc_info]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            _order_task_fields,
            renderer,
            _mask_rendered,
        ],
    )


def configure(profile: str, level: str | int = "INFO", *, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger of this process to one handler on ``stream`` (stderr), in ``profile``'s format.

    Handlers already on the root logger and on uvicorn's and Celery's loggers are replaced, so no line leaves
    unformatted or unmasked. Returns the handler (tests read its format)."""
    handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)  # never a proxy that logs again
    handler.setFormatter(formatter(profile))
    handler.addFilter(MaskSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler


def bind(**fields: object) -> None:
    """Put ``fields`` (task id, kind, environment, stage, group, provider, attempt) on every line from now."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


def clear() -> None:
    """The task ended: its fields leave this thread's lines."""
    structlog.contextvars.clear_contextvars()


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """``fields`` on every line inside the block, the previous values back after it."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield
