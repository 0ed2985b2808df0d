"""The online topic model (`models.interest.topics`): learning, ids, labels, bytes, user masses.

Most tests run on hand-made catalogues: seeded Gaussian blobs on the unit
sphere, each blob with words of its own. The last one embeds the synthetic
workload's catalogue with the session's ONNX export and holds the online
topics to 0.9x a batch k-means (scikit-learn, the dev extra) in NMI against
the known tags.
"""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.interest.topics import (
    OnlineTopics,
    TopicLabel,
    TopicsDecodeError,
    shares,
    terms_of,
    title_of,
    update_user_topics,
)

DIM = 16
WORDS = {
    0: ["astronaut", "orbit", "starship", "rocket", "galaxy"],
    1: ["recipe", "oven", "dough", "kitchen", "garlic"],
    2: ["goalkeeper", "penalty", "stadium", "striker", "league"],
    3: ["saxophone", "trumpet", "bebop", "swing", "pianist"],
}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The model's matrix products are tiny: a many-threaded BLAS on a busy box only slows them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def blobs(n_per: int, kinds=(0, 1, 2, 3), seed: int = 0, spread: float = 0.25):
    """Items of well separated kinds: (item_id, unit vector, text, kind), kinds interleaved."""
    rng = np.random.default_rng(seed)
    centres = np.eye(DIM)[: max(WORDS) + 1]
    items = []
    for j in range(n_per):
        for kind in kinds:
            v = centres[kind] + spread * rng.standard_normal(DIM) / np.sqrt(DIM)
            words = rng.choice(WORDS[kind], size=3, replace=False)
            text = f"The {words[0]} and the {words[1]}. A story of {words[2]} {j}."
            items.append((f"k{kind}-{j}", v / np.linalg.norm(v), text, kind))
    return items


def learn(model: OnlineTopics, items) -> list[int]:
    return [model.observe(item_id, v, text) for item_id, v, text, _ in items]


def majority_topic(model: OnlineTopics, items, kind: int) -> int:
    return Counter(model.assign(v) for _, v, _, k in items if k == kind).most_common(1)[0][0]


# --------------------------------------------------------------------------- text


def test_terms_are_lower_cased_words_without_stopwords_or_digits() -> None:
    assert terms_of("The Astronaut's ORBIT in 1995, and a sci-fi galaxy!") == [
        "astronaut",
        "orbit",
        "sci-fi",
        "galaxy",
    ]


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("A lone astronaut flies. Mission control loses contact.", "A lone astronaut flies"),
        ("Toy Story (1995). Genres: Animation", "Toy Story (1995)"),
        ("Dr. Strangelove (1964). Genres: War", "Dr. Strangelove (1964)"),
        ("What now? More text.", "What now?"),
        ("no full stop at all", "no full stop at all"),
        ("x" * 300, "x" * 119 + "…"),
    ],
    ids=["sentence", "movie", "abbreviation", "question", "no-stop", "too-long"],
)  # fmt: skip
def test_title_is_the_first_sentence(text: str, title: str) -> None:
    assert title_of(text) == title


# --------------------------------------------------------------------------- learning


def test_same_seed_and_order_give_the_same_model() -> None:
    items = blobs(40)
    a, b = OnlineTopics(DIM, max_topics=4, seed=3), OnlineTopics(DIM, max_topics=4, seed=3)
    assert learn(a, items) == learn(b, items)
    assert a.to_bytes() == b.to_bytes()


def test_well_separated_kinds_get_one_topic_each_with_their_words() -> None:
    items = blobs(50)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    assert len(model.topics()) == 4
    tops = {kind: majority_topic(model, items, kind) for kind in WORDS}
    assert len(set(tops.values())) == 4
    for kind, topic in tops.items():
        assert all(model.assign(v) == topic for _, v, _, k in items if k == kind)
        label = model.label(topic)
        assert set(label.terms[:5]) == set(WORDS[kind])
        assert label.size == 50
        assert all(t.startswith("The ") and "." not in t for t in label.titles)
        assert label.text == ", ".join(label.terms[:3])


