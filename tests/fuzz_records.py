"""Hypothesis generators of raw records for every input topic, each with its oracle.

Shared by the property tests (``tests/test_fuzz.py``, ``tests/test_fuzz_worker.py``)
and the long run (``benchmarks/fuzz.py``). A generated `Fuzzed` record is the
bytes a producer would send plus what the README's topic contracts say must
happen to it: ``reasons`` empty means valid (applied once), otherwise the
record must reach ``dead-letters`` with one of those reason codes. The
expectation is built from the defects the generator put in, never by running
the codec; a record with several defects may get the reason of any of them.
A valid behaviour whose event id (explicit, or derived from user, item, type
and ts) was seen before for the same user is a ``duplicate``: `outcomes`
resolves that over a whole stream.

Readings of the contract encoded here (the README's topic contracts):

* values are JSON whose strings are real Unicode and whose numbers fit a
  double, anywhere in the record, ignored fields included: a lone surrogate
  escape (``"\\ud800"``) and ``NaN``/``Infinity`` are ``invalid_json``;
  ``1e400`` and integers of over 308 digits are ``out_of_range``;
* nesting deeper than `MAX_JSON_DEPTH` (the top-level object counts 1) is
  ``invalid_json``; unknown fields are otherwise ignored;
* ids are 1..256 characters, not all whitespace (a snapshot request id may be
  blank); ``event_id`` follows the same rule;
* a record without a key is accepted (the value's id decides); a key that is
  not exactly the id's UTF-8 bytes is ``key_mismatch``, on every topic;
* ``weight``, ``rating`` and ``ts`` are bounded by the default limits below
  (``out_of_range``; ``ts_before_epoch`` / ``ts_future``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

#: Contract limits (README "Topic contracts" and the default settings).
MAX_ID_CHARS = 256
MAX_TEXT_BYTES = 64 * 1024
MAX_RECORD_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
#: The longest integer literal a record may hold (README: "an integer of over 308 digits").
MAX_INT_DIGITS = 308
MAX_ABS_WEIGHT = 100.0
RATING_MIN, RATING_MAX = 0.0, 10.0
MIN_TS = 0.0
MAX_FUTURE_SKEW_S = 86400.0

EVENT_TYPES = ("view", "click", "like", "purchase", "rating", "skip", "dislike")
WAKEUP_SCHEMA = "interest-stream.wakeup/1"
#: Field names of any topic; unknown fields never use them.
KNOWN_FIELDS = frozenset(
    [
        "user_id",
        "item_id",
        "type",
        "ts",
        "rating",
        "weight",
        "text",
        "event_id",
        "title",
        "tags",
        "item_ids",
        "snapshot",
        "schema",
    ]
)

BEHAVIOURS, ITEMS, WAKEUPS = "behaviours", "items", "wakeups"


@dataclass(frozen=True)
class FuzzConfig:
    """What the generated records are measured against.

    ``now`` is the processing clock; ``slack`` keeps "too far ahead" records
    invalid when a real worker reads them up to that many seconds later.
    ``catalogue`` names items that have embeddings before the stream starts.
    """

    now: float = 1_750_000_000.0
    slack: float = 0.0
    catalogue: tuple[str, ...] = tuple(f"c{i}" for i in range(12))

    @property
    def latest_ts(self) -> float:
        return self.now + MAX_FUTURE_SKEW_S


@dataclass(frozen=True)
class Fuzzed:
    """One generated record and what the contract says about it."""

    topic: str  # BEHAVIOURS, ITEMS or WAKEUPS
    key: bytes | None
    value: bytes | None
    reasons: frozenset[str]  # empty: valid
    label: str  # the defects (or "valid"), for failure reports and tallies
    user_id: str | None = None  # behaviours, wakeups
    item_id: str | None = None  # behaviours, items
    #: Behaviours: what makes two events the same one (per user).
    identity: tuple[object, ...] | None = None
    event_id: str | None = None  # explicit id of a behaviour
    snapshot: str | None = None  # wakeups
    title: str | None = None  # items; None for a tombstone
    tombstone: bool = False

    @property
    def valid(self) -> bool:
        return not self.reasons


APPLIED = "applied"


def outcomes(stream: Sequence[Fuzzed]) -> list[frozenset[str] | str]:
    """Per record, in stream order: `APPLIED` or the dead-letter reasons it may get.

    A valid behaviour repeating an identity already applied for its user is a
    ``duplicate``; everything else is what its generator said.
    """
    seen: set[tuple[object, ...]] = set()
    result: list[frozenset[str] | str] = []
    for rec in stream:
        if not rec.valid:
            result.append(rec.reasons)
        elif rec.topic == BEHAVIOURS:
            assert rec.identity is not None
            result.append(frozenset({"duplicate"}) if rec.identity in seen else APPLIED)
            seen.add(rec.identity)
        else:
            result.append(APPLIED)
    return result


# -- JSON text with exact control over every byte -------------------------------


@dataclass(frozen=True)
class J:
    """A JSON text fragment, its nesting depth, and the reasons it alone implies."""

    text: str
    depth: int = 0
    reasons: frozenset[str] = frozenset()
    label: str = ""


def _s(value: str, ascii_only: bool = False) -> J:
    """A JSON string; lone surrogates are always escaped (they have no raw form)."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return J(json.dumps(value, ensure_ascii=True), 0, frozenset({"invalid_json"}), "surrogate")
    return J(json.dumps(value, ensure_ascii=ascii_only))


