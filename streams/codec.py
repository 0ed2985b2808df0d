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
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.behaviour import EVENT_TYPES, Behaviour, Position
from models.core import Delta
from models.state import PendingEvent

#: What `encode_delta` writes by default; `DELTA_SCHEMAS` are the ones `decode_delta` reads.
#: Schema 2 adds the interest structure (topics, levels, interests, query) to
#: ``interest``; everything schema 1 had is still there, unchanged.
DELTA_SCHEMA = "interest-stream.delta/2"
DELTA_SCHEMA_V1 = "interest-stream.delta/1"
DELTA_SCHEMAS = frozenset({DELTA_SCHEMA_V1, DELTA_SCHEMA})
#: The ``interest`` keys of schema 1 (a worker pinned to it writes only these).
_INTEREST_V1 = ("events", "short_term", "mid_term", "pending")
DEAD_LETTER_SCHEMA = "interest-stream.dead-letter/1"
WAKEUP_SCHEMA = "interest-stream.wakeup/1"

MAX_ID_CHARS = 256
MAX_TEXT_BYTES = 64 * 1024
MAX_RECORD_BYTES = 256 * 1024
#: Events more than this far ahead of the processing clock are rejected.
MAX_FUTURE_SKEW_S = 86400.0
#: Deepest JSON nesting read; a deeper record is `invalid_json` (the contract
#: has no nested field deeper than 2, and a deep one would exhaust the stack).
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class Limits:
    """Bounds on the numbers of a behaviour (settings ``max_abs_weight`` ...).

    A value outside them is rejected as ``out_of_range`` (timestamps as
    ``ts_before_epoch`` / ``ts_future``), so no accepted record can push a
    user's state towards overflow: with ``|weight| <= max_abs_weight`` the
    time-decayed sum needs ~1e36 events to reach float32's limit.
    """

    max_abs_weight: float = 100.0
    rating_min: float = 0.0
    rating_max: float = 10.0
    min_ts: float = 0.0
    max_future_skew_s: float = MAX_FUTURE_SKEW_S

    def __post_init__(self) -> None:
        values = (self.max_abs_weight, self.rating_min, self.rating_max, self.min_ts)
        if not all(math.isfinite(v) for v in (*values, self.max_future_skew_s)):
            raise ValueError("limits must be finite numbers")
        if self.max_abs_weight <= 0 or self.rating_min >= self.rating_max:
            raise ValueError("need max_abs_weight > 0 and rating_min < rating_max")
        if self.min_ts < 0 or self.max_future_skew_s < 0:
            raise ValueError("need min_ts >= 0 and max_future_skew_s >= 0")


DEFAULT_LIMITS = Limits()


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
    key: bytes | None,
    value: bytes | None,
    position: Position,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
) -> Behaviour | Rejected:
    """Validate one `behaviours` record (see the README's topic contracts).

    >>> decode_behaviour(b"u1", b'{"user_id":"u1","item_id":"i1","type":"view","ts":1e9,'
    ...                  b'"weight":1e300}', Position("behaviours", 0, 7), 2e9)
    Rejected(code='out_of_range', message="'weight' 1e+300 is outside [-100, 100]")
    """
    obj = _json_object(value)
    if isinstance(obj, Rejected):
        return obj
    try:
        user_id = _id(obj, "user_id")
        type_ = _string(obj, "type")
        if type_ not in EVENT_TYPES:
            return Rejected("unknown_type", f"unknown event type {type_[:40]!r}")
        if type_ == "query":
            return _query(obj, key, user_id, position, now, limits)
        item_id = _id(obj, "item_id")
        ts = _timestamp(obj.get("ts"), now, limits)
        weight = _bounded(obj, "weight", -limits.max_abs_weight, limits.max_abs_weight)
        rating = _bounded(obj, "rating", limits.rating_min, limits.rating_max)
        if type_ == "rating" and rating is None:
            return Rejected("missing_field", "a rating event needs 'rating'")
        text = _optional_string(obj, "text")
        event_id = obj.get("event_id")
        if event_id is None:
            event_id = _derived_event_id(user_id, item_id, type_, ts)
        else:
            event_id = _id(obj, "event_id")
    except _Invalid as exc:
        return exc.rejected
    # Bytes, not decoded text: b"\xff" must not match a user_id of U+FFFD.
    if key is not None and key != user_id.encode():
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not user_id {user_id!r}")
    text = text if text is not None and text.strip() else None
    return Behaviour(user_id, item_id, type_, ts, event_id, weight, rating, position, text)