def test_topic_ids_are_stable_new_kinds_get_new_ids_and_ids_are_never_reused() -> None:
    model = OnlineTopics(DIM, max_topics=4)
    first = blobs(60, kinds=(0, 1, 2))
    learn(model, first)
    before = {kind: majority_topic(model, first, kind) for kind in (0, 1, 2)}
    seen, retired = set(model.topics()), set()
    late = blobs(60, kinds=(0, 1, 2, 3), seed=1)  # a fourth kind arrives
    for item_id, v, text, _ in late:
        model.observe("late-" + item_id, v, text)
        live = set(model.topics())
        retired |= seen - live
        assert not live & retired, "a retired topic id came back"
        seen |= live
    after = {kind: majority_topic(model, first + late, kind) for kind in (0, 1, 2, 3)}
    assert {k: after[k] for k in before} == before  # the old kinds kept their ids
    assert after[3] not in before.values() and after[3] not in retired
    assert len(set(after.values())) == 4


def test_a_catalogue_sorted_by_kind_still_finds_every_kind() -> None:
    items = sorted(blobs(60), key=lambda item: item[3])
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    tops = [majority_topic(model, items, kind) for kind in WORDS]
    assert len(set(tops)) == 4


def test_centres_adapt_as_items_arrive() -> None:
    model = OnlineTopics(DIM, max_topics=1)
    rng = np.random.default_rng(0)
    drift = [np.eye(DIM)[0] * (1 - t) + np.eye(DIM)[1] * t for t in np.linspace(0, 1, 200)]
    for i, v in enumerate(drift):
        model.observe(f"d{i}", v + 0.01 * rng.standard_normal(DIM), "drifting item")
    (share,) = model.distribution(np.eye(DIM)[1], n=1)
    assert share[0] == model.topics()[0]
    assert model.label(share[0]).size == 200


def test_observing_an_item_again_replaces_it() -> None:
    items = blobs(30)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    space = majority_topic(model, items, 0)
    cooking = majority_topic(model, items, 1)
    item_id, _, _, _ = next(item for item in items if item[3] == 0)
    v = next(v for _, v, _, k in items if k == 1)
    assert model.observe(item_id, v, "Dough and garlic. A recipe.") == cooking
    assert len(model) == len(items)
    assert model.label(space).size == 29 and model.label(cooking).size == 31
    assert model.topic_of(item_id) == cooking


def test_forget_shrinks_a_topic_and_retires_an_empty_one() -> None:
    items = blobs(20)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    jazz = majority_topic(model, items, 3)
    version = model.version
    model.forget("never-seen")
    assert model.version == version  # nothing applied, nothing changed
    jazz_items = [item_id for item_id, _, _, k in items if k == 3]
    model.forget(jazz_items[0])
    assert model.version == version + 1
    assert model.label(jazz).size == 19
    assert model.topic_of(jazz_items[0]) is None
    for item_id in jazz_items[1:]:
        model.forget(item_id)
    assert jazz not in model.topics()
    with pytest.raises(KeyError, match=f"no live topic {jazz}"):
        model.label(jazz)
    assert len(model) == 60
    new = model.observe("late-jazz", np.eye(DIM)[3], "Bebop swing. Trumpet.")
    assert new != jazz and new >= model.ids_issued - 1


def test_forgetting_everything_leaves_no_topic() -> None:
    items = blobs(5)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    for item_id, _, _, _ in items:
        model.forget(item_id)
    assert model.topics() == [] and len(model) == 0
    assert model.assign(np.eye(DIM)[0]) is None
    assert model.distribution(np.eye(DIM)[0]) == []


def test_reads_change_nothing_and_inputs_are_not_mutated() -> None:
    items = blobs(20)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    blob, version = model.to_bytes(), model.version
    q = items[0][1].copy()
    model.assign(q)
    model.distribution(q, n=4)
    [model.label(t) for t in model.topics()]
    model.topic_of(items[0][0])
    assert model.to_bytes() == blob and model.version == version
    np.testing.assert_array_equal(q, items[0][1])
    v = np.eye(DIM)[2] * 3.0
    model.observe("scaled", v, "Stadium. League.")
    np.testing.assert_array_equal(v, np.eye(DIM)[2] * 3.0)