def _n(value: float | int) -> J:
    """A finite number, written so that it reads back exactly."""
    assert not isinstance(value, float) or math.isfinite(value)
    return J(repr(value) if isinstance(value, float) else str(value))


def _container(opener: str, closer: str, parts: list[str], members: Sequence[J], sep: str) -> J:
    depth = 1 + max((m.depth for m in members), default=0)
    reasons = frozenset().union(*(m.reasons for m in members))
    labels = [m.label for m in members if m.label]
    return J(opener + sep.join(parts) + closer, depth, reasons, ",".join(labels))


def _obj(members: Sequence[tuple[str, J]], sep: str = ",", colon: str = ":") -> J:
    names = [_s(name) for name, _ in members]
    parts = [n.text + colon + v.text for n, (_, v) in zip(names, members, strict=True)]
    return _container("{", "}", parts, [*names, *(v for _, v in members)], sep)


def _arr(items: Sequence[J], sep: str = ",") -> J:
    return _container("[", "]", [i.text for i in items], items, sep)


def _from_python(value: object) -> J:
    if value is None:
        return J("null")
    if isinstance(value, bool):
        return J("true" if value else "false")
    if isinstance(value, int | float):
        return _n(value)
    if isinstance(value, str):
        return _s(value)
    if isinstance(value, list):
        return _arr([_from_python(v) for v in value])
    assert isinstance(value, dict)
    return _obj([(k, _from_python(v)) for k, v in value.items()])


def _nested(depth: int, kind: str) -> J:
    """``depth`` levels of arrays or objects, built as text (thousands of levels)."""
    if kind == "array":
        text = "[" * depth + "]" * depth
    else:
        text = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    return J(text, depth)


# -- scalar strategies -----------------------------------------------------------

#: Characters chosen to trip text handling: NUL, controls, U+FFFD, BOM, line
#: separators, combining marks, right-to-left, astral plane (surrogate pairs).
_TRICKY = '\x00\x01\x1f\x7f\u00e9e\u0301\ufffd\ufeff\u2028\u2029\u202e\u05d0\u4e2d\U0001f600\\"/'
_chars = st.one_of(
    st.characters(codec="utf-8", exclude_categories=["Cs"]),
    st.sampled_from(_TRICKY),
    st.sampled_from("abcdefghijk0123456789-_.:"),
)
texts = st.text(_chars, max_size=40)
_id_core = st.text(_chars, min_size=1, max_size=16).filter(lambda s: not s.isspace())
#: Valid ids: 1..256 characters, not all whitespace (256 exactly sometimes).
ids = st.one_of(
    _id_core,
    _id_core.map(lambda s: (s * MAX_ID_CHARS)[:MAX_ID_CHARS]),
    st.sampled_from(["u", "0", "\ufffd", "e\u0301", "\U0001f600", " x ", "a" * MAX_ID_CHARS]),
)
_lone_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
_with_surrogate = st.tuples(texts, _lone_surrogate, texts).map(lambda t: "".join(t))
_blank_ids = st.sampled_from(["", " ", "\t\n", "\u3000", "\x1f", " " * 3])
_long_ids = st.integers(MAX_ID_CHARS + 1, 2 * MAX_ID_CHARS).map(lambda n: "x" * n)
_wrong_json_types = st.sampled_from(
    [J("0"), J("1.5"), J("true"), J("false"), J("[]"), J('["a"]'), J("{}"), J('{"a":1}')]
)
#: Not numbers a double can hold: JSON has no NaN/Infinity; 1e400 overflows to infinity.
_non_json_constants = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
_huge_digits = st.integers(MAX_INT_DIGITS + 1, 5000)


def _not_a_double(literal: str) -> frozenset[str]:
    """README: ``NaN``/``Infinity`` are not JSON; ``1e400``, 309+ digits do not fit a double."""
    return frozenset(
        {"invalid_json" if literal.lstrip("-") in ("NaN", "Infinity") else "out_of_range"}
    )


def _parse_time_reasons(slot: Slot) -> frozenset[str]:
    """The reasons of a slot whose literal the parser itself refuses (`_not_a_double`)."""
    text = slot.json.text.strip() if slot.json is not None else ""
    bare = text.lstrip("-")
    if bare in ("NaN", "Infinity"):
        return _not_a_double(text)
    if bare.isdigit() and len(bare) > MAX_INT_DIGITS:
        return _not_a_double(text)
    exponent = "e" in bare.lower() and bare.replace(".", "").lower().replace("e", "").isdigit()
    if exponent and math.isinf(float(text)):
        return _not_a_double(text)
    return frozenset()


def _huge_int_text(digits: int, negative: bool) -> J:
    """An integer literal of ``digits`` digits (10**400 and far beyond)."""
    return J(("-" if negative else "") + "1" + "0" * (digits - 1))


