"""The online topic model of the item catalogue, learned from item embeddings as items arrive.

Pure math, no I/O. `OnlineTopics` groups item vectors (unit vectors, e.g.
all-MiniLM-L6-v2) into at most ``max_topics`` topics and labels each one with
its distinctive terms (c-TF-IDF over the texts of its items) and its most
central titles. The shell keeps one model per deployment in the store
(`to_bytes` / `from_bytes`), so every worker sees the same topic ids.

How it learns (two levels, as river's `river.cluster.STREAMKMeans` and
`river.cluster.CluStream` do: micro-clusters online, then k-means over them):

1. **Micro-clusters** (``micro_per_topic * max_topics`` of them) quantise the
   item stream one item at a time. An item joins its nearest micro-cluster,
   whose centre moves by ``(x - c) / n``: the sequential k-means update of
   `river.cluster.KMeans`, with MacQueen's ``1 / n`` rate in place of its
   fixed ``halflife``, so a centre is the mean of its items and adapts
   without restarts. The first micro-clusters are the first items (seeded
   from the data, where river draws centres from a Gaussian). Later, an item
   the micro-clusters explain badly (squared distance over ``create_ratio``
   times what an item of a typical micro-cluster would have) opens a
   micro-cluster of its own, and the pair whose merge costs least (Ward)
   merges: a new kind of item gets micro-clusters of its own even when the
   catalogue arrives sorted by kind.
2. **Topics** are a weighted k-means over the micro-clusters (the macro
   step of STREAMKMeans / CluStream), rerun every ``recluster_every`` items
   (sooner while the catalogue is small, and ``novelty_delay`` items after an
   item opened a micro-cluster): Lloyd iterations warm-started from the
   current topics, then up to ``moves`` split-and-merge moves (split the
   topic that 2-means improves most, merge the two whose merge costs least),
   each taken only when the split gains ``1 + margin`` times what the merge
   costs. Between reruns a new micro-cluster joins the nearest topic (or
   starts one, while there are fewer than ``max_topics``).

Why this and not river's estimators as they are, measured by
``benchmarks/topic_quality.py`` on MovieLens-100K (1,682 movies, 19 topics,
NMI against the primary genre; batch k-means on the same vectors: 0.400):
`river.cluster.KMeans` and `river.cluster.STREAMKMeans` start from Gaussian
centres and on 384-d unit vectors one centre wins every item (one topic, NMI
0.0, about 1 ms an item); `river.cluster.DBSTREAM` has no topic budget (116
clusters, NMI 0.33, 1 ms an item; with a wider radius, 3 clusters);
river's online LDA over the item texts scores 0.10 at 6 ms an item (batch
LDA 0.21). This module: NMI 0.396 (0.99x batch), 70 us an item, 100,000
items in about 7 s on one core. Rerunning k-means from k-means++ seeds
(``restarts``, off by default) instead of the moves scores 0.386 and issues
twice as many topic ids; warm Lloyd alone scores 0.31.

Topic ids are stable: after a rerun an id stays with the new topic that
holds most of the old topic's items when most of the new topic's items came
from it (a majority both ways); any other new topic gets a new id, and ids
are never reused. A topic whose items are all forgotten is retired.

Memory is bounded per topic: each micro-cluster keeps its ``micro_terms``
largest term counts and its ``micro_titles`` most central titles (with a
float16 copy of their vectors, to rank them against the topic's centre). The
model also keeps which micro-cluster each item joined, under a 64-bit hash of
the item id (10 bytes an item in `to_bytes`): `forget` and a changed item
need it. A forgotten item's vector is not kept, so its micro-cluster's centre
stays where it is; its count drops by one and its term counts by ``1 / n``.

>>> m = OnlineTopics(2, max_topics=2)
>>> m.observe("a", np.array([1.0, 0.0]), "Rockets and orbits. Space opera.")
0
>>> m.observe("b", np.array([0.0, 1.0]), "Sourdough bread. A recipe.")
1
>>> m.observe("c", np.array([0.9, 0.1]), "Orbits of moons. Space science.")
0
>>> m.assign(np.array([0.2, 0.8]))
1
>>> m.label(0).text
'orbits, space, moons'
>>> m.label(0).titles
('Rockets and orbits', 'Orbits of moons')
>>> OnlineTopics.from_bytes(m.to_bytes()).label(0) == m.label(0)
True
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.catalogue import blocked_product

FORMAT_VERSION = 1
_MAGIC = b"ISTM"
_PREFIX = struct.Struct("<4sHI")

#: Settings a model may be tuned with (``OnlineTopics(dim, **tuning)``), and their defaults.
DEFAULT_TUNING: dict[str, float] = {
    "micro_per_topic": 4,  # micro-clusters per topic
    "create_ratio": 1.5,  # squared distance, relative to the expected one, that opens a micro
    "error_window": 1000,  # items the running mean error averages over
    "recluster_every": 500,  # items between two topic reruns, at most
    "novelty_delay": 16,  # items after a badly explained item (a new kind?) until a rerun
    "moves": 2,  # split-and-merge moves per rerun, at most
    "restarts": 0,  # k-means++ restarts per rerun (the alternative to moves: more id churn)
    "margin": 0.3,  # a move's gain must beat its cost by this share; so must a restart
    "micro_terms": 80,  # term counts kept per micro-cluster
    "micro_titles": 3,  # central titles kept per micro-cluster
    "label_terms": 10,  # terms in a `TopicLabel`
    "label_titles": 10,  # titles in a `TopicLabel`
    "temperature": 0.2,  # `distribution`: softness, relative to the topics' spread
}
_MAY_BE_ZERO = ("margin", "moves", "restarts")
_INT_TUNING = set(DEFAULT_TUNING) - {"create_ratio", "margin", "temperature"}

# English function words, plus the words that carry no topic in an item text.
# fmt: off
STOPWORDS = frozenset((
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "either",
    "else", "ever", "every", "few", "for", "from", "further", "get", "gets", "got", "had", "has",
    "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how",
    "however", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "least", "less",
    "let", "like", "made", "make", "many", "may", "me", "might", "more", "most", "much", "must",
    "my", "myself", "neither", "no", "nor", "not", "now", "of", "off", "often", "on", "once",
    "one", "only", "or", "other", "others", "our", "ours", "ourselves", "out", "over", "own",
    "per", "quite", "rather", "same", "shall", "she", "should", "since", "so", "some", "still",
    "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
    "these", "they", "this", "those", "though", "through", "thus", "to", "too", "under", "until",
    "up", "upon", "us", "very", "via", "was", "we", "were", "what", "when", "where", "whether",
    "which", "while", "who", "whom", "whose", "why", "will", "with", "within", "without", "would",
    "yet", "you", "your", "yours", "yourself", "yourselves",
))
# fmt: on
_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_ABBREVIATIONS = frozenset(
    ("mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "mt", "ft", "vol", "no", "prof", "gen", "lt",
     "sgt", "capt", "col", "rev", "co", "inc", "ltd")
)  # fmt: skip
_TITLE_CHARS = 120
_MAX_DIM = 1 << 16
_MAX_MICROS = 65535  # an item's micro-cluster is a uint16 row in `OnlineTopics.to_bytes`


def terms_of(text: str) -> list[str]:
    """The terms of a text: lower-cased runs of letters, stopwords and 1-letter words dropped.

    Digits are dropped too (release years would otherwise label movie topics),
    and a final possessive ``'s`` is cut.

    >>> terms_of("Mr. Holland's Opus (1995). Genres: Drama, Children's")
    ['mr', 'holland', 'opus', 'genres', 'drama', 'children']
    """
    out = []
    for token in _TOKEN.findall(text.lower()):
        if token.endswith(("'s", "’s")):
            token = token[:-2]
        if len(token) > 1 and token not in STOPWORDS:
            out.append(token)
    return out


def title_of(text: str) -> str:
    """The first sentence of an item text (its title), at most 120 characters.

    A full stop after an abbreviation or an initial does not end the sentence.

    >>> title_of("Mr. Holland's Opus (1995). Genres: Drama")
    "Mr. Holland's Opus (1995)"
    >>> title_of("E.T. the Extra-Terrestrial (1982). Genres: Children's")
    'E.T. the Extra-Terrestrial (1982)'
    """
    text = text.strip()
    for match in _SENTENCE_END.finditer(text):
        head = text[: match.start()].rstrip()
        words = head.split()
        if not words:
            continue
        last = words[-1].strip("()[]\"'").lower()
        if match.group() == "." and (len(last) <= 1 or "." in last or last in _ABBREVIATIONS):
            continue
        text = head + (match.group() if match.group() in "!?" else "")
        break
    return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1].rstrip() + "…"


def item_key(item_id: str) -> int:
    """The 64-bit key the model stores an item under (blake2b of its id)."""
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class TopicLabel:
    """What a topic is about, readable.

    Attributes
    ----------
    topic_id
        The topic.
    terms
        Its most distinctive terms (c-TF-IDF), best first.
    titles
        The titles of its most central items, best first.
    size
        Items currently assigned to it.
    """

    topic_id: int
    terms: tuple[str, ...]
    titles: tuple[str, ...]
    size: int

    @property
    def text(self) -> str:
        """A short label: the three best terms, else the best title.

        >>> TopicLabel(3, ("astronaut", "orbit", "starship", "moon"), (), 12).text
        'astronaut, orbit, starship'
        >>> TopicLabel(4, (), ("Toy Story (1995)",), 1).text
        'Toy Story (1995)'
        """
        if self.terms:
            return ", ".join(self.terms[:3])
        return self.titles[0] if self.titles else f"topic {self.topic_id}"


class TopicsDecodeError(ValueError):
    """Bytes that are not a topic model this code can read."""


class _Micro:
    """One micro-cluster's text side (its centre and count live in the model's arrays)."""

    __slots__ = ("cand_keys", "cand_titles", "cand_vecs", "mid", "terms", "tokens", "topic")

    def __init__(self, mid: int, topic: int) -> None:
        self.mid = mid
        self.topic = topic
        self.terms: dict[str, float] = {}
        self.tokens = 0.0  # all term mass seen (kept or pruned), for c-TF-IDF's class size
        self.cand_keys: list[int] = []
        self.cand_titles: list[str] = []
        self.cand_vecs = np.zeros((0, 0), dtype=np.float16)


class OnlineTopics:
    """Topics of a stream of item vectors, labelled by the item texts.

    Parameters
    ----------
    dim
        Width of the item vectors.
    max_topics
        The number of topics once the catalogue has enough items (fewer
        before). 32 suits a catalogue of tens of thousands of items.
    seed
        Seeds the k-means++ draws of the reruns (2-means of a split, restarts):
        with the same seed and the same input order the model is the same.
    **tuning
        Any of `DEFAULT_TUNING` (see the comments there).

    Attributes
    ----------
    tuning
        Every tuning value, defaults filled in.
    version
        Observe / forget calls applied.
    ids_issued
        Topic ids handed out so far.
    """

    def __init__(self, dim: int, *, max_topics: int = 32, seed: int = 0, **tuning: float) -> None:
        if not (1 <= dim <= _MAX_DIM and max_topics >= 1):
            raise ValueError(
                f"dim must be in 1..{_MAX_DIM} and max_topics >= 1, got {dim} and {max_topics}"
            )
        unknown = set(tuning) - set(DEFAULT_TUNING)
        if unknown:
            raise TypeError(f"unknown tuning: {', '.join(sorted(unknown))}")
        self.dim, self.max_topics, self.seed = int(dim), int(max_topics), int(seed)
        self.tuning = {
            k: (int(v) if k in _INT_TUNING else float(v))
            for k, v in {**DEFAULT_TUNING, **tuning}.items()
        }
        if any(v <= 0 for k, v in self.tuning.items() if k not in _MAY_BE_ZERO):
            raise ValueError(f"tuning values must be > 0: {self.tuning}")
        self._capacity = self.max_topics * int(self.tuning["micro_per_topic"])
        if self._capacity > _MAX_MICROS:
            raise ValueError(f"max_topics * micro_per_topic must be <= {_MAX_MICROS}")
        rows = min(self._capacity + 1, 64)  # grown on demand up to capacity + 1
        self._centres = np.zeros((rows, self.dim), dtype=np.float32)
        self._counts = np.zeros(rows, dtype=np.float64)
        self._micros: list[_Micro] = []
        self._rows: dict[int, int] = {}  # micro id -> row
        self._items: dict[int, int] = {}  # item key -> micro id (maybe merged away: _alias)
        self._alias: dict[int, int] = {}  # merged micro id -> the one it merged into
        self._next_micro = 0
        self._next_topic = 0
        self._version = 0
        self._since = 0  # items since the last rerun
        self._novel = -1  # items since an item opened a micro-cluster after the last rerun (or -1)
        self._reruns = 0
        self._error = 0.0  # running estimate of an item's squared distance to its micro's mean
        self._error_n = 0
        self._view: _View | None = None
        self._labels: dict[int, TopicLabel] | None = None

    # -- learning ---------------------------------------------------------------------------

    def observe(self, item_id: str, vector: np.ndarray, text: str) -> int:
        """Learn from one item (new, or with a new vector or text); its topic id after it."""
        x = _unit(vector, self.dim, item_id)
        key = item_key(item_id)
        if key in self._items:
            self._drop(key)
        terms = Counter(terms_of(text))
        title = title_of(text)
        m = len(self._micros)
        row, d2 = -1, math.inf
        if m:
            dist = self._sq_norms(m) - 2.0 * (self._centres[:m] @ x) + 1.0
            row = int(np.argmin(dist))
            d2 = max(float(dist[row]), 0.0)
        full = m >= self._capacity
        # An item at squared distance d2 from the mean of n items of variance v is at
        # v * (1 + 1 / n) on average: d2 * n / (n + 1) estimates v whatever the n.
        n = float(self._counts[row]) if m else 0.0
        if not full and m:
            self._learn_error(d2 * n / (n + 1.0))
        if not full or d2 > self.tuning["create_ratio"] * self._error * (1.0 + 1.0 / n):
            row = self._new_micro(x)
            self._add_text(row, x, key, terms, title)
            mid = self._micros[row].mid
            if len(self._micros) > self._capacity:
                self._novel = max(self._novel, 0)
                self._merge_closest()
        else:
            self._learn_error(d2 * n / (n + 1.0))
            self._counts[row] += 1.0
            self._centres[row] += (x - self._centres[row]) / np.float32(self._counts[row])
            self._add_text(row, x, key, terms, title)
            mid = self._micros[row].mid
        self._items[key] = mid
        self._changed()
        self._since += 1
        if self._novel >= 0:
            self._novel += 1
        if self._since >= self._rerun_interval() or self._novel >= self.tuning["novelty_delay"]:
            self._rerun()
        return self._micros[self._rows[self._resolve(self._items[key])]].topic

    def forget(self, item_id: str) -> None:
        """An item left the catalogue; an item the model never saw changes nothing."""
        key = item_key(item_id)
        if key in self._items:
            self._drop(key)
            self._changed()

    # -- reading ----------------------------------------------------------------------------

    def assign(self, vector: np.ndarray) -> int | None:
        """The nearest topic of any vector (None before any topic, or for a zero vector)."""
        q = _direction(vector, self.dim)
        view = self._topic_view()
        if q is None or not view.ids:
            return None
        return view.ids[int(np.argmax(view.centres @ q - 0.5 * view.sq_norms))]

    def distribution(self, vector: np.ndarray, n: int = 3) -> list[tuple[int, float]]:
        """The ``n`` likeliest topics of any vector, with shares summing to 1, best first.

        Share of topic t ∝ exp(-(d_t² - d_min²) / (temperature * spread)), d_t
        the distance of the vector's direction to the topic's centre and spread
        the items' mean squared distance to their own topic's centre; ties go
        to the lower topic id. ``[]`` for a zero vector or before any topic.
        """
        return self.distribution_many(np.asarray(vector).reshape(1, -1), n)[0]

    def distribution_many(self, vectors: np.ndarray, n: int = 3) -> list[list[tuple[int, float]]]:
        """`distribution` of each row of ``vectors`` ([m, dim]) in one product."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors have shape {v.shape}, want [m, {self.dim}]")
        norms = np.linalg.norm(v, axis=1)
        if not np.isfinite(norms).all():
            raise ValueError("vector is not finite")
        out: list[list[tuple[int, float]]] = [[] for _ in range(len(v))]
        view = self._topic_view()
        ok = norms > 0.0
        if not view.ids or n < 1 or not ok.any():
            return out
        q = v[ok] / norms[ok, None]
        d2 = 1.0 - 2.0 * blocked_product(q, view.centres) + view.sq_norms  # as in any batch
        logits = -(d2 - d2.min(axis=1, keepdims=True)) / (self.tuning["temperature"] * view.spread)
        # view.ids ascend: a stable sort breaks ties by topic id.
        order = np.argsort(-logits, axis=1, kind="stable")[:, :n]
        weights = np.exp(np.take_along_axis(logits, order, axis=1))
        weights /= weights.sum(axis=1, keepdims=True)  # each row as its own sum would
        for row, best, shares_ in zip(
            np.flatnonzero(ok).tolist(), order.tolist(), weights.tolist(), strict=True
        ):
            out[row] = [(view.ids[i], w) for i, w in zip(best, shares_, strict=True)]
        return out

    def label(self, topic_id: int) -> TopicLabel:
        """Terms, central titles and size of a live topic (KeyError for any other id)."""
        if self._labels is None:
            self._labels = self._all_labels()
        try:
            return self._labels[topic_id]
        except KeyError:
            raise KeyError(f"no live topic {topic_id} (live: {self.topics()})") from None

    def topics(self) -> list[int]:
        """The live topic ids, ascending."""
        return list(self._topic_view().ids)

    def topic_of(self, item_id: str) -> int | None:
        """The topic an observed item is in now (None for an item the model does not hold)."""
        mid = self._items.get(item_key(item_id))
        return None if mid is None else self._micros[self._rows[self._resolve(mid)]].topic

    def __len__(self) -> int:
        """Items the model holds."""
        return len(self._items)

    @property
    def ids_issued(self) -> int:
        """Topic ids handed out so far: ids are 0 to this minus one, the next new topic gets it."""
        return self._next_topic

    @property
    def version(self) -> int:
        """Observe / forget calls applied (a forget of an unknown item is not)."""
        return self._version

    # -- bytes ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole model as explicit bytes (no pickle).

        Layout (little-endian)::

            b"ISTM" | u16 format version | u32 header length | header (UTF-8 JSON)
                    | micro centres (float32 [m, dim]) | micro counts (float64 [m])
                    | title vectors (float16 [c, dim]) | item keys (uint64 [n])
                    | item micro-cluster rows (uint16 [n])

        ``c`` and ``n`` are given by the header. The items are written with
        the row of the micro-cluster they are in now (merges resolved).
        """
        m = len(self._micros)
        header = {
            "dim": self.dim,
            "max_topics": self.max_topics,
            "seed": self.seed,
            "tuning": self.tuning,
            "version": self._version,
            "next_micro": self._next_micro,
            "next_topic": self._next_topic,
            "since": self._since,
            "novel": self._novel,
            "reruns": self._reruns,
            "error": self._error,
            "error_n": self._error_n,
            "micros": [
                [
                    mc.mid,
                    mc.topic,
                    mc.tokens,
                    [[t, c] for t, c in mc.terms.items()],
                    [[k, t] for k, t in zip(mc.cand_keys, mc.cand_titles, strict=True)],
                ]
                for mc in self._micros
            ],
            "n_items": len(self._items),
        }
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        cand = [mc.cand_vecs for mc in self._micros if len(mc.cand_keys)]
        parts = [
            _PREFIX.pack(_MAGIC, FORMAT_VERSION, len(raw)),
            raw,
            np.ascontiguousarray(self._centres[:m], dtype="<f4").tobytes(),
            np.ascontiguousarray(self._counts[:m], dtype="<f8").tobytes(),
            np.ascontiguousarray(
                np.concatenate(cand) if cand else np.zeros((0, self.dim)), dtype="<f2"
            ).tobytes(),
            np.fromiter(self._items.keys(), dtype="<u8", count=len(self._items)).tobytes(),
            np.fromiter(
                (self._rows[self._resolve(mid)] for mid in self._items.values()),
                dtype="<u2",
                count=len(self._items),
            ).tobytes(),
        ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> OnlineTopics:
        """A model from `to_bytes`; `TopicsDecodeError` (a ValueError) for anything else."""
        data = bytes(data)
        if len(data) < _PREFIX.size:
            raise TopicsDecodeError("topic model bytes too short")
        magic, version, size = _PREFIX.unpack_from(data)
        if magic != _MAGIC:
            raise TopicsDecodeError("not a topic model (bad magic)")
        if version != FORMAT_VERSION:
            raise TopicsDecodeError(
                f"unknown topic model format {version} (this code reads {FORMAT_VERSION})"
            )
        try:
            return cls._decode(
                json.loads(data[_PREFIX.size : _PREFIX.size + size]),
                memoryview(data)[_PREFIX.size + size :],
            )
        except TopicsDecodeError as exc:
            raise TopicsDecodeError(f"corrupt topic model: {exc}") from None
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            RecursionError,
            OverflowError,
        ) as exc:
            raise TopicsDecodeError(f"corrupt topic model: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _decode(cls, h: dict[str, Any], body: memoryview) -> OnlineTopics:
        model = cls(h["dim"], max_topics=h["max_topics"], seed=h["seed"], **h["tuning"])
        d, micros, n_items = model.dim, h["micros"], int(h["n_items"])
        m = len(micros)
        if m > model._capacity:
            raise TopicsDecodeError(f"{m} micro-clusters, more than the model's {model._capacity}")
        n_cand = sum(len(mc[4]) for mc in micros)
        sizes = [4 * m * d, 8 * m, 2 * n_cand * d, 8 * n_items, 2 * n_items]
        if len(body) != sum(sizes):
            raise TopicsDecodeError(f"array section is {len(body)} bytes, header says {sum(sizes)}")
        arrays, pos = [], 0
        for size, dtype in zip(sizes, ("<f4", "<f8", "<f2", "<u8", "<u2"), strict=True):
            arrays.append(np.frombuffer(body[pos : pos + size], dtype=dtype))
            pos += size
        centres, counts, cand, keys, rows = arrays
        if not (np.isfinite(centres).all() and np.isfinite(counts).all() and (counts > 0).all()):
            raise TopicsDecodeError("micro-cluster centres or counts not finite and positive")
        model._reserve(m)
        model._centres[:m] = centres.reshape(m, d)
        model._counts[:m] = counts
        cand = cand.reshape(n_cand, d).astype(np.float16)
        at = 0
        for row, (mid, topic, tokens, terms, cands) in enumerate(micros):
            mc = _Micro(int(mid), int(topic))
            mc.tokens = float(tokens)
            mc.terms = {str(t): float(c) for t, c in terms}
            mc.cand_keys = [int(k) for k, _ in cands]
            mc.cand_titles = [str(t) for _, t in cands]
            mc.cand_vecs = cand[at : at + len(cands)].copy()
            at += len(cands)
            model._micros.append(mc)
            model._rows[mc.mid] = row
        if len(model._rows) != m or (n_items and int(rows.max()) >= m):
            raise TopicsDecodeError("duplicate micro-cluster ids, or items in rows beyond them")
        mids = [mc.mid for mc in model._micros]
        model._items = {k: mids[r] for k, r in zip(keys.tolist(), rows.tolist(), strict=True)}
        if len(model._items) != n_items:
            raise TopicsDecodeError("an item key appears twice")
        if not np.array_equal(np.bincount(rows, minlength=m), counts):
            raise TopicsDecodeError("micro-cluster counts do not match the items in them")
        model._next_micro, model._next_topic = int(h["next_micro"]), int(h["next_topic"])
        if any(
            mc.mid >= model._next_micro or mc.topic >= model._next_topic for mc in model._micros
        ):
            raise TopicsDecodeError("a micro-cluster or topic id beyond the model's counters")
        model._version, model._since, model._reruns = (
            int(h["version"]),
            int(h["since"]),
            int(h["reruns"]),
        )
        model._error, model._error_n = float(h["error"]), int(h["error_n"])
        model._novel = int(h["novel"])
        return model

    # -- internals: micro-clusters ----------------------------------------------------------

    def _reserve(self, rows: int) -> None:
        if rows > len(self._counts):
            grown = min(max(rows, 2 * len(self._counts)), self._capacity + 1)
            self._centres = np.concatenate(
                [self._centres, np.zeros((grown - len(self._counts), self.dim), np.float32)]
            )
            self._counts = np.concatenate([self._counts, np.zeros(grown - len(self._counts))])

    def _sq_norms(self, m: int) -> np.ndarray:
        c = self._centres[:m]
        return np.einsum("ij,ij->i", c, c)

    def _learn_error(self, d2: float) -> None:
        self._error_n += 1
        rate = max(1.0 / self._error_n, 1.0 / self.tuning["error_window"])
        self._error += rate * (d2 - self._error)

    def _new_micro(self, x: np.ndarray) -> int:
        view = self._topic_view()
        if len(view.ids) < self.max_topics:
            topic = self._next_topic
            self._next_topic += 1
        else:
            topic = view.ids[int(np.argmax(view.centres @ x - 0.5 * view.sq_norms))]
        row = len(self._micros)
        self._reserve(row + 1)
        micro = _Micro(self._next_micro, topic)
        micro.cand_vecs = np.zeros((0, self.dim), dtype=np.float16)
        self._next_micro += 1
        self._centres[row] = x
        self._counts[row] = 1.0
        self._micros.append(micro)
        self._rows[micro.mid] = row
        return row

    def _add_text(self, row: int, x: np.ndarray, key: int, terms: Counter, title: str) -> None:
        mc = self._micros[row]
        for term, count in terms.items():
            mc.terms[term] = mc.terms.get(term, 0.0) + count
        mc.tokens += sum(terms.values())
        if len(mc.terms) > 2 * self.tuning["micro_terms"]:
            mc.terms = _top_terms(mc.terms, self.tuning["micro_terms"])
        vecs = np.concatenate([mc.cand_vecs, x[None].astype(np.float16)])
        self._keep_central(mc, [*mc.cand_keys, key], [*mc.cand_titles, title], vecs, row)

    def _keep_central(
        self, mc: _Micro, keys: list[int], titles: list[str], vecs: np.ndarray, row: int
    ) -> None:
        keep = int(self.tuning["micro_titles"])
        if len(keys) > keep:
            score = vecs.astype(np.float32) @ self._centres[row]
            order = sorted(range(len(keys)), key=lambda i: (-score[i], keys[i]))[:keep]
            keys = [keys[i] for i in order]
            titles = [titles[i] for i in order]
            vecs = vecs[order]
        mc.cand_keys, mc.cand_titles, mc.cand_vecs = keys, titles, vecs

    def _merge_closest(self) -> None:
        """Merge the two micro-clusters whose merge raises the squared error least (Ward)."""
        m = len(self._micros)
        c = self._centres[:m].astype(np.float64)
        n = self._counts[:m]
        sq = np.einsum("ij,ij->i", c, c)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0)
        cost = d2 * (n[:, None] * n[None, :]) / (n[:, None] + n[None, :])
        np.fill_diagonal(cost, np.inf)
        a, b = divmod(int(np.argmin(cost)), m)
        if n[b] > n[a] or (n[b] == n[a] and b < a):
            a, b = b, a
        keep, gone = self._micros[a], self._micros[b]
        total = n[a] + n[b]
        self._centres[a] = ((n[a] * c[a] + n[b] * c[b]) / total).astype(np.float32)
        self._counts[a] = total
        for term, count in gone.terms.items():
            keep.terms[term] = keep.terms.get(term, 0.0) + count
        keep.terms = _top_terms(keep.terms, self.tuning["micro_terms"])
        keep.tokens += gone.tokens
        self._keep_central(
            keep,
            keep.cand_keys + gone.cand_keys,
            keep.cand_titles + gone.cand_titles,
            np.concatenate([keep.cand_vecs, gone.cand_vecs]),
            a,
        )
        self._alias[gone.mid] = keep.mid
        self._delete_row(b)

    def _delete_row(self, row: int) -> None:
        last = len(self._micros) - 1
        gone = self._micros[row]
        del self._rows[gone.mid]
        if row != last:
            moved = self._micros[last]
            self._micros[row] = moved
            self._centres[row] = self._centres[last]
            self._counts[row] = self._counts[last]
            self._rows[moved.mid] = row
        self._micros.pop()
        self._counts[last] = 0.0

    def _resolve(self, mid: int) -> int:
        while mid in self._alias:
            mid = self._alias[mid]
        return mid

    def _drop(self, key: int) -> None:
        row = self._rows[self._resolve(self._items.pop(key))]
        mc, n = self._micros[row], self._counts[row]
        if n <= 1.0:
            self._delete_row(row)
            return
        keep = (n - 1.0) / n
        mc.terms = {t: c * keep for t, c in mc.terms.items()}
        mc.tokens *= keep
        self._counts[row] = n - 1.0
        if key in mc.cand_keys:
            i = mc.cand_keys.index(key)
            mc.cand_keys = mc.cand_keys[:i] + mc.cand_keys[i + 1 :]
            mc.cand_titles = mc.cand_titles[:i] + mc.cand_titles[i + 1 :]
            mc.cand_vecs = np.delete(mc.cand_vecs, i, axis=0)

    def _changed(self) -> None:
        self._version += 1
        self._view = None
        self._labels = None

    # -- internals: topics ------------------------------------------------------------------

    def _rerun_interval(self) -> int:
        return max(self.max_topics, min(int(self.tuning["recluster_every"]), len(self._items) // 4))

    def _rerun(self) -> None:
        """Topics again from the micro-clusters: warm Lloyd, then split-and-merge moves."""
        self._since, self._novel = 0, -1
        self._reruns += 1
        if self._alias:  # point every item at a live micro-cluster, so the aliases can go
            self._items = {k: self._resolve(mid) for k, mid in self._items.items()}
            self._alias.clear()
        m = len(self._micros)
        if m == 0:
            return
        x = self._centres[:m].astype(np.float64)
        w = self._counts[:m].copy()
        k = min(self.max_topics, m)
        old = np.array([mc.topic for mc in self._micros])
        view = self._topic_view()
        labels, inertia = _lloyd(x, w, np.asarray(view.centres, dtype=np.float64))
        rng = np.random.default_rng([self.seed, self._reruns])
        best_labels, best = labels, inertia * (1.0 - self.tuning["margin"])
        for _ in range(int(self.tuning["restarts"])):
            fresh, fresh_inertia = _lloyd(x, w, _kmeanspp(x, w, k, rng))
            if fresh_inertia < best:
                best_labels, best = fresh, fresh_inertia
        memo: dict[bytes, tuple[float, np.ndarray]] = {}
        for _ in range(int(self.tuning["moves"])):
            moved = _split_merge(x, w, best_labels, k, rng, self.tuning["margin"], memo)
            if moved is None:
                break
            best_labels = moved
        for mc, topic in zip(self._micros, self._match(best_labels, old, w), strict=True):
            mc.topic = topic
        self._view = None
        self._labels = None

    def _match(self, labels: np.ndarray, old: np.ndarray, w: np.ndarray) -> list[int]:
        """Topic ids for new clusters: an old id where the majority holds both ways, else new."""
        clusters = sorted(set(labels.tolist()))
        olds = sorted(set(old.tolist()))
        overlap = np.zeros((len(clusters), len(olds)))
        ci = {c: i for i, c in enumerate(clusters)}
        oi = {t: i for i, t in enumerate(olds)}
        for lab, t, weight in zip(labels.tolist(), old.tolist(), w.tolist(), strict=True):
            overlap[ci[lab], oi[t]] += weight
        new_mass, old_mass = overlap.sum(1), overlap.sum(0)
        ids: dict[int, int] = {}
        used: set[int] = set()
        pairs = sorted(
            (-overlap[i, j], i, j)
            for i in range(len(clusters))
            for j in range(len(olds))
            if overlap[i, j] > 0
        )
        for neg, i, j in pairs:
            if i in ids or olds[j] in used:
                continue
            if -neg > 0.5 * new_mass[i] and -neg > 0.5 * old_mass[j]:
                ids[i] = olds[j]
                used.add(olds[j])
        for i in sorted(range(len(clusters)), key=lambda i: (-new_mass[i], i)):
            if i not in ids:
                ids[i] = self._next_topic
                self._next_topic += 1
        return [ids[ci[lab]] for lab in labels.tolist()]

    def _topic_view(self) -> _View:
        if self._view is None:
            m = len(self._micros)
            ids = sorted({mc.topic for mc in self._micros})
            index = {t: i for i, t in enumerate(ids)}
            members = np.zeros((len(ids), m))
            rows = [index[mc.topic] for mc in self._micros]
            members[rows, np.arange(m)] = self._counts[:m]
            mass = members.sum(1)
            c = self._centres[:m].astype(np.float64)
            centres = (members @ c) / mass[:, None] if ids else np.zeros((0, self.dim))
            sq = np.einsum("ij,ij->i", centres, centres)
            # mean squared distance of an item to its topic centre: 1 - |centre|^2 for unit items
            spread = float(max(1.0 - (mass @ sq) / mass.sum(), 1e-6)) if ids else 1.0
            self._view = _View(ids, index, centres, sq, mass, spread)
        return self._view

    def _all_labels(self) -> dict[int, TopicLabel]:
        view = self._topic_view()
        counts: list[dict[str, float]] = [{} for _ in view.ids]
        tokens = np.zeros(len(view.ids))
        everywhere: dict[str, float] = {}
        for mc in self._micros:
            i = view.index[mc.topic]
            tokens[i] += mc.tokens
            for term, c in mc.terms.items():
                counts[i][term] = counts[i].get(term, 0.0) + c
                everywhere[term] = everywhere.get(term, 0.0) + c
        avg = float(tokens.sum()) / max(len(view.ids), 1)
        units = view.centres / np.maximum(np.sqrt(view.sq_norms), 1e-12)[:, None]
        labels = {}
        for i, topic in enumerate(view.ids):
            # c-TF-IDF with BM25's idf (BERTopic's bm25_weighting): tf(t, c) *
            # log(1 + (A - f(t) + 0.5) / (f(t) + 0.5)), A the mean term mass of a topic and
            # f(t) the term's mass in all topics: a term as common as a whole topic scores <= 0
            weight = {}
            for t, c in counts[i].items():
                w = (c / max(tokens[i], 1e-12)) * math.log1p(
                    (avg - everywhere[t] + 0.5) / (everywhere[t] + 0.5)
                )
                if c > 0 and w > 0:
                    weight[t] = w
            terms = sorted(weight, key=lambda t: (-weight[t], t))[: self.tuning["label_terms"]]
            scored = []
            for mc in self._micros:
                if mc.topic == topic and mc.cand_keys:
                    score = mc.cand_vecs.astype(np.float64) @ units[i]
                    scored += [(-s, t) for s, t in zip(score.tolist(), mc.cand_titles, strict=True)]
            titles = tuple(dict.fromkeys(t for _, t in sorted(scored)))[
                : self.tuning["label_titles"]
            ]
            labels[topic] = TopicLabel(topic, tuple(terms), titles, round(float(view.mass[i])))
        return labels


@dataclass(frozen=True)
class _View:
    """The topics as derived from the micro-clusters (rebuilt after every change)."""

    ids: list[int]
    index: dict[int, int]
    centres: np.ndarray  # [topics, dim] float64: the mean of the topic's items (not unit)
    sq_norms: np.ndarray
    mass: np.ndarray
    spread: float


def _unit(vector: np.ndarray, dim: int, item_id: str) -> np.ndarray:
    x = np.asarray(vector, dtype=np.float32).reshape(-1)
    if x.shape[0] != dim:
        raise ValueError(f"item {item_id!r}: vector has {x.shape[0]} dims, want {dim}")
    norm = float(np.linalg.norm(x))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"item {item_id!r}: vector is zero or not finite")
    return x / np.float32(norm)


def _direction(vector: np.ndarray, dim: int) -> np.ndarray | None:
    q = np.asarray(vector, dtype=np.float64).reshape(-1)
    if q.shape[0] != dim:
        raise ValueError(f"vector has {q.shape[0]} dims, want {dim}")
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm):
        raise ValueError("vector is not finite")
    return None if norm == 0.0 else q / norm


def _top_terms(terms: Mapping[str, float], keep: int) -> dict[str, float]:
    return dict(sorted(terms.items(), key=lambda tc: (-tc[1], tc[0]))[:keep])


def _lloyd(
    x: np.ndarray, w: np.ndarray, centres: np.ndarray, iters: int = 50
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd iterations from ``centres``: labels and inertia (empty clusters vanish)."""
    sq = np.einsum("ij,ij->i", x, x)
    labels = np.full(len(x), -1)
    d2 = np.zeros((len(x), len(centres)))
    for _ in range(iters):
        d2 = np.maximum(
            sq[:, None] - 2.0 * (x @ centres.T) + np.einsum("ij,ij->i", centres, centres)[None], 0.0
        )
        new = np.argmin(d2, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        members = np.zeros((len(centres), len(x)))
        members[labels, np.arange(len(x))] = w
        mass = members.sum(1)
        filled = mass > 0
        centres = centres.copy()
        centres[filled] = (members[filled] @ x) / mass[filled, None]
    return labels, float(w @ d2[np.arange(len(x)), labels])


def _split_merge(
    x: np.ndarray,
    w: np.ndarray,
    labels: np.ndarray,
    k: int,
    rng: np.random.Generator,
    margin: float,
    memo: dict[bytes, tuple[float, np.ndarray]],
) -> np.ndarray | None:
    """One split-and-merge move if it lowers the inertia: new labels, else None.

    The move splits the cluster whose 2-means gains most and (at ``k``
    clusters) merges the pair whose merge costs least (Ward), when the gain
    beats the cost by ``margin``; Lloyd iterations then settle the result.
    ``memo`` keeps the 2-means of each member set between the moves of a rerun.
    """
    clusters = sorted(set(labels.tolist()))
    members = [np.flatnonzero(labels == c) for c in clusters]
    mass = np.array([w[rows].sum() for rows in members])
    centres = np.stack([(w[rows] @ x[rows]) / m for rows, m in zip(members, mass, strict=True)])
    sse = np.array(
        [
            w[rows] @ np.sum((x[rows] - c) ** 2, axis=1)
            for rows, c in zip(members, centres, strict=True)
        ]
    )
    best_gain, split, halves = 0.0, -1, np.zeros(0, dtype=bool)
    for i, rows in enumerate(members):
        if len(rows) < 2:
            continue
        key = rows.tobytes()
        if key not in memo:
            if len(rows) == 2:
                memo[key] = (float(sse[i]), np.array([False, True]))
            else:
                sub, sub_sse = _lloyd(x[rows], w[rows], _kmeanspp(x[rows], w[rows], 2, rng))
                memo[key] = (float(sse[i]) - sub_sse, sub == sub.max())
        gain, half = memo[key]
        if gain > best_gain:
            best_gain, split, halves = gain, i, half
    if split < 0:
        return None
    new = labels.copy()
    new[members[split][halves]] = max(clusters) + 1
    if len(clusters) >= k:
        sq = np.einsum("ij,ij->i", centres, centres)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (centres @ centres.T), 0.0)
        cost = d2 * np.outer(mass, mass) / (mass[:, None] + mass[None, :])
        np.fill_diagonal(cost, np.inf)
        cost[split, :] = cost[:, split] = np.inf
        a, b = divmod(int(np.argmin(cost)), len(clusters))
        if not best_gain > cost[a, b] * (1.0 + margin):
            return None
        new[new == clusters[b]] = clusters[a]
    ids = sorted(set(new.tolist()))
    start = np.stack([(w[new == c] @ x[new == c]) / w[new == c].sum() for c in ids])
    settled, settled_inertia = _lloyd(x, w, start)
    return settled if settled_inertia < float(sse.sum()) * (1.0 - 1e-9) else None