def test_bad_vectors_and_settings_are_refused() -> None:
    model = OnlineTopics(DIM)
    with pytest.raises(ValueError, match="dims"):
        model.observe("a", np.ones(DIM + 1), "text")
    with pytest.raises(ValueError, match="zero or not finite"):
        model.observe("a", np.zeros(DIM), "text")
    with pytest.raises(ValueError, match="zero or not finite"):
        model.observe("a", np.full(DIM, np.nan), "text")
    with pytest.raises(ValueError, match="dims"):
        model.assign(np.ones(3))
    with pytest.raises(TypeError, match="unknown tuning: colour"):
        OnlineTopics(DIM, colour=1)
    with pytest.raises(ValueError):
        OnlineTopics(DIM, max_topics=0)


# --------------------------------------------------------------------------- soft assignment


def test_no_topic_before_any_item() -> None:
    model = OnlineTopics(DIM)
    assert model.assign(np.ones(DIM)) is None
    assert model.distribution(np.ones(DIM)) == []
    assert model.topics() == []


def test_distribution_is_best_first_and_sums_to_one() -> None:
    items = blobs(30)
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, items)
    space, cooking = majority_topic(model, items, 0), majority_topic(model, items, 1)
    between = np.eye(DIM)[0] * 0.6 + np.eye(DIM)[1] * 0.4
    dist = model.distribution(between, n=4)
    assert [t for t, _ in dist[:2]] == [space, cooking]
    assert sum(s for _, s in dist) == pytest.approx(1.0)
    assert [s for _, s in dist] == sorted((s for _, s in dist), reverse=True)
    assert dist[0][0] == model.assign(between)
    top2 = model.distribution(between, n=2)
    assert len(top2) == 2 and sum(s for _, s in top2) == pytest.approx(1.0)
    assert model.distribution(np.zeros(DIM)) == [] and model.assign(np.zeros(DIM)) is None
    pure = model.distribution(np.eye(DIM)[2], n=1)
    assert pure == [(majority_topic(model, items, 2), 1.0)]


# --------------------------------------------------------------------------- bytes


def test_bytes_round_trip_behaves_identically_and_keeps_learning_the_same() -> None:
    items = blobs(40)
    model = OnlineTopics(DIM, max_topics=4, seed=5, recluster_every=37)
    learn(model, items[:90])
    model.forget(items[3][0])
    copy = OnlineTopics.from_bytes(model.to_bytes())
    assert copy.to_bytes() == model.to_bytes()
    assert copy.version == model.version and copy.topics() == model.topics()
    assert [copy.label(t) for t in copy.topics()] == [model.label(t) for t in model.topics()]
    probe = [v for _, v, _, _ in items[::7]]
    assert [copy.assign(v) for v in probe] == [model.assign(v) for v in probe]
    assert [copy.distribution(v, 4) for v in probe] == [model.distribution(v, 4) for v in probe]
    rest = items[90:] + blobs(30, seed=9)  # several reruns and a forget after the copy
    assert learn(copy, rest) == learn(model, rest)
    copy.forget(rest[0][0])
    model.forget(rest[0][0])
    assert copy.to_bytes() == model.to_bytes()


def test_bytes_taken_at_any_point_of_a_sorted_stream_continue_identically() -> None:
    """Sorted by kind, items open micro-clusters and merge them between reruns: copy mid-way."""
    items = sorted(blobs(40), key=lambda item: item[3])
    model = OnlineTopics(DIM, max_topics=4)
    copies = []
    for k, (item_id, v, text, _) in enumerate(items):
        model.observe(item_id, v, text)
        copies = [(c, c.observe(item_id, v, text)) for c, _ in copies]
        assert all(topic == model.topic_of(item_id) for _, topic in copies)
        if k % 9 == 4:
            copies.append((OnlineTopics.from_bytes(model.to_bytes()), None))
    assert len(copies) == 18
    assert all(c.to_bytes() == model.to_bytes() for c, _ in copies)