@dataclass(frozen=True)
class Slot:
    """One field of a record: its JSON (None: absent), reasons, and decoded value."""

    json: J | None
    reasons: frozenset[str] = frozenset()
    value: object = None
    label: str = ""


def _bad(j: J | None, *reasons: str, label: str) -> Slot:
    return Slot(j, frozenset(reasons) | (j.reasons if j else frozenset()), None, label)


def _good(j: J | None, value: object) -> Slot:
    return Slot(j, frozenset(), value)


@st.composite
def _id_slot(
    draw: st.DrawFn,
    name: str,
    good: bool,
    pool: st.SearchStrategy[str],
    required: bool = True,
    blank_ok: bool = False,
) -> Slot:
    """A valid id from ``pool`` or one of the ways an id field goes wrong.

    An optional id (``event_id``, ``snapshot``) is also valid absent or null;
    a snapshot request id may be blank (1..256 of any characters).
    """
    if good:
        kind = draw(st.sampled_from(["ok"] * 4 + ([] if required else ["absent", "null"])))
        if kind == "ok":
            value = draw(pool | _blank_ids.filter(bool)) if blank_ok else draw(pool)
            return _good(_s(value, draw(st.booleans())), value)
        return _good(None if kind == "absent" else J("null"), None)
    kind = draw(
        st.sampled_from(
            [
                "type",
                "long",
                "surrogate",
                *(["absent", "null"] * required),
                *["blank"] * (not blank_ok),
            ]
        )
    )
    label = f"{name}:{kind}"
    if kind in ("absent", "null"):
        return _bad(None if kind == "absent" else J("null"), "missing_field", label=label)
    if kind == "type":
        return _bad(draw(_wrong_json_types), "wrong_type", label=label)
    if kind == "blank":
        return _bad(_s(draw(_blank_ids)), "wrong_type", label=label)
    if kind == "long":
        return _bad(_s(draw(_long_ids)), "wrong_type", label=label)
    return _bad(_s(draw(_with_surrogate)), "invalid_json", label=label)


@st.composite
def _number_slot(draw: st.DrawFn, name: str, good: bool, low: float, high: float) -> Slot:
    """A number bounded to [low, high] (``out_of_range`` outside): values, edges, excesses."""
    if good:
        kind = draw(st.sampled_from(["in", "in", "in", "edge", "int", "tiny"]))
        if kind == "in":
            x = draw(st.floats(low, high, allow_nan=False, allow_subnormal=True))
        elif kind == "edge":
            x = draw(st.sampled_from([low, high, -0.0 if low <= 0 <= high else low]))
        elif kind == "int":
            n = draw(st.integers(math.ceil(low), math.floor(high)))
            return _good(_n(n), float(n))
        else:
            x = draw(st.sampled_from([5e-324, 2.2250738585072014e-308, 1e-300, low]))
        return _good(_n(x), x)
    kind = draw(st.sampled_from(["above", "under", "huge", "const", "type", "string"]))
    label = f"{name}:{kind}"
    if kind == "above":
        x = draw(st.sampled_from([1e308, 1.7976931348623157e308, 3.4e38, 1e39, 1e20, high]))
        return _bad(_n(max(x, math.nextafter(high, math.inf))), "out_of_range", label=label)
    if kind == "under":
        x = draw(st.sampled_from([-1e308, -1.7976931348623157e308, -3.4e38, -1e20, -5e-324]))
        x = x if x < low else math.nextafter(low, -math.inf)
        return _bad(_n(x), "out_of_range", label=label)
    if kind == "huge":
        text = _huge_int_text(draw(_huge_digits), draw(st.booleans()))
        return Slot(text, _not_a_double(text.text), label=label)
    if kind == "const":
        const = draw(_non_json_constants)
        return Slot(J(const), _not_a_double(const), label=f"{name}:{const}")
    if kind == "type":
        wrong = draw(st.sampled_from([J("true"), J("false"), J("[1]"), J("{}"), J('{"v":2}')]))
        return _bad(wrong, "wrong_type", label=label)
    wrong = _s(draw(st.sampled_from(["1", "", "heavy", "1e3", "NaN"])))
    return _bad(wrong, "wrong_type", label=label)


# -- timestamps ------------------------------------------------------------------


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's method)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """The inverse of `_days_from_civil`."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


_MIN_DAY, _MAX_DAY = _days_from_civil(1, 1, 1), _days_from_civil(9999, 12, 31)


