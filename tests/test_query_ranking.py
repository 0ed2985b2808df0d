"""Queries ranked end to end with the real encoder: negation and cold start.

The path is the workers': `models.interest.query.decompose` splits the text,
the ONNX encoder that embeds the items encodes each phrase
(`streams.processor.encode_isolated`), one ``query`` event goes through
`models.core.step` for a user with no state, and the list is the state's
``top_k``. The catalogue is `streams.workload.synthetic_workload`'s, embedded
from the text the workers embed (`streams.codec.decode_item`); each item has
one known tag.

Phrases are written as a user would ("space adventures", "ghosts"), not as
the tag names. ``benchmarks/cold_start.py`` runs the same claims over every
pair of tags and two phrasings each, and records where "X and Y" falls short.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.behaviour import Behaviour, EncodedPhrase
from models.catalogue import Catalogue
from models.core import CoreParams, StepResult, scores, step
from models.encoder import OnnxEncoder
from models.interest.query import decompose
from streams import codec
from streams.processor import encode_isolated
from streams.workload import TAGS, synthetic_workload, to_json_bytes

PARAMS = CoreParams()
K = PARAMS.k

#: One phrasing a user would write per synthetic tag.
PHRASE = {
    "space": "space adventures",
    "cooking": "cooking shows",
    "horror": "horror films",
    "romance": "love stories",
    "football": "football matches",
    "finance": "the stock market",
    "gardening": "gardening tips",
    "jazz": "jazz music",
}

Ask = Callable[[str], StepResult]


@pytest.fixture(scope="module")
def catalogue(encoder_artifact: Path) -> Catalogue:
    items = [codec.decode_item(None, to_json_bytes(i)) for i in synthetic_workload().items]
    vectors = OnnxEncoder(encoder_artifact, device="cpu").encode([i.text for i in items])
    cat = Catalogue(vectors.shape[1])
    for item, vec in zip(items, vectors, strict=True):
        cat.upsert(item.item_id, vec, item.tags)
    return cat


@pytest.fixture(scope="module")
def ask(catalogue: Catalogue, encoder_artifact: Path) -> Ask:
    """One query event for a fresh user, through decompose + the encoder + `step`."""
    encoder = OnnxEncoder(encoder_artifact, device="cpu")
    vectors: dict[str, np.ndarray] = {}

    def run(text: str) -> StepResult:
        phrases = decompose(text)
        missing = [p.text for p in phrases if p.text not in vectors]
        for phrase, vec in zip(missing, encode_isolated(encoder, missing), strict=True):
            assert not isinstance(vec, Exception), vec
            vectors[phrase] = vec
        encoded = tuple(
            EncodedPhrase(p.text, p.polarity, p.weight, vectors[p.text]) for p in phrases
        )
        event = Behaviour("cold", "", "query", 1e9, "q-1", text=text, phrases=encoded)
        return step(None, [event], catalogue, 1e9, PARAMS)

    return run


def top_tags(result: StepResult, catalogue: Catalogue) -> list[str]:
    assert result.state is not None
    return [catalogue.tags(item)[0] for item, _ in result.state.top_k]


def ranks(result: StepResult, catalogue: Catalogue, tag: str) -> np.ndarray:
    """The 0-based ranks, over the whole catalogue, of the items of ``tag``."""
    assert result.state is not None
    s = scores(result.state, catalogue, PARAMS)
    ids = catalogue.rows()[0]
    return np.array(
        [int((s > s[r]).sum()) for r, i in enumerate(ids) if catalogue.tags(i)[0] == tag]
    )


def test_cold_start_query_gives_mostly_its_topic(ask: Ask, catalogue: Catalogue) -> None:
    result = ask("cooking recipes in a farmhouse kitchen")
    assert result.state is not None and not result.state.consumed
    tags = top_tags(result, catalogue)
    assert len(tags) == K
    assert tags.count("cooking") >= 8, tags
    assert result.delta is not None
    assert result.delta.interest["query"]["phrases"] == [
        {"text": "cooking recipes in a farmhouse kitchen", "polarity": "positive", "weight": 1.0}
    ]


# The example, X = "space adventures", against every other tag (and "ghosts").
_SPACE_VERSUS = [(PHRASE["space"], PHRASE[t], t) for t in TAGS if t != "space"]
_SPACE_VERSUS.append((PHRASE["space"], "ghosts", "horror"))


@pytest.mark.parametrize(
    ("x", "y", "y_tag"),
    _SPACE_VERSUS,
    ids=[f"{x}-nothing-{y}".replace(" ", "-") for x, y, _ in _SPACE_VERSUS],
)
def test_nothing_y_leaves_no_y_where_and_y_has_several(
    ask: Ask, catalogue: Catalogue, x: str, y: str, y_tag: str
) -> None:
    both = top_tags(ask(f"{x} and {y}"), catalogue)
    assert both.count(y_tag) >= 3, both
    negated = top_tags(ask(f"{x}, nothing {y}"), catalogue)
    assert y_tag not in negated, negated


_PAIRS = list(itertools.permutations(TAGS, 2))


@pytest.mark.parametrize(("x_tag", "y_tag"), _PAIRS, ids=[f"{x}-minus-{y}" for x, y in _PAIRS])
def test_negation_pushes_y_down_and_keeps_x(
    ask: Ask, catalogue: Catalogue, x_tag: str, y_tag: str
) -> None:
    """For every ordered pair: no Y in the top 10, X kept, and Y ranked lower than for "X" alone.

    "X" alone already has no Y in its top 10 for these distinct tags, so the
    ranks of the Y items over the whole catalogue are what show the push:
    none rises, and on average they fall. (Only the items about Y are
    pushed, `CoreParams.negative_margin`: the best-ranked Y item for "X" may
    be a borderline one that stays put.)
    """
    x, y = PHRASE[x_tag], PHRASE[y_tag]
    negated = ask(f"{x}, nothing {y}")
    tags = top_tags(negated, catalogue)
    assert y_tag not in tags, tags
    assert tags.count(x_tag) >= 8, tags
    pushed, alone = ranks(negated, catalogue, y_tag), ranks(ask(x), catalogue, y_tag)
    assert pushed.min() >= alone.min()
    assert pushed.mean() > alone.mean() + 1.0, (pushed.mean(), alone.mean())


@pytest.mark.parametrize("x_tag", TAGS)
def test_x_and_y_nothing_z_keeps_x_and_y_and_no_z(
    ask: Ask, catalogue: Catalogue, x_tag: str
) -> None:
    """For every other Y and Z, as the demo's newcomer asks ("space and cooking,
    nothing jazz"), with the bare tag words: no Z item, and X and Y fill the list.

    A negative phrase loses its part along the positive ones first: "jazz"
    leans towards "space" in MiniLM, and the raw vector pushed the space
    items out. How the list splits between X and Y is the composition's
    business, and not yet even: both have 3 or more in 188 of the 336
    triples (one takes all in some, "space and jazz" lists only jazz).
    """
    for y_tag, z_tag in itertools.permutations([t for t in TAGS if t != x_tag], 2):
        tags = top_tags(ask(f"{x_tag} and {y_tag}, nothing {z_tag}"), catalogue)
        assert z_tag not in tags, (y_tag, z_tag, tags)
        assert tags.count(x_tag) + tags.count(y_tag) >= 8, (y_tag, z_tag, tags)


def test_the_demo_query_lists_both_asked_tags(ask: Ask, catalogue: Catalogue) -> None:
    tags = top_tags(ask("space and cooking, nothing jazz"), catalogue)
    assert tags.count("space") >= 3 and tags.count("cooking") >= 3 and "jazz" not in tags, tags


# A broad positive that brings the negated tag into the top 10 by itself.
_BROAD = [
    ("an exciting adventure", "an exciting adventure, nothing scary", "horror"),
    ("stories about teamwork", "stories about teamwork, but no football", "football"),
    ("a good story", "a good story, nothing romantic", "romance"),
    ("old traditions", "old traditions, no cooking", "cooking"),
]


@pytest.mark.parametrize(
    ("positive", "query", "y_tag"), _BROAD, ids=[q.replace(" ", "-") for _, q, _ in _BROAD]
)
def test_negation_removes_a_tag_the_positive_brings_in(
    ask: Ask, catalogue: Catalogue, positive: str, query: str, y_tag: str
) -> None:
    alone = top_tags(ask(positive), catalogue)
    assert alone.count(y_tag) >= 2, alone
    tags = top_tags(ask(query), catalogue)
    assert len(tags) == K and y_tag not in tags, tags
    assert set(tags) & (set(alone) - {y_tag}), (alone, tags)