def _query(
    obj: dict[str, Any],
    key: bytes | None,
    user_id: str,
    position: Position,
    now: float,
    limits: Limits,
) -> Behaviour | Rejected:
    """A ``query`` behaviour: ``text`` and no item (decomposed later, by the processor)."""
    if obj.get("item_id") is not None:
        return Rejected("unexpected_field", "a query event carries 'text' and no 'item_id'")
    text = _optional_string(obj, "text")
    if text is None or not text.strip():
        return Rejected("missing_field", "a query event needs a non-blank 'text'")
    ts = _timestamp(obj.get("ts"), now, limits)
    weight = _bounded(obj, "weight", -limits.max_abs_weight, limits.max_abs_weight)
    event_id = obj.get("event_id")
    if event_id is None:
        event_id = _derived_event_id(user_id, f"query:{text}", "query", ts)
    else:
        event_id = _id(obj, "event_id")
    if key is not None and key != user_id.encode():
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not user_id {user_id!r}")
    return Behaviour(user_id, "", "query", ts, event_id, weight, None, position, text)


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
        title = _string(obj, "title")
        text = _optional_string(obj, "text") or ""
        tags = _string_list(obj, "tags", _text)
    except _Invalid as exc:
        return exc.rejected
    if key is not None and key != item_id.encode():
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not item_id {item_id!r}")
    body = f"{title}. {text}" if text else title
    return ItemUpdate(item_id, title, body, tuple(dict.fromkeys(tags)))


def decode_wakeup(value: bytes | None, key: bytes | None = None) -> Wakeup | Rejected:
    """Validate one wakeups record; a ``key`` given must be the user id's bytes."""
    obj = _json_object(value)
    if isinstance(obj, Rejected):
        return obj
    try:
        user_id = _id(obj, "user_id")
        items = _string_list(obj, "item_ids", _id_text)
        snapshot = obj.get("snapshot")
        if snapshot is not None and not (
            isinstance(snapshot, str) and 0 < len(snapshot) <= MAX_ID_CHARS
        ):
            raise _Invalid(
                "wrong_type", f"'snapshot' must be a request id of 1..{MAX_ID_CHARS} chars"
            )
        snapshot = None if snapshot is None else _text(snapshot, "snapshot")
    except _Invalid as exc:
        return exc.rejected
    if key is not None and key != user_id.encode():
        return Rejected("key_mismatch", f"record key {key[:60]!r} is not user_id {user_id!r}")
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


def encode_delta(delta: Delta, source_ts_ms: int | None, schema: int = 2) -> bytes:
    """The `recommendation-deltas` value. ``source_ts_ms``: newest input record time.

    ``schema`` 1 writes the records of earlier versions (the ``interest``
    object without the interest structure), for consumers not yet upgraded.
    """
    if schema not in (1, 2):
        raise ValueError(f"delta schema {schema} is not 1 or 2")
    interest = delta.interest
    if schema == 1:
        interest = {k: v for k, v in interest.items() if k in _INTEREST_V1}
    return _dumps(
        {
            "schema": DELTA_SCHEMA if schema == 2 else DELTA_SCHEMA_V1,
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
            "interest": interest,
            **({"model": delta.model} if schema == 2 and delta.model else {}),
        }
    )


#: The ``cause.kind`` values `encode_delta` writes (see `models.core.Cause`).
DELTA_CAUSES = frozenset({"events", "items", "replay", "snapshot"})