@st.composite
def iso_timestamps(
    draw: st.DrawFn, low: Fraction | None = None, high: Fraction | None = None
) -> tuple[str, Fraction | None]:
    """An ISO-8601 date-time and its exact epoch seconds (None: it has no zone).

    Extended (``2023-11-14T22:13:20.5+01:00``) and basic (``20231114T221320Z``)
    forms, years 1 to 9999, offsets up to +-23:59, fractions of 1..6 digits.
    With ``low``/``high`` the instant lies within them and always has a zone.
    """
    digits = draw(st.sampled_from([0, 0, 1, 3, 6]))
    scale = 10**digits
    bounded = low is not None and high is not None
    zone = "offset" if bounded else draw(st.sampled_from(["Z", "offset", "offset", "none"]))
    offset = 0
    if zone == "offset" or (bounded and draw(st.booleans())):
        zone = "offset"
        offset = draw(st.sampled_from([1, -1])) * (
            draw(st.integers(0, 23)) * 3600 + draw(st.sampled_from([0, 30, 45, 59])) * 60
        )
    if bounded:
        ticks = draw(st.integers(math.ceil(low * scale), math.floor(high * scale)))
        local = Fraction(ticks, scale) + offset  # the wall clock the string shows
        day = math.floor(local / 86400)
    else:
        day = draw(
            st.one_of(st.integers(_MIN_DAY, _MAX_DAY), st.sampled_from([_MIN_DAY, _MAX_DAY, -1, 0]))
        )
        ticks_of_day = draw(st.integers(0, 86400 * scale - 1))
        local = Fraction(day * 86400) + Fraction(ticks_of_day, scale)
    year, month, dom = _civil_from_days(day)
    within = local - day * 86400
    whole = math.floor(within)
    frac = int((within - whole) * scale)
    hour, minute, second = whole // 3600, whole // 60 % 60, whole % 60
    basic = draw(st.booleans())
    date = f"{year:04d}{month:02d}{dom:02d}" if basic else f"{year:04d}-{month:02d}-{dom:02d}"
    clock = (
        f"{hour:02d}{minute:02d}{second:02d}" if basic else f"{hour:02d}:{minute:02d}:{second:02d}"
    )
    if digits:
        clock += draw(st.sampled_from([".", ","])) + f"{frac:0{digits}d}"
    if zone == "none":
        return f"{date}T{clock}", None
    if zone == "Z" or (offset == 0 and draw(st.booleans())):
        suffix = "Z"
    else:
        mark = "-" if offset < 0 else "+"
        h, m = abs(offset) // 3600, abs(offset) // 60 % 60
        suffix = f"{mark}{h:02d}{m:02d}" if basic else f"{mark}{h:02d}:{m:02d}"
    return f"{date}T{clock}{suffix}", local - offset


@st.composite
def _ts_slot(draw: st.DrawFn, cfg: FuzzConfig, good: bool) -> Slot:
    """``ts``: epoch seconds or ISO-8601 with a zone, from 1970 to a day past the clock."""
    latest, future = cfg.latest_ts, cfg.latest_ts + cfg.slack
    if good:
        kind = draw(st.sampled_from(["num", "num", "int", "iso", "iso", "edge"]))
        if kind == "num":
            x = draw(st.floats(MIN_TS, latest, allow_nan=False, allow_subnormal=True))
            return _good(_n(x), x)
        if kind == "int":
            n = draw(st.integers(0, int(latest)))
            return _good(_n(n), float(n))
        if kind == "iso":
            text, exact = draw(iso_timestamps(Fraction(0), Fraction(latest)))
            assert exact is not None
            return _good(_s(text), float(exact))
        x = draw(st.sampled_from([0.0, -0.0, 5e-324, 1.0, latest, 1_700_000_000.5]))
        return _good(_n(x), x)
    kind = draw(
        st.sampled_from(
            ["iso", "iso", "future", "past", "huge", "const", "type", "absent", "null", "bad-iso"]
        )
    )
    label = f"ts:{kind}"
    if kind == "iso":
        text, exact = draw(iso_timestamps())
        if exact is None:
            return _bad(_s(text), "wrong_type", label="ts:iso-no-zone")
        if exact < MIN_TS:
            return _bad(_s(text), "ts_before_epoch", label="ts:iso-past")
        # Within a real worker's slack either outcome would be right: not generated.
        assume(exact > future)
        return _bad(_s(text), "ts_future", label="ts:iso-future")
    if kind == "bad-iso":
        text, _ = draw(iso_timestamps())
        broken = draw(
            st.sampled_from(
                [
                    text[:-1] + "X",
                    "2023-13-01T00:00:00Z",
                    "2023-02-30T00:00:00Z",
                    "2023-11-14T25:00:00Z",
                    "2023-11-14T22:13:20+24:00",
                    "yesterday",
                    "",
                    "1700000000",
                    "2023-11-14T22:13:20+01:00[Europe/Paris]",
                ]
            )
        )
        return _bad(_s(broken), "wrong_type", label=label)
    if kind == "future":
        x = draw(st.sampled_from([future + 1, 1e308, 1.7976931348623157e308, 3e12]))
        return _bad(_n(max(x, math.nextafter(future, math.inf))), "ts_future", label=label)
    if kind == "past":
        x = draw(st.sampled_from([-5e-324, -1.0, -86400.0, -1e308, -1.7976931348623157e308]))
        return _bad(_n(x), "ts_before_epoch", label=label)
    if kind == "huge":
        text = _huge_int_text(draw(_huge_digits), draw(st.booleans()))
        return Slot(text, _not_a_double(text.text), label=label)
    if kind == "const":
        const = draw(_non_json_constants)
        return Slot(J(const), _not_a_double(const), label=f"ts:{const}")
    if kind == "type":
        wrong = draw(st.sampled_from([J("true"), J("[1700000000]"), J('{"s":1}')]))
        return _bad(wrong, "wrong_type", label=label)
    return _bad(None if kind == "absent" else J("null"), "missing_field", label=label)


