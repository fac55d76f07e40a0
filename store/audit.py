"""The audit of admin actions: who did what, with which arguments, when. Rows are only ever added.

``actor`` is a token's name over HTTP and ``cli:<os user>`` from the CLI. The arguments are masked before they
are stored: every string goes through :func:`switchyard.logs.mask_data` (API keys, bearer tokens, URL passwords,
alert URLs), and the value of any argument whose name says it is a secret is replaced outright.
Same rules as :mod:`store.repo`: a session passed in, keyword-only arguments, never a commit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import AuditRow, utcnow
from switchyard.logs import MASK, mask_data

SECRET_NAME = re.compile(r"(?i)(token|password|secret|api[_-]?key|authorization|credential)")


def masked(arguments: dict[str, Any]) -> dict[str, Any]:
    """Pure: ``arguments`` fit to store: secrets named as such replaced, secrets that look like one masked."""
    return {
        key: MASK if SECRET_NAME.search(key) and value is not None else mask_data(value)
        for key, value in arguments.items()
    }


def record(
    session: Session, *, actor: str, action: str, arguments: dict[str, Any], now: datetime | None = None
) -> None:
    session.add(AuditRow(actor=actor, action=action, arguments=masked(arguments), at=now or utcnow()))
    session.flush()


def listing(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` audit rows, newest first."""
    rows = session.scalars(select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit))
    return [
        {
            "id": row.id,
            "at": (row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)).isoformat(),
            "actor": row.actor,
            "action": row.action,
            "arguments": row.arguments,
        }
        for row in rows
    ]