@dataclass(frozen=True)
class DeltaCause:
    """Why a received delta was published (the ``cause`` object of the contract)."""

    kind: str  # events | items | replay | snapshot
    event_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    last_event_ts: float | None = None
    source_ts_ms: int | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class DeltaRecord:
    """A `recommendation-deltas` value as a consumer receives it.

    The mirror of `encode_delta`'s input: ``added`` is (item, score, rank),
    ``removed`` (item, previous rank), ``reranked`` (item, score, rank,
    previous rank), ``top_k`` (item, score) best first, ranks 0-based.
    ``interest`` is the readable summary as sent (a JSON object; treat it as
    read-only).
    """

    user_id: str
    version: int
    ts: float
    cause: DeltaCause
    added: tuple[tuple[str, float, int], ...]
    removed: tuple[tuple[str, int], ...]
    reranked: tuple[tuple[str, float, int, int], ...]
    top_k: tuple[tuple[str, float], ...]
    interest: dict[str, Any]
    #: The updater that produced it (schema 2; None in schema 1 and older schema-2 records).
    model: str | None = None


def decode_delta(value: bytes | None) -> DeltaRecord | Rejected:
    """Decode one `recommendation-deltas` value; never raises.

    Accepts every value `encode_delta` writes and ignores unknown fields (a
    newer producer may add some); anything else is a `Rejected` with a
    reason (``invalid_json``, ``missing_value``, ``wrong_schema``,
    ``missing_field``, ``wrong_type``, ``unknown_type``).

    >>> decode_delta(b'{"schema": "interest-stream.delta/1", "user_id": "u1"}')
    Rejected(code='missing_field', message="missing 'version'")
    """
    if value is None:
        return Rejected("missing_value", "record has no value")
    try:
        obj = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejected("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, deep nesting
        return Rejected("invalid_json", f"invalid JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return Rejected("wrong_type", f"expected a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if not isinstance(schema, str) or schema not in DELTA_SCHEMAS:
        shown = str(schema)[:60]
        return Rejected("wrong_schema", f"schema {shown!r} is not one of {sorted(DELTA_SCHEMAS)}")
    try:
        user_id = _delta_str(obj, "user_id")
        version = _delta_int(obj, "version")
        ts = _delta_float(obj, "ts")
        cause = _delta_object(obj, "cause")
        kind = _delta_str(cause, "kind")
        if kind not in DELTA_CAUSES:
            return Rejected("unknown_type", f"unknown cause kind {kind[:40]!r}")
        return DeltaRecord(
            user_id=user_id,
            version=version,
            ts=ts,
            cause=DeltaCause(
                kind=kind,
                event_ids=_delta_strings(cause, "event_ids"),
                item_ids=_delta_strings(cause, "item_ids"),
                last_event_ts=_delta_optional(cause, "last_event_ts", _delta_float),
                source_ts_ms=_delta_optional(cause, "source_ts_ms", _delta_int),
                request_id=_delta_optional(cause, "request_id", _delta_str),
            ),
            added=tuple(
                (_delta_str(a, "item_id"), _delta_float(a, "score"), _delta_int(a, "rank"))
                for a in _delta_rows(obj, "added")
            ),
            removed=tuple(
                (_delta_str(r, "item_id"), _delta_int(r, "previous_rank"))
                for r in _delta_rows(obj, "removed")
            ),
            reranked=tuple(
                (
                    _delta_str(r, "item_id"),
                    _delta_float(r, "score"),
                    _delta_int(r, "rank"),
                    _delta_int(r, "previous_rank"),
                )
                for r in _delta_rows(obj, "reranked")
            ),
            top_k=tuple(
                (_delta_str(t, "item_id"), _delta_float(t, "score"))
                for t in _delta_rows(obj, "top_k")
            ),
            interest=_delta_object(obj, "interest"),
            model=_delta_optional(obj, "model", _delta_str),
        )
    except _BadDelta as exc:
        return exc.rejected


class _BadDelta(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.rejected = Rejected(code, message)


def _delta_get(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]``; missing or null is an error."""
    if obj.get(name) is None:
        raise _BadDelta("missing_field", f"missing '{name}'")
    return obj[name]


def _delta_object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = _delta_get(obj, name)
    if not isinstance(value, dict):
        raise _BadDelta("wrong_type", f"'{name}' must be an object")
    return value


def _delta_list(obj: dict[str, Any], name: str) -> list[Any]:
    value = _delta_get(obj, name)
    if not isinstance(value, list):
        raise _BadDelta("wrong_type", f"'{name}' must be a list")
    return value


def _delta_rows(obj: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = _delta_list(obj, name)
    if not all(isinstance(row, dict) for row in rows):
        raise _BadDelta("wrong_type", f"'{name}' must be a list of objects")
    return rows


def _delta_str(obj: dict[str, Any], name: str) -> str:
    value = _delta_get(obj, name)
    if not isinstance(value, str) or not value:
        raise _BadDelta("wrong_type", f"'{name}' must be a non-empty string")
    return value


def _delta_strings(obj: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _delta_list(obj, name)
    if not all(isinstance(v, str) and v for v in values):
        raise _BadDelta("wrong_type", f"'{name}' must be a list of non-empty strings")
    return tuple(values)


def _delta_int(obj: dict[str, Any], name: str) -> int:
    value = _delta_get(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadDelta("wrong_type", f"'{name}' must be a non-negative integer")
    return value


def _delta_float(obj: dict[str, Any], name: str) -> float:
    value = _delta_get(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _BadDelta("wrong_type", f"'{name}' must be a finite number")
    return float(value)


def _delta_optional(obj: dict[str, Any], name: str, read: Any) -> Any:
    return None if obj.get(name) is None else read(obj, name)


def encode_pending(user_id: str, pending: PendingEvent) -> bytes:
    """A pending event as a `behaviours` value (the payload of its dead letter)."""
    return _dumps(
        {
            "user_id": user_id,
            "item_id": pending.item_id,
            "type": pending.type,
            "ts": pending.ts,
            "weight": pending.weight,
            "event_id": pending.event_id,
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
    # allow_nan=False: NaN is not JSON; a non-finite number must fail here, not downstream.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("invalid_json", f"not UTF-8: {exc.reason} at byte {exc.start}")
    depth = _nesting(text)
    if depth > MAX_JSON_DEPTH:
        return Rejected("invalid_json", f"JSON nested {depth} deep, limit {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(
            text, parse_constant=_no_constant, parse_float=_double, parse_int=_bounded_int
        )
    except _NotJson as exc:
        return Rejected("invalid_json", str(exc))
    except _TooBig as exc:
        # Only JSON can hold a number that is out of range: broken JSON after it wins.
        try:
            json.loads(text, parse_constant=str, parse_float=str, parse_int=str)
        except (ValueError, RecursionError) as broken:
            return Rejected("invalid_json", f"invalid JSON: {str(broken)[:120]}")
        return Rejected("out_of_range", str(exc))
    except json.JSONDecodeError as exc:
        return Rejected("invalid_json", f"invalid JSON: {exc.msg} at char {exc.pos}")
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4,300 digits
        return Rejected("invalid_json", f"unreadable JSON: {str(exc)[:120]}")
    if not isinstance(obj, dict):
        return Rejected("wrong_type", f"expected a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        try:  # a valid pair parses to one character; a lone half cannot be UTF-8
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return Rejected("invalid_json", "a string holds a lone UTF-16 surrogate escape")
    for name in ("text", "title"):
        field = obj.get(name)
        if isinstance(field, str) and len(field) > MAX_TEXT_BYTES // 4:
            size = len(field.encode("utf-8", "surrogatepass"))
            if size > MAX_TEXT_BYTES:
                return Rejected("too_large", f"'{name}' exceeds {MAX_TEXT_BYTES} bytes")
    return obj


#: A JSON ``\\uD800``-``\\uDFFF`` escape: half of a UTF-16 surrogate pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _NotJson(ValueError):
    pass


class _TooBig(ValueError):
    pass


def _double(literal: str) -> float:
    """A JSON float literal that fits a double (``1e400`` does not: it would be inf)."""
    value = float(literal)
    if not math.isfinite(value):
        raise _TooBig(f"number {literal[:40]} does not fit a double")
    return value


def _bounded_int(literal: str) -> int:
    """A JSON integer literal within a double's range (and Python's digit limit)."""
    if len(literal.lstrip("-")) > 308:
        raise _TooBig(f"integer of {len(literal.lstrip('-'))} digits does not fit a double")
    return int(literal)


def _no_constant(name: str) -> float:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extension, not JSON: refuse them."""
    raise _NotJson(f"{name} is not a JSON number")


def _nesting(text: str) -> int:
    """Upper bound of the JSON nesting depth (brackets in strings count too).

    Cheap and conservative: it only has to keep ``json.loads`` away from
    recursion; a legitimate record never comes close to `MAX_JSON_DEPTH`.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _text(value: str, name: str) -> str:
    """``value`` if it is real Unicode text: JSON escapes can smuggle lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid("invalid_json", f"'{name}' is not valid Unicode: {exc.reason}") from None
    return value


def _string(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise _Invalid("missing_field", f"missing '{name}'")
    value = obj[name]
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"'{name}' must be a string, got {_kind(value)}")
    return _text(value, name)


def _optional_string(obj: dict[str, Any], name: str) -> str | None:
    return None if obj.get(name) is None else _string(obj, name)


def _id_text(value: str, name: str) -> str:
    if not value.strip() or len(value) > MAX_ID_CHARS:
        raise _Invalid("wrong_type", f"'{name}' must be 1..{MAX_ID_CHARS} non-blank characters")
    return _text(value, name)


def _id(obj: dict[str, Any], name: str) -> str:
    return _id_text(_string(obj, name), name)


def _string_list(obj: dict[str, Any], name: str, check: Any) -> tuple[str, ...]:
    values = obj.get(name)
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _Invalid("wrong_type", f"'{name}' must be a list of strings")
    return tuple(dict.fromkeys(check(v, name) for v in values))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: Any, name: str) -> float:
    """A JSON number as a finite float; booleans, NaN, infinities and huge ints are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("wrong_type", f"'{name}' must be a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid("out_of_range", f"'{name}' is too large for a float") from None
    if not math.isfinite(number):
        raise _Invalid("wrong_type", f"'{name}' must be a finite number")
    return number


def _bounded(obj: dict[str, Any], name: str, low: float, high: float) -> float | None:
    if obj.get(name) is None:
        return None
    number = _number(obj[name], name)
    if not low <= number <= high:
        raise _Invalid("out_of_range", f"'{name}' {number:g} is outside [{low:g}, {high:g}]")
    return number


def _timestamp(value: Any, now: float, limits: Limits) -> float:
    """Event time: epoch seconds (number) or an ISO-8601 string with a zone."""
    if value is None:
        raise _Invalid("missing_field", "missing 'ts'")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("wrong_type", f"'ts' is not ISO-8601: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            raise _Invalid("wrong_type", "'ts' ISO-8601 string needs a time zone")
        try:
            ts = parsed.timestamp()
        except (OverflowError, ValueError):
            raise _Invalid("ts_before_epoch", f"'ts' {value[:40]!r} is out of range") from None
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("wrong_type", f"'ts' must be a number or string, got {_kind(value)}")
        try:
            ts = _number(value, "ts")
        except _Invalid as exc:
            if exc.rejected.code != "out_of_range":
                raise
            code = "ts_future" if value > 0 else "ts_before_epoch"
            raise _Invalid(code, "'ts' is out of range") from None
    if ts < limits.min_ts:
        raise _Invalid("ts_before_epoch", f"'ts' {ts:g} is before {limits.min_ts:g}")
    if ts > now + limits.max_future_skew_s:
        raise _Invalid("ts_future", f"'ts' {ts:g} is more than {limits.max_future_skew_s:g}s ahead")
    return ts


def _derived_event_id(user_id: str, item_id: str, type_: str, ts: float) -> str:
    ts = float(ts) + 0.0  # -0.0 and 0 are one instant, so one event
    digest = hashlib.sha1(f"{user_id}\x1f{item_id}\x1f{type_}\x1f{ts!r}".encode()).hexdigest()
    return "h-" + digest[:20]