def _kmeanspp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds over weighted points."""
    chosen = [int(rng.choice(len(x), p=w / w.sum()))]
    d2 = np.sum((x - x[chosen[0]]) ** 2, axis=1)
    for _ in range(1, k):
        p = w * d2
        total = p.sum()
        nxt = int(rng.choice(len(x), p=p / total)) if total > 0 else int(rng.integers(len(x)))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.sum((x - x[nxt]) ** 2, axis=1))
    return x[chosen].copy()


def update_user_topics(
    masses: Mapping[int, float], topic: int | None, weight: float, decay: float, keep: int = 16
) -> dict[int, float]:
    """A user's topic masses after one event: decay every mass, then add ``weight`` to ``topic``.

    A negative weight takes mass away from ``topic`` (never below 0: a topic
    at 0 is dropped). Only the ``keep`` largest masses stay (ties: smaller id).
    Pure: ``masses`` is not changed.

    >>> m = update_user_topics({}, 3, 1.0, 0.5)
    >>> m = update_user_topics(m, 5, 2.0, 0.5)
    >>> m
    {5: 2.0, 3: 0.5}
    >>> update_user_topics(m, 3, -1.0, 1.0)
    {5: 2.0}
    >>> update_user_topics(m, None, 0.0, 0.5, keep=1)
    {5: 1.0}
    """
    if not (math.isfinite(weight) and math.isfinite(decay)) or decay < 0:
        raise ValueError(f"weight must be finite and decay >= 0, got {weight} and {decay}")
    out = {t: m * decay for t, m in masses.items() if m * decay > 0}
    if topic is not None and weight != 0:
        mass = out.get(topic, 0.0) + weight
        if mass > 0:
            out[topic] = mass
        else:
            out.pop(topic, None)
    best = sorted(out.items(), key=lambda tm: (-tm[1], tm[0]))[: max(keep, 0)]
    return dict(best)


def shares(masses: Mapping[int, float], n: int = 3) -> list[tuple[int, float]]:
    """The ``n`` largest topics of a user's masses, each as its share of the total, best first.

    Shares are of all the user's mass, so they sum to 1 only when ``n``
    covers every topic. Ties: smaller id first.

    >>> shares({1: 1.0, 2: 3.0, 7: 1.0}, n=2)
    [(2, 0.6), (1, 0.2)]
    >>> shares({})
    []
    """
    positive = [(t, m) for t, m in masses.items() if m > 0]
    total = sum(m for _, m in positive)
    if total <= 0:
        return []
    best = sorted(positive, key=lambda tm: (-tm[1], tm[0]))[: max(n, 0)]
    return [(t, m / total) for t, m in best]