# -- texts and lists -------------------------------------------------------------


@st.composite
def _text_slot(draw: st.DrawFn, name: str, good: bool, required: bool = False) -> Slot:
    """A string field of at most 64 KiB of UTF-8 (``text``, ``title``)."""
    if good:
        kind = draw(st.sampled_from(["ok"] * 5 + ["blank", "limit", *(["null"] * (not required))]))
        if kind == "ok":
            value = draw(texts)
            return _good(_s(value, draw(st.booleans())), value)
        if kind == "null":
            return _good(J("null"), None)
        value = " \t" if kind == "blank" else "\u00e9" * (MAX_TEXT_BYTES // 2)  # 64 KiB exactly
        return _good(_s(value, draw(st.booleans())), value)
    kind = draw(st.sampled_from(["over", "type", "surrogate", *(["absent", "null"] * required)]))
    label = f"{name}:{kind}"
    if kind == "over":
        value = "\u00e9" * (MAX_TEXT_BYTES // 2) + "x"
        return _bad(_s(value, draw(st.booleans())), "too_large", label=label)
    if kind == "type":
        return _bad(draw(_wrong_json_types), "wrong_type", label=label)
    if kind == "surrogate":
        return _bad(_s(draw(_with_surrogate)), "invalid_json", label=label)
    return _bad(None if kind == "absent" else J("null"), "missing_field", label=label)


@st.composite
def _string_list_slot(
    draw: st.DrawFn, name: str, good: bool, entry: st.SearchStrategy[str], blank_ok: bool
) -> Slot:
    """An optional list of strings (``tags``; ``item_ids``, whose entries are ids)."""
    if good:
        kind = draw(st.sampled_from(["ok", "ok", "ok", "absent", "null"]))
        if kind == "ok":
            values = draw(st.lists(entry, max_size=4))
            return _good(_arr([_s(v) for v in values]), tuple(values))
        return _good(None if kind == "absent" else J("null"), ())
    kind = draw(st.sampled_from(["type", "entry", "surrogate", *(["blank"] * (not blank_ok))]))
    label = f"{name}:{kind}"
    if kind == "type":
        wrong = draw(st.sampled_from([J('"a"'), J("1"), J('{"a":"b"}'), J("true")]))
        return _bad(wrong, "wrong_type", label=label)
    if kind == "entry":
        return _bad(_arr([_s("ok"), draw(_wrong_json_types)]), "wrong_type", label=label)
    if kind == "blank":
        return _bad(_arr([_s("ok"), _s(draw(_blank_ids))]), "wrong_type", label=label)
    return _bad(_arr([_s(draw(_with_surrogate))]), "invalid_json", label=label)


# -- unknown fields --------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(1 - 10**MAX_INT_DIGITS, 10**MAX_INT_DIGITS - 1),  # at most 308 digits
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
_field_names = st.text(_chars, max_size=10).filter(lambda n: n not in KNOWN_FIELDS)


@st.composite
def _unknown_field(draw: st.DrawFn, good: bool) -> tuple[str, J]:
    """An ignored field. Good: any JSON value, nesting to the limit, huge and extreme
    numbers. Bad: nesting past the limit (to 120,000 levels), NaN/Infinity, lone surrogates.
    """
    name = draw(_field_names)
    if good:
        kind = draw(st.sampled_from(["value", "value", "deep", "extreme"]))
        if kind == "value":
            return name, _from_python(draw(_json_values))
        if kind == "deep":  # the record's object is one level, the field may take the rest
            depth = draw(st.sampled_from([MAX_JSON_DEPTH - 1, 2, 8, 16]))
            return name, _nested(depth, draw(st.sampled_from(["array", "object"])))
        extreme = [1e308, -1e308, 5e-324, -5e-324, 1.7976931348623157e308, -0.0]
        return name, _n(draw(st.sampled_from(extreme)))
    kind = draw(st.sampled_from(["deep", "deep", "const", "huge-int", "surrogate"]))
    if kind == "deep":
        depth = draw(
            st.one_of(
                st.integers(MAX_JSON_DEPTH, MAX_JSON_DEPTH + 3),
                st.sampled_from([1000, 5000, 50_000, 120_000]),
            )
        )
        return name, _nested(depth, draw(st.sampled_from(["array", "object"])))
    if kind == "const":
        const = draw(_non_json_constants)
        return name, J(const, 0, _not_a_double(const), "extra:const")
    if kind == "huge-int":  # beyond 1e308: no double holds it
        number = _huge_int_text(draw(_huge_digits), draw(st.booleans()))
        return name, J(number.text, 0, _not_a_double(number.text), "extra:huge-int")
    text = _s(draw(_with_surrogate))
    return name, J(text.text, 0, text.reasons, "extra:surrogate")


# -- whole records -----------------------------------------------------------------


@dataclass(frozen=True)
class _Bytes:
    """A serialised record: its value and the reasons its *form* implies.

    ``whole`` is set when a whole-record defect (not UTF-8, not JSON, too
    large, no value) decides the reason alone: the fields are never read.
    """

    value: bytes | None
    reasons: frozenset[str]
    labels: list[str]
    whole: bool


_EMPTY = frozenset({"invalid_json", "missing_value"})  # empty bytes: no JSON, no value


@st.composite
def _serialise(
    draw: st.DrawFn, slots: dict[str, Slot], extra: list[tuple[str, J]], good: bool
) -> _Bytes:
    """The record's bytes; when not ``good``, with one whole-record defect."""
    members = [(n, s.json) for n, s in slots.items() if s.json is not None] + extra
    if len(members) > 1:
        members = [members[i] for i in draw(st.permutations(range(len(members))))]
    sep, colon = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    obj = _obj(members, sep, colon)
    reasons = set(obj.reasons)
    labels = [s.label for s in slots.values()] + [j.label for _, j in extra]
    if obj.depth > MAX_JSON_DEPTH:
        reasons.add("invalid_json")
        labels.append(f"deep:{obj.depth}")
    pad = draw(st.sampled_from(["", "", " ", "\n\t "]))
    raw = (pad + obj.text + pad).encode("utf-8")
    value: bytes | None = raw
    defect = None
    if not good:
        defect = draw(
            st.sampled_from(
                ["utf8", "truncated", "empty", "top-level", "too-large", "missing-value"]
            )
        )
        labels.append(defect)
    if defect == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
        at = draw(st.integers(0, len(raw)))
        value, reasons = raw[:at] + bad + raw[at:], {"invalid_json"}
    elif defect == "truncated":
        whole = raw.rstrip()
        value = whole[: draw(st.integers(0, max(0, len(whole) - 1)))]
        # A parser may stop at a bad number (or NaN) before it finds the cut.
        reasons = {"invalid_json", *obj.reasons} if value.strip() else set(_EMPTY)
    elif defect == "empty":
        value, reasons = draw(st.sampled_from([b"", b" ", b"\n"])), set(_EMPTY)
    elif defect == "top-level":
        value = draw(st.sampled_from([b"[" + raw + b"]", b"null", b"42", b'"text"', b"true"]))
        inner: set[str] = set()
        if value[:1] == b"[":  # the object inside may be unreadable for its own reasons
            inner = set(obj.reasons) | ({"invalid_json"} if obj.depth >= MAX_JSON_DEPTH else set())
            # ... among them a number no double holds, refused while parsing (a field's
            # reason, kept on its slot, not on its JSON text).
            for slot in slots.values():
                inner |= _parse_time_reasons(slot)
        reasons = {"wrong_type"} | inner
    elif defect == "too-large":
        filler = J(json.dumps("p" * (MAX_RECORD_BYTES + 1)))  # over the limit on its own
        value = _obj([*members, ("padding", filler)]).text.encode()
        reasons = {"too_large"}
    elif defect == "missing-value":
        value, reasons = None, {"missing_value"}
    if value is not None and len(value) > MAX_RECORD_BYTES:
        reasons = {"too_large"}
        if defect != "too-large":
            labels.append("too-large")
        defect = "too-large"
    return _Bytes(value, frozenset(reasons), labels, whole=defect is not None)


def _reasons(form: _Bytes, slots: dict[str, Slot], key_reasons: frozenset[str]) -> frozenset[str]:
    """All the reasons a record may be dead-lettered with (empty: it is valid).

    A record with several defects may be reported for any of them; the key is
    compared with the id only when the value is readable.
    """
    if form.whole:
        return form.reasons
    bad = form.reasons.union(*(s.reasons for s in slots.values()))
    return bad | key_reasons


@st.composite
def _key(
    draw: st.DrawFn, entity_id: object, good: bool
) -> tuple[bytes | None, frozenset[str], str]:
    """The record key: the id's UTF-8 bytes or none; else one of the ways it mismatches."""
    exact = (entity_id if isinstance(entity_id, str) else "someone").encode()
    if good:
        return (
            (exact, frozenset(), "") if draw(st.integers(0, 7)) else (None, frozenset(), "key:none")
        )
    kind = draw(st.sampled_from(["empty", "other", "broken", "replacement", "normalised"]))
    mismatch = frozenset({"key_mismatch"})
    text = str(entity_id)
    if kind == "empty":
        return b"", mismatch, "key:empty"
    if kind == "other":
        return exact + b"-other", mismatch, "key:other"
    if kind == "replacement" and "\ufffd" in text:
        # Not UTF-8, though it decodes *with replacement characters* to the id.
        return exact.replace("\ufffd".encode(), b"\xff", 1), mismatch, "key:replacement"
    if kind == "normalised" and "\u00e9" in text:  # the same text to the eye (NFD vs NFC)
        return exact.replace("\u00e9".encode(), "e\u0301".encode(), 1), mismatch, "key:nfd"
    return exact + b"\xff", mismatch, "key:broken-utf8"


def _label(labels: list[str]) -> str:
    return ",".join(x for x in labels if x) or "valid"


@st.composite
def _defects(draw: st.DrawFn, places: Sequence[str]) -> frozenset[str]:
    """Which parts of a record go wrong: none about half of the time, else one or two."""
    n = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 1, 2]))
    return frozenset(draw(st.lists(st.sampled_from(places), min_size=n, max_size=n)))


