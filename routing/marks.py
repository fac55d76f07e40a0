"""Models marked unusable: a provider answered 404 for them, so no worker asks for them again until the fleet
file changes or an operator heals them.

A mark lives in the state Redis next to the provider's breaker (:mod:`routing.keys`: one hash per provider,
model -> JSON), written by the attempt loop through :meth:`routing.router.Router.mark_unusable` and read with
the breaker snapshot, in the same round trip. It carries a :func:`fingerprint` of the provider's entry in the
fleet file as it was when the 404 came back. The rule (:func:`in_force`, pure) is:

    a mark holds  ⇔  its fingerprint equals the fingerprint of the provider's entry in the fleet in force

so editing the provider's table in the fleet file (a model renamed, a price added, a transport changed) and
restarting the workers lifts every mark of that provider; a worker still running the old fleet keeps
honouring it. ``switchyard breaker heal PROVIDER [--model M]`` (and ``breaker reset``) deletes marks whatever
their fingerprint: for fixes outside the fleet file (the model pulled into Ollama, access granted to a key).
Marks never expire by themselves: a model that is gone stays gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchyard.fleet_models import Fleet

log = logging.getLogger(__name__)
FINGERPRINT_CHARS = 16
REASON_CHARS = 300


@dataclass(frozen=True)
class ModelMark:
    """``model`` of a provider answered 404: ``reason`` says how, ``fingerprint`` which fleet entry it was."""

    model: str
    reason: str
    fingerprint: str
    at: datetime

    def encode(self) -> str:
        """The value stored in Redis (the model is the hash field)."""
        at = self.at.timestamp()
        return json.dumps({"reason": self.reason[:REASON_CHARS], "fingerprint": self.fingerprint, "at": at})

    def as_dict(self, *, in_force: bool) -> dict[str, Any]:
        return {"model": self.model, "reason": self.reason, "at": self.at.isoformat(), "in_force": in_force}


def fingerprint(fleet: Fleet, provider: str) -> str:
    """A short digest of ``provider``'s entry in ``fleet`` (models, prices, transports, limits); "" if absent."""
    config = fleet.providers.get(provider)
    if config is None:
        return ""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def in_force(mark: ModelMark, fleet: Fleet, provider: str) -> bool:
    """Whether ``mark`` still holds under ``fleet``: the provider's entry is the one that answered 404."""
    return mark.fingerprint == fingerprint(fleet, provider)


def mark_for(marks: Iterable[ModelMark], model: str, fleet: Fleet, provider: str) -> ModelMark | None:
    """The mark in force on ``model`` of ``provider``, if any (the fingerprint is computed only when needed)."""
    for mark in marks:
        if mark.model == model and in_force(mark, fleet, provider):
            return mark
    return None


def new_mark(fleet: Fleet, provider: str, model: str, reason: str, at: datetime | None = None) -> ModelMark:
    return ModelMark(model, reason[:REASON_CHARS], fingerprint(fleet, provider), at or datetime.now(UTC))


def decode(flat: Sequence[Any] | None) -> tuple[ModelMark, ...]:
    """Marks from a Redis ``HGETALL`` reply as a flat list (field, value, field, value...); bad values skipped."""
    if not flat:
        return ()
    marks = []
    for field, value in zip(flat[0::2], flat[1::2], strict=True):
        try:
            data = json.loads(value)
            at = datetime.fromtimestamp(float(data["at"]), UTC)
            marks.append(ModelMark(_text(field), str(data["reason"]), str(data["fingerprint"]), at))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable unusable-model mark for %r", field)
    return tuple(marks)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
