"""Query decomposition: each rule on its own, the weights, the errors, the scorer, the set.

The set (``tests/fixtures/queries.jsonl``) was annotated by hand: the ``dev``
cases before the rules were written, the ``holdout`` cases after, with the
rules left as they were. Annotation: each phrase is the span of the query
that names one wanted or unwanted thing, without request framing, filler,
negation or intensity words, lowercased.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.interest.query import (
    Phrase,
    QueryError,
    composition_weights,
    content_tokens,
    decompose,
    match_count,
    score_decomposition,
)
from tests.paths import ROOT

CASES_PATH = ROOT / "tests" / "fixtures" / "queries.jsonl"


def signs(text: str) -> list[tuple[str, str]]:
    return [(p.text, p.sign) for p in decompose(text)]


def weights(text: str) -> dict[str, float]:
    return {p.text: p.weight for p in decompose(text)}


def load_cases() -> list[dict]:
    return [json.loads(line) for line in CASES_PATH.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- negation scope


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("no horror or gore", [("horror", "negative"), ("gore", "negative")]),
        ("nothing scary and nothing sad", [("scary", "negative"), ("sad", "negative")]),
        ("thrillers without gore", [("thrillers", "positive"), ("gore", "negative")]),
        ("thrillers with no gore", [("thrillers", "positive"), ("gore", "negative")]),
        ("no horror, just comedy", [("horror", "negative"), ("comedy", "positive")]),
        ("not pop but jazz", [("pop", "negative"), ("jazz", "positive")]),
        ("funny and not scary", [("funny", "positive"), ("scary", "negative")]),
        ("any cuisine except indian", [("cuisine", "positive"), ("indian", "negative")]),
        ("anything but country", [("country", "negative")]),
        ("none of the gory stuff", [("gory", "negative")]),
        ("I don't want musicals", [("musicals", "negative")]),
        ("she doesn't like spicy food", [("spicy food", "negative")]),
        ("never been a fan of opera", [("opera", "negative")]),
        ("I hate reality shows", [("reality shows", "negative")]),
        ("I dislike long films", [("long films", "negative")]),
        ("avoid anything with clowns", [("clowns", "negative")]),
        ("less violence", [("violence", "negative")]),
        ("no more reality tv", [("reality tv", "negative")]),
        ("hotels, not too expensive", [("hotels", "positive"), ("expensive", "negative")]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_negation_cues_and_their_scope(query: str, expected: list[tuple[str, str]]) -> None:
    assert signs(query) == expected


def test_a_comma_list_closed_by_or_stays_negated() -> None:
    assert signs("recipes without nuts, dairy, or eggs") == [
        ("recipes", "positive"),
        ("nuts", "negative"),
        ("dairy", "negative"),
        ("eggs", "negative"),
    ]


def test_a_comma_after_a_negation_otherwise_starts_a_new_clause() -> None:
    assert signs("no horror, comedy and romance") == [
        ("horror", "negative"),
        ("comedy", "positive"),
        ("romance", "positive"),
    ]


def test_framing_after_a_negated_list_turns_positive_again() -> None:
    assert signs("no horror or gore and I love comedies") == [
        ("horror", "negative"),
        ("gore", "negative"),
        ("comedies", "positive"),
    ]


def test_comparisons_are_content_not_negation() -> None:
    assert signs("recipes with less than 5 ingredients") == [
        ("recipes with less than 5 ingredients", "positive")
    ]
    assert signs("games for no more than 4 players") == [
        ("games for no more than 4 players", "positive")
    ]


# --------------------------------------------------------------------------- instead of


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("podcasts instead of audiobooks", [("podcasts", "positive"), ("audiobooks", "negative")]),
        ("tea rather than coffee", [("tea", "positive"), ("coffee", "negative")]),
        ("instead of news, show me puzzles", [("news", "negative"), ("puzzles", "positive")]),
        ("rather than pop, jazz", [("pop", "negative"), ("jazz", "positive")]),
        (
            "comedies instead of horror or thrillers",
            [("comedies", "positive"), ("horror", "negative"), ("thrillers", "negative")],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_instead_of_makes_before_positive_and_after_negative(
    query: str, expected: list[tuple[str, str]]
) -> None:
    assert signs(query) == expected


# --------------------------------------------------------------------------- splitting


def test_with_is_not_a_boundary() -> None:
    assert signs("movies with dragons") == [("movies with dragons", "positive")]
    assert signs("a hotel with a pool") == [("hotel with a pool", "positive")]


@pytest.mark.parametrize(
    "query",
    [
        "jazz and blues",
        "jazz or blues",
        "jazz plus blues",
        "jazz as well as blues",
        "jazz & blues",
        "jazz/blues",
        "jazz; blues",
        "jazz, blues",
    ],
)
def test_conjunctions_and_separators_split(query: str) -> None:
    assert signs(query) == [("jazz", "positive"), ("blues", "positive")]


def test_frozen_pairs_titles_and_number_ranges_stay_whole() -> None:
    assert signs("black and white films") == [("black and white films", "positive")]
    assert signs("drum and bass mixes") == [("drum and bass mixes", "positive")]
    assert signs("books like Pride and Prejudice") == [
        ("books like pride and prejudice", "positive")
    ]
    assert signs("something like No Country for Old Men") == [
        ("no country for old men", "positive")
    ]
    assert signs("sitcoms from the 80s and 90s") == [("sitcoms from the 80s and 90s", "positive")]


def test_request_framing_and_filler_are_stripped_content_order_kept() -> None:
    assert signs("could you please show me some really cheap flights to Rome?") == [
        ("cheap flights to rome", "positive")
    ]
    assert signs("I'd like something like Interstellar please") == [("interstellar", "positive")]
    assert signs("in the mood for spicy thai food") == [("spicy thai food", "positive")]
    assert signs("looking for good sci-fi books") == [("sci-fi books", "positive")]
    assert signs("I want some stuff about woodworking") == [("woodworking", "positive")]
    assert signs("recommend anything by Studio Ghibli") == [("studio ghibli", "positive")]


def test_like_and_love_as_verbs_or_content() -> None:
    assert signs("I like movies like Inception") == [("movies like inception", "positive")]
    assert signs("I love love songs") == [("love songs", "positive")]
    assert signs("no love triangles") == [("love triangles", "negative")]
    assert signs("love sci-fi, hate horror") == [("sci-fi", "positive"), ("horror", "negative")]


def test_ones_takes_the_head_of_the_previous_phrase() -> None:
    assert signs("comedies, but not romantic ones") == [
        ("comedies", "positive"),
        ("romantic comedies", "negative"),
    ]


def test_a_possessive_subject_is_not_an_interest() -> None:
    assert signs("my daughter loves horses") == [("horses", "positive")]
    assert signs("my husband hates musicals") == [("musicals", "negative")]
    # only a short possessive phrase before the verb is a subject: a head noun stays
    assert signs("songs that my dad likes") == [("songs that my dad", "positive")]


def test_output_is_lowercase_collapsed_and_deduplicated() -> None:
    phrases = decompose("  JAZZ   Piano ,\tjazz piano;  Jazz  PIANO  ")
    assert [(p.text, p.sign, p.weight) for p in phrases] == [("jazz piano", "positive", 1.0)]
    assert signs("horror, no horror") == [("horror", "positive"), ("horror", "negative")]


def test_max_phrases_keeps_the_first_ones_and_renormalises() -> None:
    phrases = decompose("a, b1, c2, d3, e4, f5, no g6, no h7", max_phrases=3)
    assert [p.text for p in phrases] == ["b1", "c2", "d3"]
    assert math.isclose(sum(p.weight for p in phrases), 1.0)


# --------------------------------------------------------------------------- intensity and weights


def test_intensity_words_order_the_weights() -> None:
    w = weights("really love jazz, blues, maybe a bit of folk")
    assert w["jazz"] > w["blues"] > w["folk"]
    w = weights("mostly indie rock, sometimes folk")
    assert w["indie rock"] > w["folk"]
    w = weights("horror, especially zombies")
    assert w["zombies"] > w["horror"]
    w = weights("I really hate spiders, no snakes")
    assert w["spiders"] > w["snakes"]


def test_an_intensity_word_before_a_list_covers_the_list() -> None:
    w = weights("really love jazz and blues, folk")
    assert math.isclose(w["jazz"], w["blues"]) and w["blues"] > w["folk"]
    w = weights("love jazz and a little blues")
    assert w["jazz"] > w["blues"]


def test_intensity_is_bounded() -> None:
    w = weights("really really really really love jazz, blues")
    assert math.isclose(w["jazz"] / w["blues"], math.exp(2.0))


def test_each_polarity_group_sums_to_one() -> None:
    phrases = decompose("mostly jazz, some blues, a bit of folk, no pop, hate country, less metal")
    pos = [p.weight for p in phrases if p.polarity > 0]
    neg = [p.weight for p in phrases if p.polarity < 0]
    assert len(pos) == 3 and len(neg) == 3
    assert math.isclose(sum(pos), 1.0) and math.isclose(sum(neg), 1.0)
    assert all(w > 0 for w in pos + neg)


def test_composition_weights_is_a_softmax() -> None:
    w = composition_weights([2.0, 0.0, -1.0])
    expected = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    np.testing.assert_allclose(w, expected)
    assert math.isclose(w.sum(), 1.0)
    assert composition_weights([]).shape == (0,)
    np.testing.assert_allclose(
        composition_weights([1000.0, 999.0]), composition_weights([1.0, 0.0])
    )
    flat, sharp = composition_weights([1.0, 0.0], 10.0), composition_weights([1.0, 0.0], 0.1)
    assert 0.5 < flat[0] < composition_weights([1.0, 0.0])[0] < sharp[0] < 1.0


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_composition_weights_rejects_a_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        composition_weights([1.0, 2.0], temperature)


def test_composition_weights_rejects_bad_intensities() -> None:
    with pytest.raises(ValueError, match="finite"):
        composition_weights([1.0, float("nan")])
    with pytest.raises(ValueError, match="one-dimensional"):
        composition_weights([[1.0, 2.0]])


# --------------------------------------------------------------------------- errors and values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("jazz " * 200, "limit is 500"),
        ("please, something, anything!", "no content words"),
        ("no", "no content words"),
        ("?!", "no content words"),
        (42, "must be a string"),
    ],
    ids=["empty", "blank", "too-long", "filler-only", "cue-only", "punctuation", "not-a-string"],
)
def test_bad_queries_raise_query_error(text: object, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        decompose(text)  # type: ignore[arg-type]


def test_query_error_is_a_value_error_and_limits_are_settings() -> None:
    assert issubclass(QueryError, ValueError)
    assert decompose("jazz " * 20, max_chars=100)
    with pytest.raises(QueryError):
        decompose("jazz " * 20, max_chars=50)
    with pytest.raises(ValueError, match="max_phrases"):
        decompose("jazz", max_phrases=0)


def test_phrase_validates_and_names_its_sign() -> None:
    assert Phrase("jazz", 1, 1.0).sign == "positive"
    assert Phrase("pop", -1, 0.5).sign == "negative"
    for bad in (("", 1, 1.0), (" jazz", 1, 1.0), ("jazz", 0, 1.0), ("jazz", 1, 0.0)):
        with pytest.raises(ValueError):
            Phrase(*bad)


def test_decompose_is_deterministic_and_pure() -> None:
    text = "funny space adventures, nothing scary"
    assert decompose(text) == decompose(text)


# --------------------------------------------------------------------------- scorer


def test_content_tokens_drop_stop_words_and_plurals() -> None:
    assert content_tokens("The Horror Movies") == content_tokens("horror movie")
    assert content_tokens("of the and") == frozenset()


def test_match_count_is_one_to_one_with_polarity_and_threshold() -> None:
    gold = [("horror movies", "negative"), ("jazz", "positive")]
    assert match_count([("horror", "negative"), ("jazz", "positive")], gold) == 2  # J = 0.5
    assert match_count([("horror", "positive")], gold) == 0  # wrong polarity
    assert match_count([("scary gory horror movies tonight", "negative")], gold) == 0  # J = 0.4
    assert match_count([("jazz", "positive"), ("jazz", "positive")], gold) == 1  # one to one


def test_match_count_takes_the_best_pairs_first() -> None:
    gold = [("dark fantasy", "positive"), ("fantasy", "positive")]
    assert match_count([("fantasy", "positive"), ("dark fantasy", "positive")], gold) == 2


def test_score_decomposition_counts_refusals_and_reports_counts() -> None:
    cases = [
        {"query": "jazz, no pop", "phrases": [
            {"text": "jazz", "polarity": "positive"}, {"text": "pop", "polarity": "negative"}]},
        {"query": "please", "phrases": [{"text": "anything", "polarity": "positive"}]},
    ]  # fmt: skip
    score = score_decomposition(cases)
    assert (score["tp"], score["predicted"], score["expected"], score["n"]) == (2, 2, 3, 2)
    assert score["precision"] == 1.0 and math.isclose(score["recall"], 2 / 3)
    assert math.isclose(score["f1"], 0.8) and score["exact"] == 0.5

    def all_positive(text: str) -> tuple[Phrase, ...]:
        return tuple(Phrase(t.strip(), 1, 1.0) for t in text.split(","))

    other = score_decomposition(cases[:1], decomposer=all_positive)
    assert other["tp"] == 1 and other["precision"] == 0.5
    with pytest.raises(ValueError, match="polarity"):
        score_decomposition([{"query": "jazz", "phrases": [{"text": "jazz", "polarity": "+"}]}])


# --------------------------------------------------------------------------- the annotated set


def test_the_query_set_is_well_formed() -> None:
    cases = load_cases()
    assert len(cases) >= 60
    assert sum(c["split"] == "holdout" for c in cases) >= 15
    assert len({c["query"] for c in cases}) == len(cases)
    for case in cases:
        assert set(case) == {"query", "split", "phrases"}
        assert case["split"] in ("dev", "holdout")
        assert case["phrases"], case["query"]
        for phrase in case["phrases"]:
            assert phrase["polarity"] in ("positive", "negative")
            assert phrase["text"] == phrase["text"].strip().lower()
    assert any(p["polarity"] == "negative" for c in cases for p in c["phrases"])
    assert any(len(c["query"].split()) == 1 for c in cases)


@pytest.mark.parametrize("split", ["dev", "holdout", "total"])
def test_precision_and_recall_on_the_query_set(split: str) -> None:
    cases = [c for c in load_cases() if split in ("total", c["split"])]
    score = score_decomposition(cases)
    assert score["precision"] >= 0.9, score
    assert score["recall"] >= 0.9, score


def test_the_benchmark_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "query_decomposition.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/query_decomposition.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert set(report["scores"]) == {"dev", "holdout", "total"}
    assert report["scores"]["total"]["n"] == len(load_cases())
    assert report["scores"]["total"]["precision"] >= 0.9
    assert report["seconds_per_query"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