def _finish(
    draw: st.DrawFn, topic: str, slots: dict[str, Slot], entity: str, bad: frozenset[str]
) -> tuple[Fuzzed, _Bytes]:
    """Unknown fields, bytes and key around ``slots``: the record and its form."""
    extra = [draw(_unknown_field(True)) for _ in range(draw(st.integers(0, 2)))]
    if "extra" in bad:
        extra.append(draw(_unknown_field(False)))
    # One field per name: which of two equal names counts is not defined by JSON.
    extra = list(dict(extra).items())
    form = draw(_serialise(slots, extra, "form" not in bad))
    key, key_reasons, key_label = draw(_key(slots[entity].value, "key" not in bad))
    reasons = _reasons(form, slots, key_reasons)
    return Fuzzed(topic, key, form.value, reasons, _label([*form.labels, key_label])), form


# -- behaviours ------------------------------------------------------------------

_BEHAVIOUR_PLACES = (
    "user_id",
    "item_id",
    "type",
    "ts",
    "ts",
    "weight",
    "rating",
    "text",
    "event_id",
    "extra",
    "form",
    "key",
)


@st.composite
def behaviours(
    draw: st.DrawFn,
    cfg: FuzzConfig,
    users: st.SearchStrategy[str] = ids,
    event_ids: st.SearchStrategy[str] | None = None,
) -> Fuzzed:
    """One `behaviours` record, valid about half of the time.

    ``users`` and ``event_ids`` let a stream draw from small pools, so users
    get several events and event ids repeat (with different bodies).
    """
    bad = draw(_defects(_BEHAVIOUR_PLACES))
    items_ = st.one_of(st.sampled_from(cfg.catalogue), ids.map(lambda s: "n" + s[:255]))
    slots = {
        "user_id": draw(_id_slot("user_id", "user_id" not in bad, users)),
        "item_id": draw(_id_slot("item_id", "item_id" not in bad, items_)),
        "type": draw(_type_slot("type" not in bad)),
        "ts": draw(_ts_slot(cfg, "ts" not in bad)),
    }
    if "weight" in bad or draw(st.booleans()):
        slots["weight"] = draw(
            _number_slot("weight", "weight" not in bad, -MAX_ABS_WEIGHT, MAX_ABS_WEIGHT)
        )
    is_rating = slots["type"].value == "rating"
    if "rating" in bad and is_rating and draw(st.booleans()):
        slots["rating"] = _bad(
            draw(st.sampled_from([None, J("null")])), "missing_field", label="rating:missing"
        )
    elif "rating" in bad or is_rating or draw(st.integers(0, 5)) == 0:
        slots["rating"] = draw(_number_slot("rating", "rating" not in bad, RATING_MIN, RATING_MAX))
    if "text" in bad or draw(st.integers(0, 3)) == 0:
        slots["text"] = draw(_text_slot("text", "text" not in bad))
    if "event_id" in bad or draw(st.integers(0, 2)) > 0:
        pool = ids if event_ids is None else event_ids
        slots["event_id"] = draw(_id_slot("event_id", "event_id" not in bad, pool, False))
    record, _ = _finish(draw, BEHAVIOURS, slots, "user_id", bad)
    if not record.valid:
        return record
    user, item, type_, ts = (slots[n].value for n in ("user_id", "item_id", "type", "ts"))
    event_id = slots["event_id"].value if "event_id" in slots else None
    identity = (
        ("id", user, event_id) if event_id is not None else ("derived", user, item, type_, ts)
    )
    return replace(record, user_id=user, item_id=item, identity=identity, event_id=event_id)