def test_the_model_survives_bytes_before_its_first_item() -> None:
    empty = OnlineTopics.from_bytes(OnlineTopics(DIM, max_topics=3, seed=2).to_bytes())
    assert (empty.dim, empty.max_topics, empty.seed) == (DIM, 3, 2)
    assert empty.topics() == [] and empty.version == 0


def _replace_header(blob: bytes, old: bytes, new: bytes) -> bytes:
    size = struct.unpack_from("<I", blob, 6)[0]
    header = blob[10 : 10 + size].replace(old, new, 1)
    return blob[:6] + struct.pack("<I", len(header)) + header + blob[10 + size :]


def _corruptions(blob: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "too-short": blob[:5],
        "bad-magic": b"XXXX" + blob[4:],
        "newer-format": blob[:4] + struct.pack("<H", 99) + blob[6:],
        "truncated": blob[:-3],
        "extra-bytes": blob + b"\x00\x00",
        "header-not-json": blob[:10] + b"[" + blob[11:],
        "header-length-wrong": blob[:6] + struct.pack("<I", 10**6) + blob[10:],
        "count-mismatch": _replace_header(blob, b'"n_items":', b'"n_items":1'),
        "huge-dim": _replace_header(blob, b'"dim":16', b'"dim":1000000000'),
        "huge-budget": _replace_header(blob, b'"max_topics":4', b'"max_topics":4000000'),
        "unknown-tuning": _replace_header(blob, b'"tuning":{', b'"tuning":{"colour":1,'),
        "pickle": b"\x80\x04\x95" + bytes(40),
    }


@pytest.mark.parametrize(
    "name",
    ["empty", "too-short", "bad-magic", "newer-format", "truncated", "extra-bytes",
     "header-not-json", "header-length-wrong", "count-mismatch", "huge-dim", "huge-budget",
     "unknown-tuning", "pickle"],
)  # fmt: skip
def test_corrupt_bytes_are_a_value_error_with_a_reason(name: str) -> None:
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, blobs(10))
    with pytest.raises(ValueError, match="topic model") as caught:
        OnlineTopics.from_bytes(_corruptions(model.to_bytes())[name])
    assert isinstance(caught.value, TopicsDecodeError)


def test_flipped_bytes_never_escape_as_another_error() -> None:
    model = OnlineTopics(DIM, max_topics=4)
    learn(model, blobs(10))
    blob = bytearray(model.to_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(blob), size=200):
        broken = bytearray(blob)
        broken[pos] ^= 0xFF
        with contextlib.suppress(ValueError):  # a flipped float may still decode: fine too
            OnlineTopics.from_bytes(bytes(broken))


def test_memory_per_topic_is_bounded_and_bytes_grow_by_a_few_bytes_an_item() -> None:
    rng = np.random.default_rng(0)
    model = OnlineTopics(DIM, max_topics=2, micro_terms=20, micro_titles=2, label_titles=3)
    sizes = []
    for i in range(1200):
        v = np.eye(DIM)[i % 2] + 0.3 * rng.standard_normal(DIM)
        words = " ".join("".join(rng.choice(list("bcdfghjklmnpqrstvz"), 9)) for _ in range(6))
        model.observe(f"i{i}", v, f"Title {i}. {words}")
        if i in (599, 1199):
            sizes.append(len(model.to_bytes()))
    assert sizes[1] - sizes[0] < 600 * 10 + 2000  # 10 bytes an item, the rest bounded
    for t in model.topics():
        label = model.label(t)
        assert len(label.titles) == 3 and len(label.terms) == 10


# --------------------------------------------------------------------------- user masses


