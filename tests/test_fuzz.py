"""Property-based fuzz of the codec, the processors and the core (hypothesis).

A fixed seed (``derandomize``) and a budget that keeps this file near a
minute; ``benchmarks/fuzz.py`` runs the same properties over 10,000+ records
per topic. The generators and their oracle are in `tests.fuzz_records`, the
checks in `tests.fuzz_harness`. Each ``@example`` is a case a run once found.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.behaviour import EVENT_TYPES, Behaviour, Position
from models.catalogue import Catalogue
from models.core import CoreParams, step
from models.learned import LearnedUpdater, save_artifact
from models.learned.artifact import N_GAP, WEIGHT_NAMES
from models.state import UserState
from models.update import TimeDecayUpdater
from models.window import WindowSpec
from streams import codec
from streams.codec import ItemTombstone, ItemUpdate, Rejected, Wakeup
from tests import fuzz_records as fr
from tests.fuzz_harness import run_behaviours, run_items

CFG = fr.FuzzConfig()
POS = Position("behaviours", 0, 7)
_SLOW_DATA = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]


def budget(n: int) -> settings:
    """Fixed seed, no example database, no deadline: the same run every time in CI."""
    return settings(
        max_examples=n, derandomize=True, database=None, deadline=None,
        suppress_health_check=_SLOW_DATA,
    )  # fmt: skip


def _judge(rec: fr.Fuzzed, got: object, kind: type) -> None:
    """The decoder agrees with the oracle: a reason it allows, or a value."""
    if rec.reasons:
        assert isinstance(got, Rejected), f"{rec.label}: accepted {got!r}, want {rec.reasons}"
        assert got.code in rec.reasons, f"{rec.label}: {got}, want one of {sorted(rec.reasons)}"
        assert got.message
    else:
        assert isinstance(got, kind), f"{rec.label}: {got!r} for a valid record"


# -- cases runs have found, kept as regression examples ------------------------------

EVENT = '"user_id":"u","item_id":"c1","type":"view","ts":1700000000'


def bad(topic: str, value: bytes | None, reasons: set[str], key: bytes | None = None) -> fr.Fuzzed:
    return fr.Fuzzed(topic, key, value, frozenset(reasons), "example")


def event(key: bytes | None = b"u", user: str = "u", ts: str = "1700000000") -> fr.Fuzzed:
    """A valid view of c1 by ``user`` at ``ts`` (JSON text), with no event id."""
    body = {"user_id": user, "item_id": "c1", "type": "view"}
    value = (json.dumps(body, ensure_ascii=False)[:-1] + f',"ts":{ts}}}').encode()
    identity = ("derived", user, "c1", "view", float(ts))
    return fr.Fuzzed(fr.BEHAVIOURS, key, value, frozenset(), "example", user_id=user,
                     item_id="c1", identity=identity)  # fmt: skip


def behaviour(extra: str, reasons: set[str], key: bytes | None = b"u") -> fr.Fuzzed:
    return bad(fr.BEHAVIOURS, ("{" + EVENT + extra + "}").encode(), reasons, key)


DEEP = ',"x":' + "[" * 5000 + "]" * 5000
#: Found against 7ab758d: the decoder raised on these (the batch was retried forever).
RAISED = [
    bad(fr.BEHAVIOURS, rb'{"user_id":"\ud800","item_id":"c1","type":"view","ts":0}',
        {"invalid_json"}),  # UnicodeEncodeError
    behaviour(r',"text":"\ud800"', {"invalid_json"}),  # UnicodeEncodeError
    behaviour(DEEP, {"invalid_json"}),  # RecursionError
    bad(fr.BEHAVIOURS, ('{"user_id":"u","item_id":"c1","type":"view","ts":1' + "0" * 400 + "}")
        .encode(), {"out_of_range"}, b"u"),  # OverflowError
    behaviour(',"weight":1' + "0" * 400, {"out_of_range"}),  # OverflowError
    behaviour(',"x":' + "1" * 5000, {"out_of_range"}),  # ValueError: 4,300-digit limit
]  # fmt: skip
#: Found against 7ab758d: accepted, then the user's interest vector was not finite.
CORRUPTED = [behaviour(',"weight":1e308', {"out_of_range"}),
             bad(fr.BEHAVIOURS, b'{"user_id":"u","item_id":"c1","type":"rating","ts":0,'
                 b'"rating":1e308}', {"out_of_range"}, b"u")]  # fmt: skip
#: Found in the working tree while numeric bounds landed (fixed in b62bdbc):
#: accepted, though the README says numbers must fit a double and strings must
#: be real Unicode anywhere in the record.
ACCEPTED = [
    behaviour(',"x":NaN', {"invalid_json"}),
    behaviour(',"x":-Infinity', {"invalid_json"}),
    behaviour(',"x":1e400', {"out_of_range"}),
    behaviour(',"x":1' + "0" * 400, {"out_of_range"}),
    behaviour(r',"x":"\udc00"', {"invalid_json"}),
    # Not the UTF-8 of the id, though it decodes *with replacement* to it.
    bad(fr.BEHAVIOURS, '{"user_id":"\ufffd","item_id":"c1","type":"view","ts":0}'.encode(),
        {"key_mismatch"}, b"\xff"),
]  # fmt: skip


def _examples(records: list[fr.Fuzzed]):
    def wrap(test):
        for rec in reversed(records):
            test = example(rec=rec)(test)
        return test

    return wrap


# -- decoding never raises, and agrees with the contract -----------------------------


@budget(1000)
@_examples([*RAISED, *CORRUPTED, *ACCEPTED])
@given(rec=fr.behaviours(CFG))
def test_decode_behaviour_never_raises_and_follows_the_contract(rec: fr.Fuzzed) -> None:
    got = codec.decode_behaviour(rec.key, rec.value, POS, CFG.now)
    _judge(rec, got, Behaviour)
    if isinstance(got, Behaviour):
        assert (got.user_id, got.item_id) == (rec.user_id, rec.item_id)
        assert rec.identity is not None
        assert got.ts == (rec.identity[4] if rec.identity[0] == "derived" else got.ts)
        assert math.isfinite(got.ts) and got.event_id
        if rec.event_id is not None:
            assert got.event_id == rec.event_id


ITEM_EXAMPLES = [
    bad(fr.ITEMS, rb'{"item_id":"i","title":"\udc00"}', {"invalid_json"}, b"i"),  # raised
    bad(fr.ITEMS, ('{"item_id":"i","title":"t"' + DEEP + "}").encode(), {"invalid_json"}, b"i"),
    bad(fr.ITEMS, b'{"item_id":"i","title":"t","x":NaN}', {"invalid_json"}, b"i"),
    bad(fr.ITEMS, rb'{"item_id":"i","title":"t","x":"\ud800"}', {"invalid_json"}, b"i"),
    bad(fr.ITEMS, '{"item_id":"\ufffd","title":"t"}'.encode(), {"key_mismatch"}, b"\xff"),
]


@budget(600)
@_examples(ITEM_EXAMPLES)
@given(rec=fr.items())
def test_decode_item_never_raises_and_follows_the_contract(rec: fr.Fuzzed) -> None:
    got = codec.decode_item(rec.key, rec.value)
    _judge(rec, got, ItemTombstone if rec.tombstone else ItemUpdate)
    if isinstance(got, ItemUpdate | ItemTombstone):
        assert got.item_id == rec.item_id
    if isinstance(got, ItemUpdate):
        assert got.title == rec.title


WAKEUP_EXAMPLES = [
    bad(fr.WAKEUPS, rb'{"user_id":"\ud800","snapshot":"r"}', {"invalid_json"}),  # raised
    bad(fr.WAKEUPS, ('{"user_id":"u"' + DEEP + "}").encode(), {"invalid_json"}),  # raised
    bad(fr.WAKEUPS, b'{"user_id":"u","x":Infinity}', {"invalid_json"}),
]


@budget(600)
@_examples(WAKEUP_EXAMPLES)
@given(rec=fr.wakeups(CFG))
def test_decode_wakeup_never_raises_and_follows_the_contract(rec: fr.Fuzzed) -> None:
    got = codec.decode_wakeup(rec.value)
    if rec.reasons == {"key_mismatch"}:
        # The wakeup decoder is not given the key; the processor must compare it.
        assert isinstance(got, Wakeup | Rejected)
        return
    _judge(rec, got, Wakeup)
    if isinstance(got, Wakeup):
        assert (got.user_id, got.snapshot) == (rec.user_id, rec.snapshot)


# -- the processors: never raise, every record accounted for, states finite --------


def _wakeup(key: bytes | None, user: str = "u") -> fr.Fuzzed:
    value = json.dumps({"user_id": user, "snapshot": "r1"}).encode()
    if key in (None, user.encode()):
        return fr.Fuzzed(fr.WAKEUPS, key, value, frozenset(), "example", user_id=user,
                         snapshot="r1")  # fmt: skip
    return bad(fr.WAKEUPS, value, {"key_mismatch"}, key)


@budget(200)
@example(stream=[*RAISED, *CORRUPTED, event()], cuts=[])
@example(stream=[event(), *ACCEPTED], cuts=[])
@example(  # the wakeup decoder never sees the key; a wrong one reaches another partition
    stream=[event(), _wakeup(b"u"), _wakeup(b"someone-else"), _wakeup(b""), _wakeup(None)],
    cuts=[],
)
@example(  # b"\xff" is not "\ufffd" in UTF-8: not the same user, not a duplicate
    stream=[
        event(user="\ufffd", key=None),
        bad(fr.BEHAVIOURS, event(user="\ufffd").value, {"key_mismatch"}, b"\xff"),
    ],
    cuts=[],
)
@example(  # 0 and -0.0 are one instant: one event, applied once (found in the working tree)
    stream=[event(ts="0"), event(ts="-0.0")], cuts=[]
)
@given(
    stream=fr.behaviour_streams(CFG, min_size=5, max_size=40),
    cuts=st.lists(st.integers(0, 45), max_size=3),
)
def test_behaviour_processor_accounts_for_every_record(stream: list[fr.Fuzzed], cuts) -> None:
    run_behaviours(stream, CFG, cuts)


@budget(150)
@given(
    stream=fr.item_streams(min_size=5, max_size=30), cuts=st.lists(st.integers(0, 35), max_size=3)
)
def test_item_processor_accounts_for_every_record(stream: list[fr.Fuzzed], cuts) -> None:
    run_items(stream, CFG, cuts)


# -- the core: any sequence of valid events keeps every number finite ------------------

TEXT_DIM, ITEM_DIM, HIDDEN = 16, 8, 12
ITEMS = [f"m{i}" for i in range(10)]
MISSING = ["late-0", "late-1"]  # no embedding until a batch adds one


def _random_artifact(folder: Path, scale: float) -> Path:
    rng = np.random.default_rng(11)
    shapes = {
        "text_w": (TEXT_DIM, ITEM_DIM),
        "text_b": (ITEM_DIM,),
        "text_bias_w": (TEXT_DIM,),
        "id_emb": (len(ITEMS) - 2, ITEM_DIM),
        "id_bias": (len(ITEMS) - 2,),
        "w_ih": (3 * HIDDEN, ITEM_DIM + 2 + N_GAP),
        "w_hh": (3 * HIDDEN, HIDDEN),
        "b_ih": (3 * HIDDEN,),
        "b_hh": (3 * HIDDEN,),
        "out_w": (ITEM_DIM, HIDDEN),
        "out_b": (ITEM_DIM,),
    }
    weights = {n: (scale * rng.standard_normal(shapes[n])).astype(np.float32) for n in WEIGHT_NAMES}
    save_artifact(folder, weights, ITEMS[:-2])  # the last two items are cold: text only
    return folder


@pytest.fixture(scope="module")
def updaters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("learned")
    return {
        "time-decay-3d": TimeDecayUpdater(),
        "time-decay-1s": TimeDecayUpdater(half_life_s=1.0),
        "learned": LearnedUpdater.load(_random_artifact(root / "a", 0.4)),
        "learned-saturated": LearnedUpdater.load(_random_artifact(root / "b", 3.0)),
    }


def _catalogue() -> Catalogue:
    rng = np.random.default_rng(3)
    cat = Catalogue(TEXT_DIM)
    for n, item in enumerate(ITEMS):
        vec = rng.standard_normal(TEXT_DIM).astype(np.float32)
        cat.upsert(item, vec / np.linalg.norm(vec), (f"g{n % 3}",))
    return cat


_valid_ts = st.one_of(
    st.floats(fr.MIN_TS, CFG.latest_ts, allow_subnormal=True),
    st.sampled_from([0.0, 5e-324, 1.0, CFG.latest_ts, CFG.now]),
)
_weight = st.one_of(
    st.none(),
    st.floats(-fr.MAX_ABS_WEIGHT, fr.MAX_ABS_WEIGHT, allow_subnormal=True),
    st.sampled_from([fr.MAX_ABS_WEIGHT, -fr.MAX_ABS_WEIGHT, 5e-324, -0.0]),
)
_rating = st.one_of(
    st.floats(fr.RATING_MIN, fr.RATING_MAX), st.sampled_from([fr.RATING_MIN, fr.RATING_MAX])
)


@st.composite
def valid_behaviours(draw: st.DrawFn) -> list[Behaviour]:
    """One user's events as the codec would pass them: every number within the limits."""
    n = draw(st.integers(1, 40))
    events, offset = [], 0
    for k in range(n):
        type_ = draw(st.sampled_from(sorted(EVENT_TYPES)))
        offset += draw(st.integers(0, 2))  # 0: a replay of the previous offset
        events.append(
            Behaviour(
                "u",
                draw(st.sampled_from(ITEMS + MISSING)),
                type_,
                draw(_valid_ts),
                draw(st.sampled_from([f"e{k}", "dup-a", "dup-b"])),
                draw(_weight),
                draw(_rating) if type_ == "rating" else draw(st.none() | _rating),
                draw(st.sampled_from([Position("behaviours", 0, offset), None])),
            )
        )
    return events