@st.composite
def _type_slot(draw: st.DrawFn, good: bool) -> Slot:
    if good:
        type_ = draw(st.sampled_from(EVENT_TYPES))
        return _good(_s(type_, draw(st.booleans())), type_)
    kind = draw(st.sampled_from(["unknown", "unknown", "absent", "null", "type", "surrogate"]))
    label = f"type:{kind}"
    if kind == "unknown":
        wrong = draw(st.sampled_from(["teleport", "VIEW", "view ", "", "Like", "rate", "v\x00"]))
        return _bad(_s(wrong), "unknown_type", label=label)
    if kind in ("absent", "null"):
        return _bad(None if kind == "absent" else J("null"), "missing_field", label=label)
    if kind == "type":
        return _bad(draw(_wrong_json_types), "wrong_type", label=label)
    return _bad(_s("view" + chr(0xDC80)), "invalid_json", "unknown_type", label=label)


# -- items -----------------------------------------------------------------------

_ITEM_PLACES = ("item_id", "title", "text", "tags", "extra", "form", "key", "tombstone")


@st.composite
def items(draw: st.DrawFn, item_ids: st.SearchStrategy[str] = ids) -> Fuzzed:
    """One `items` record: an update, a tombstone (null value), or a broken one."""
    bad = draw(_defects(_ITEM_PLACES))
    if "tombstone" in bad or draw(st.integers(0, 7)) == 0:
        return draw(_tombstone(item_ids, "tombstone" not in bad))
    slots = {
        "item_id": draw(_id_slot("item_id", "item_id" not in bad, item_ids)),
        "title": draw(_text_slot("title", "title" not in bad, required=True)),
    }
    if "text" in bad or draw(st.booleans()):
        slots["text"] = draw(_text_slot("text", "text" not in bad))
    if "tags" in bad or draw(st.booleans()):
        slots["tags"] = draw(_string_list_slot("tags", "tags" not in bad, texts, blank_ok=True))
    record, form = _finish(draw, ITEMS, slots, "item_id", bad)
    if form.value is None:  # a null value is a tombstone on `items`, not a missing value
        return draw(_tombstone(item_ids, True))
    if not record.valid:
        return record
    return replace(record, item_id=slots["item_id"].value, title=slots["title"].value)