def test_update_user_topics_decays_adds_and_is_pure() -> None:
    masses = {1: 2.0, 2: 1.0}
    out = update_user_topics(masses, 3, 0.5, 0.5)
    assert out == {1: 1.0, 3: 0.5, 2: 0.5}
    assert next(iter(out)) == 1  # largest first
    assert masses == {1: 2.0, 2: 1.0}
    assert update_user_topics(masses, 1, 1.0, 1.0) == {1: 3.0, 2: 1.0}
    assert update_user_topics(masses, None, 1.0, 0.5) == {1: 1.0, 2: 0.5}


def test_negative_weights_take_mass_away_floored_at_zero() -> None:
    masses = {1: 2.0, 2: 1.0}
    assert update_user_topics(masses, 1, -0.5, 1.0) == {1: 1.5, 2: 1.0}
    assert update_user_topics(masses, 2, -5.0, 1.0) == {1: 2.0}
    assert update_user_topics(masses, 7, -1.0, 1.0) == masses  # nothing to take from


def test_user_topics_keep_only_the_largest() -> None:
    masses: dict[int, float] = {}
    for t in range(40):
        masses = update_user_topics(masses, t % 20, 1.0 + t / 100, 0.99, keep=5)
        assert len(masses) <= 5
    assert set(masses) == {15, 16, 17, 18, 19}
    assert update_user_topics({3: 1.0, 1: 1.0, 2: 1.0}, None, 0.0, 1.0, keep=2) == {1: 1.0, 2: 1.0}
    assert update_user_topics({1: 1.0}, None, 0.0, 0.0) == {}


def test_update_user_topics_refuses_non_finite_weights_and_negative_decay() -> None:
    with pytest.raises(ValueError):
        update_user_topics({}, 1, float("nan"), 0.5)
    with pytest.raises(ValueError):
        update_user_topics({}, 1, 1.0, -0.1)


def test_shares_are_of_the_whole_mass_best_first_ties_by_id() -> None:
    assert shares({4: 1.0, 2: 1.0, 9: 2.0}, n=2) == [(9, 0.5), (2, 0.25)]
    assert sum(s for _, s in shares({1: 3.0, 2: 1.0}, n=5)) == pytest.approx(1.0)
    assert shares({}) == [] and shares({1: 0.0}) == []


def test_topic_label_text_falls_back_to_a_title_then_the_id() -> None:
    assert TopicLabel(1, ("a", "b", "c", "d"), (), 3).text == "a, b, c"
    assert TopicLabel(1, (), ("Alpha",), 3).text == "Alpha"
    assert TopicLabel(7, (), (), 0).text == "topic 7"


# --------------------------------------------------------------------------- synthetic catalogue


def test_synthetic_catalogue_online_nmi_is_at_least_0_9_of_batch_kmeans(
    encoder_artifact: Path, tmp_path: Path
) -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from models.encoder.embedding_cache import cached_embeddings
    from streams.workload import TAGS, synthetic_workload

    items = synthetic_workload(users=0, items_per_tag=20, seed=3).items
    texts = [i["text"] for i in items]
    tags = [i["tags"][0] for i in items]
    vectors = cached_embeddings(texts, encoder_artifact, tmp_path / "emb")
    batch = nmi(tags, KMeans(len(TAGS), n_init=10, random_state=0).fit(vectors).labels_)
    for order in (np.random.default_rng(0).permutation(len(items)), np.arange(len(items))):
        model = OnlineTopics(vectors.shape[1], max_topics=len(TAGS))
        for i in order:
            model.observe(items[i]["item_id"], vectors[i], texts[i])
        online = nmi(tags, [model.assign(v) for v in vectors])
        assert online >= 0.9 * batch, (online, batch)
    # each tag's topic is labelled with words only that tag's texts use
    own = {t: {w for i, x in enumerate(texts) if tags[i] == t for w in terms_of(x)} for t in TAGS}
    for tag in TAGS:
        topic = Counter(model.assign(v) for v, t in zip(vectors, tags, strict=True) if t == tag)
        terms = model.label(topic.most_common(1)[0][0]).terms[:5]
        exclusive = own[tag] - set().union(*(own[t] for t in TAGS if t != tag))
        assert len(set(terms) & exclusive) >= 3, (tag, terms)