def _finite(state: UserState) -> None:
    assert all(np.isfinite(v).all() for v in state.vectors()), state.vectors()
    assert all(i.hidden_ts is None or math.isfinite(i.hidden_ts) for i in state.interests)
    assert all(math.isfinite(i.mass) for i in state.interests)
    assert all(math.isfinite(s) for _, s in state.top_k), state.top_k
    assert all(math.isfinite(w.weight) and math.isfinite(w.ts) for w in state.window)
    assert all(math.isfinite(p.weight) for p in state.pending)


@budget(300)
@given(
    events=valid_behaviours(),
    cuts=st.lists(st.integers(1, 40), max_size=4),
    arrivals=st.lists(st.sampled_from(MISSING), max_size=2),
    which=st.sampled_from(["time-decay-3d", "time-decay-1s", "learned", "learned-saturated"]),
)
@example(  # a run of the heaviest events at one instant, then a week later
    events=[Behaviour("u", ITEMS[k % 3], "purchase", 0.0, f"e{k}", 100.0) for k in range(40)]
    + [Behaviour("u", ITEMS[3], "dislike", CFG.latest_ts, "late", -100.0)],
    cuts=[20],
    arrivals=[],
    which="time-decay-3d",
)
def test_core_keeps_every_state_finite(updaters, events, cuts, arrivals, which) -> None:
    params = CoreParams(k=4, window=WindowSpec(max_events=6), updater=updaters[which])
    cat = _catalogue()
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    state = None
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        refresh = []
        if n < len(arrivals) and arrivals[n] not in cat:  # a missing item gets its embedding
            cat.upsert(arrivals[n], np.full(TEXT_DIM, 0.25, dtype=np.float32), ("g0",))
            refresh = [arrivals[n]]
        result = step(state, events[a:b], cat, CFG.now, params, refresh=refresh)
        state = result.state or state
        if state is not None:
            _finite(state)
        if result.delta is not None:
            scores = [s for _, s, _ in result.delta.added] + [s for _, s in result.delta.top_k]
            assert all(math.isfinite(s) for s in scores)