@st.composite
def _tombstone(draw: st.DrawFn, item_ids: st.SearchStrategy[str], good: bool) -> Fuzzed:
    """A null value: removes the key's item; without a usable key it is a bad record."""
    if good:
        item = draw(item_ids)
        return Fuzzed(
            ITEMS, item.encode(), None, frozenset(), "tombstone", item_id=item, tombstone=True
        )
    kind = draw(st.sampled_from(["no-key", "empty-key", "broken-key"]))
    if kind == "broken-key":
        # The README lists no reason for a key that is not UTF-8: any of these will do.
        reasons = frozenset({"invalid_key", "key_mismatch", "missing_field"})
        return Fuzzed(ITEMS, b"\xffitem", None, reasons, "tombstone:broken-key")
    key = None if kind == "no-key" else b""
    return Fuzzed(ITEMS, key, None, frozenset({"missing_field"}), f"tombstone:{kind}")


# -- wakeups ---------------------------------------------------------------------

_WAKEUP_PLACES = ("user_id", "item_ids", "snapshot", "extra", "form", "key")


@st.composite
def wakeups(
    draw: st.DrawFn, cfg: FuzzConfig | None = None, users: st.SearchStrategy[str] = ids
) -> Fuzzed:
    """One record of the internal wakeups topic: a re-rank and/or a snapshot request."""
    cfg = cfg or FuzzConfig()
    bad = draw(_defects(_WAKEUP_PLACES))
    slots = {"user_id": draw(_id_slot("user_id", "user_id" not in bad, users))}
    if draw(st.booleans()):
        slots["schema"] = _good(_s(WAKEUP_SCHEMA), WAKEUP_SCHEMA)
    known = st.sampled_from(cfg.catalogue) | ids
    slots["item_ids"] = draw(_string_list_slot("item_ids", "item_ids" not in bad, known, False))
    if "snapshot" in bad or draw(st.booleans()):
        good = "snapshot" not in bad
        slots["snapshot"] = draw(_id_slot("snapshot", good, ids, required=False, blank_ok=True))
    record, _ = _finish(draw, WAKEUPS, slots, "user_id", bad)
    if not record.valid:
        return record
    snapshot = slots["snapshot"].value if "snapshot" in slots else None
    return replace(record, user_id=slots["user_id"].value, snapshot=snapshot)


# -- streams ---------------------------------------------------------------------


@st.composite
def behaviour_streams(
    draw: st.DrawFn,
    cfg: FuzzConfig,
    min_size: int = 1,
    max_size: int = 60,
    wakeup_share: float = 0.2,
) -> list[Fuzzed]:
    """Behaviours and wakeups of a few users, in the order a partition would hold them.

    Users and explicit event ids come from small pools, and whole records are
    sometimes sent again, so the same event arrives with other bodies and twice.
    About ``wakeup_share`` of the records are wakeups.
    """
    users = st.sampled_from(draw(st.lists(ids, min_size=1, max_size=5, unique=True)))
    repeated = st.sampled_from(draw(st.lists(ids, min_size=1, max_size=4, unique=True)))
    event_ids = st.one_of(repeated, ids, st.uuids().map(str), st.uuids().map(str))
    wake = round(10 * wakeup_share)
    one = st.sampled_from([False] * (10 - wake) + [True] * wake).flatmap(
        lambda w: wakeups(cfg, users) if w else behaviours(cfg, users, event_ids)
    )
    stream = draw(st.lists(one, min_size=min_size, max_size=max_size))
    for _ in range(draw(st.integers(0, 3)) if stream else 0):
        stream.insert(draw(st.integers(0, len(stream))), draw(st.sampled_from(stream)))
    return stream


@st.composite
def item_streams(draw: st.DrawFn, min_size: int = 1, max_size: int = 40) -> list[Fuzzed]:
    """Items records over a small pool of ids: updates, changes, tombstones, broken ones."""
    pool = draw(st.lists(ids.map(lambda s: "f" + s[:255]), min_size=1, max_size=6, unique=True))
    return draw(st.lists(items(st.sampled_from(pool)), min_size=min_size, max_size=max_size))


def draw_examples(strategy: st.SearchStrategy, count: int, seed: int) -> list:
    """``count`` values of ``strategy``, the same for the same seed, outside a test.

    Hypothesis opens with its simplest example; that one is left out.
    """
    found: list = []

    @settings(
        max_examples=count + 1, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(value: object) -> None:
        found.append(value)

    collect()
    return found[1 : count + 1]
