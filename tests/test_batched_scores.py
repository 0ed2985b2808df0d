"""A micro-batch's users scored together get the numbers each gets alone, bit for bit.

`models.catalogue.blocked_product` scores queries in products of one fixed
shape, so a BLAS cannot pick another kernel (and other last bits) for a
query scored beside others; `models.core.scores_many` builds on it. These
tests run on whatever BLAS numpy has here, so a BLAS whose results depend
on a query's place within a product fails them, not a delta in production.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.ann import AnnSpec
from models.catalogue import SCORE_BLOCK, Catalogue, blocked_product
from models.core import (
    CoreParams,
    interest_summaries,
    interest_summary,
    rank_exact,
    rank_many,
    scores,
    scores_many,
)
from models.interest.topics import OnlineTopics
from models.state import LastQuery, QueryPhrase, UserState
from tests.test_ann import DIM, workload_catalogue


@pytest.mark.parametrize("rows", [1, 7, 500, 1682])
def test_a_query_scores_the_same_alone_and_at_any_place_among_others(rows: int) -> None:
    rng = np.random.default_rng(rows)
    matrix = rng.standard_normal((rows, 384)).astype(np.float32)
    queries = rng.standard_normal((3 * SCORE_BLOCK + 5, 384)).astype(np.float32)
    together = blocked_product(queries, matrix)
    alone = np.stack([blocked_product(q[None], matrix)[0] for q in queries])
    assert np.array_equal(together, alone)
    order = rng.permutation(len(queries))
    assert np.array_equal(blocked_product(queries[order], matrix), together[order])
    assert np.allclose(together, queries @ matrix.T, rtol=1e-5, atol=1e-4)
    assert blocked_product(queries[:0], matrix).shape == (0, rows)


def test_catalogue_scores_is_scores_many_of_one_and_keeps_removed_rows_out() -> None:
    rng = np.random.default_rng(3)
    cat = Catalogue(16)
    for n in range(40):
        cat.upsert(f"i{n}", rng.standard_normal(16).astype(np.float32))
    cat.remove("i5")
    q = rng.standard_normal((4, 16)).astype(np.float32)
    many = cat.scores_many(q)
    assert all(np.array_equal(cat.scores(row), many[n]) for n, row in enumerate(q))
    assert many[:, cat.rows_of(["i5"])[0]].tolist() == [-np.inf] * 4
    assert np.isneginf(cat.scores_many(np.zeros((1, 16)))).all()  # a zero query: undefined
    with pytest.raises(ValueError, match="shape"):
        cat.scores(np.ones(15))


def with_negative_query(state: UserState, vec: np.ndarray) -> UserState:
    phrase = QueryPhrase("nothing like this", -1, 0.8)
    return replace(state, query=LastQuery("no", 0.0, (phrase,), negatives=(vec,)))


def test_scores_many_is_scores_of_each_user_alone_bit_for_bit() -> None:
    cat, states = workload_catalogue(1500)
    rng = np.random.default_rng(0)
    unit = rng.standard_normal(DIM).astype(np.float32)
    users = [*states, with_negative_query(states[0], unit / np.linalg.norm(unit))]
    users.append(UserState("nobody"))  # no direction at all: every score undefined
    params = CoreParams(ann=AnnSpec(min_items=len(cat) + 1))
    priors = [None] * len(users)
    priors[1] = rng.random(len(cat.rows()[0]))  # not cold: the prior is not used
    together = scores_many(users, cat, params, priors)
    for user, prior, got in zip(users, priors, together, strict=True):
        assert np.array_equal(got, scores(user, cat, params, prior))
    assert np.isneginf(together[-1]).all()
    assert not np.array_equal(together[-2], together[0])  # the negative phrase pushed items down
    assert rank_many(users, cat, params) == [rank_exact(u, cat, params) for u in users]


def test_interest_summaries_are_each_users_summary_alone() -> None:
    cat, states = workload_catalogue(600)
    topics = OnlineTopics(DIM, max_topics=6, seed=0)
    ids, matrix, _ = cat.rows()
    for item, vec in zip(ids, matrix, strict=True):
        topics.observe(item, vec, f"{' '.join(cat.tags(item)) or 'filler'} item {item}")
    cat.topics = topics
    params = CoreParams()
    users = [*states, UserState("nobody")]
    befores = [None, *users[:-1]]
    together = interest_summaries(users, cat, params, befores)
    pairs = zip(users, befores, strict=True)
    alone = [interest_summary(u, cat, params, before=b) for u, b in pairs]
    assert together == alone
    assert all(s["levels"]["mid"]["topics"] for s in together[:-1])
    assert together[-1]["interests"] == [] and together[-1]["short_term"] == []
