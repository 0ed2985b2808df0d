"""Topic contracts: decode and validate raw records, encode outputs.

Decoding never raises: each function returns either a typed value or a
`Rejected` carrying a reason code and a message, which the shell turns into
a dead letter with the original bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.behaviour import EVENT_TYPES, Behaviour, Position
from models.core import Delta

DELTA_SCHEMA = "interest-stream.delta/1"
DEAD_LETTER_SCHEMA = "interest-stream.dead-letter/1"
WAKEUP_SCHEMA = "interest-stream.wakeup/1"

MAX_ID_CHARS = 256
MAX_TEXT_BYTES = 64 * 1024
MAX_RECORD_BYTES = 256 * 1024
#: Events more than this far ahead of the processing clock are rejected.
MAX_FUTURE_SKEW_S = 86400.0


@dataclass(frozen=True)
class Rejected:
    """A record that failed to decode or validate."""

    code: str  # invalid_json | wrong_type | missing_field | unknown_type | ts_future | ...
    message: str


@dataclass(frozen=True)
class ItemUpdate:
    """A validated `items` record; ``text`` is what the encoder reads."""

    item_id: str
    title: str
    text: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ItemTombstone:
    item_id: str


@dataclass(frozen=True)
class Wakeup:
    """Internal, keyed by user: re-rank for changed items, or send a snapshot.

    The items agent writes one when items this user watches changed;
    ``interest-stream snapshot`` writes one with ``snapshot`` set to a request
    id, answered by a ``snapshot`` delta carrying that id.
    """

    user_id: str
    item_ids: tuple[str, ...] = ()
    snapshot: str | None = None


def decode_behaviour(
    key: bytes | None, value: bytes | None, position: Position, now: float
) -> Behaviour | Rejected:
    """Validate one `behaviours` record (see the README's topic contracts)."""
    obj = _json_object(value)
    if isinstance(obj, Rejected):
        return obj
    try:
        user_id = _id(obj, "user_id")
        item_id = _id(obj, "item_id")
        type_ = _field(obj, "type", str)
        if type_ not in EVENT_TYPES:
            return Rejected("unknown_type", f"unknown event type {type_[:40]!r}")
        ts = _timestamp(obj.get("ts"), now)
        if isinstance(ts, Rejected):
            return ts
        weight = _optional_number(obj, "weight")
        rating = _optional_number(obj, "rating")
        if type_ == "rating" and rating is None:
            return Rejected("missing_field", "a rating event needs 'rating'")
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            return Rejected("wrong_type", "'text' must be a string")
        event_id = obj.get("event_id")
        if event_id is None:
            event_id = _derived_event_id(user_id, item_id, type_, ts)
        elif not isinstance(event_id, str) or not event_id:
            return Rejected("wrong_type", "'event_id' must be a non-empty string")
    except _Invalid as exc:
        return exc.rejected
    if key is not None and key.decode("utf-8", "replace") != user_id:
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not user_id {user_id!r}")
    return Behaviour(user_id, item_id, type_, ts, event_id, weight, rating, position)


def behaviour_text(value: bytes) -> str | None:
    """The optional inline item text of an already-validated behaviour."""
    text = json.loads(value).get("text")
    return text if isinstance(text, str) and text.strip() else None


def decode_item(key: bytes | None, value: bytes | None) -> ItemUpdate | ItemTombstone | Rejected:
    """Validate one `items` record; a null value is a tombstone for its key."""
    if value is None:
        if not key:
            return Rejected("missing_field", "tombstone without a key")
        try:
            return ItemTombstone(key.decode("utf-8"))
        except UnicodeDecodeError:
            return Rejected("invalid_key", "tombstone key is not UTF-8")
    obj = _json_object(value)
    if isinstance(obj, Rejected):
        return obj
    try:
        item_id = _id(obj, "item_id")
        title = _field(obj, "title", str)
        text = obj.get("text", "")
        if not isinstance(text, str):
            return Rejected("wrong_type", "'text' must be a string")
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return Rejected("wrong_type", "'tags' must be a list of strings")
    except _Invalid as exc:
        return exc.rejected
    if key is not None and key.decode("utf-8", "replace") != item_id:
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not item_id {item_id!r}")
    body = f"{title}. {text}" if text else title
    return ItemUpdate(item_id, title, body, tuple(dict.fromkeys(tags)))


def decode_wakeup(value: bytes | None) -> Wakeup | Rejected:
    obj = _json_object(value)
    if isinstance(obj, Rejected):
        return obj
    try:
        user_id = _id(obj, "user_id")
        items = obj.get("item_ids", [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return Rejected("wrong_type", "'item_ids' must be a list of strings")
        snapshot = obj.get("snapshot")
        if snapshot is not None and not (
            isinstance(snapshot, str) and 0 < len(snapshot) <= MAX_ID_CHARS
        ):
            return Rejected(
                "wrong_type", f"'snapshot' must be a request id of 1..{MAX_ID_CHARS} chars"
            )
    except _Invalid as exc:
        return exc.rejected
    return Wakeup(user_id, tuple(items), snapshot)


def encode_wakeup(wakeup: Wakeup) -> bytes:
    body: dict[str, object] = {
        "schema": WAKEUP_SCHEMA,
        "user_id": wakeup.user_id,
        "item_ids": wakeup.item_ids,
    }
    if wakeup.snapshot is not None:
        body["snapshot"] = wakeup.snapshot
    return _dumps(body)


def encode_delta(delta: Delta, source_ts_ms: int | None) -> bytes:
    """The `recommendation-deltas` value. ``source_ts_ms``: newest input record time."""
    return _dumps(
        {
            "schema": DELTA_SCHEMA,
            "user_id": delta.user_id,
            "version": delta.version,
            "ts": delta.ts,
            "cause": {
                "kind": delta.cause.kind,
                "event_ids": delta.cause.event_ids,
                "item_ids": delta.cause.item_ids,
                "last_event_ts": delta.cause.last_event_ts,
                "source_ts_ms": source_ts_ms,
                "request_id": delta.cause.request_id,
            },
            "added": [{"item_id": i, "score": s, "rank": r} for i, s, r in delta.added],
            "removed": [{"item_id": i, "previous_rank": r} for i, r in delta.removed],
            "reranked": [
                {"item_id": i, "score": s, "rank": r, "previous_rank": p}
                for i, s, r, p in delta.reranked
            ],
            "top_k": [{"item_id": i, "score": s} for i, s in delta.top_k],
            "interest": delta.interest,
        }
    )


def encode_dead_letter(
    key: bytes | None, value: bytes | None, position: Position, rejected: Rejected, now: float
) -> bytes:
    """A `dead-letters` value: the original bytes (base64) and where they came from."""
    return _dumps(
        {
            "schema": DEAD_LETTER_SCHEMA,
            "source": {
                "topic": position.topic,
                "partition": position.partition,
                "offset": position.offset,
            },
            "reason": rejected.code,
            "message": rejected.message,
            "key_b64": None if key is None else base64.b64encode(key).decode(),
            "value_b64": None if value is None else base64.b64encode(value).decode(),
            "ts": now,
        }
    )


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.rejected = Rejected(code, message)


def _json_object(value: bytes | None) -> dict[str, Any] | Rejected:
    if value is None:
        return Rejected("missing_value", "record has no value")
    if len(value) > MAX_RECORD_BYTES:
        return Rejected("too_large", f"record is {len(value)} bytes, limit {MAX_RECORD_BYTES}")
    try:
        obj = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejected("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return Rejected("invalid_json", f"invalid JSON: {exc.msg} at char {exc.pos}")
    if not isinstance(obj, dict):
        return Rejected("wrong_type", f"expected a JSON object, got {type(obj).__name__}")
    for name in ("text", "title"):
        field = obj.get(name)
        if isinstance(field, str) and len(field.encode()) > MAX_TEXT_BYTES:
            return Rejected("too_large", f"'{name}' exceeds {MAX_TEXT_BYTES} bytes")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    if name not in obj or obj[name] is None:
        raise _Invalid("missing_field", f"missing '{name}'")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Invalid(
            "wrong_type", f"'{name}' must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _id(obj: dict[str, Any], name: str) -> str:
    value = _field(obj, name, str)
    if not value.strip() or len(value) > MAX_ID_CHARS:
        raise _Invalid("wrong_type", f"'{name}' must be 1..{MAX_ID_CHARS} non-blank characters")
    return value


def _optional_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid("wrong_type", f"'{name}' must be a finite number")
    return float(value)


def _timestamp(value: Any, now: float) -> float | Rejected:
    """Event time: epoch seconds (number) or an ISO-8601 string with a zone."""
    if value is None:
        return Rejected("missing_field", "missing 'ts'")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return Rejected("wrong_type", f"'ts' is not ISO-8601: {value[:40]!r}")
        if parsed.tzinfo is None:
            return Rejected("wrong_type", "'ts' ISO-8601 string needs a time zone")
        ts = parsed.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ts = float(value)
    else:
        return Rejected(
            "wrong_type", f"'ts' must be a number or string, got {type(value).__name__}"
        )
    if not math.isfinite(ts):
        return Rejected("wrong_type", "'ts' must be finite")
    if ts < 0:
        return Rejected("ts_before_epoch", f"'ts' {ts} is before 1970")
    if ts > now + MAX_FUTURE_SKEW_S:
        return Rejected("ts_future", f"'ts' {ts} is more than {MAX_FUTURE_SKEW_S:g}s ahead")
    return ts


def _derived_event_id(user_id: str, item_id: str, type_: str, ts: float) -> str:
    digest = hashlib.sha1(f"{user_id}\x1f{item_id}\x1f{type_}\x1f{ts!r}".encode()).hexdigest()
    return "h-" + digest[:20]
