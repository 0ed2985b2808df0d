"""The item catalogue held in memory for ranking.

The shell keeps one `Catalogue` per worker and changes it (`upsert`,
`remove`) as item embeddings arrive; the core only reads it. Rows are unit
vectors, so a dot product is a cosine.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

import numpy as np

from models.ranking import Ranked, top_k

if TYPE_CHECKING:
    from models.ann import CatalogueIndex
    from models.interest.topics import OnlineTopics

_CATALOGUES = itertools.count()

#: Queries per matrix product in `blocked_product`.
SCORE_BLOCK = 32


def blocked_product(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``queries @ matrix.T`` ([q, rows]) in products of exactly `SCORE_BLOCK` queries.

    A BLAS picks its kernel, and so its rounding, by a product's shape: one
    query alone (a matrix-vector product) or two beside each other can get
    last bits other than the same query in a wider product. Every product
    here has the same shape (the last block padded with zero queries), so
    a query's result does not depend on what it is multiplied beside, and a
    micro-batch's users can be scored together with the numbers each gets
    alone (`tests/test_batched_scores.py` checks it on the BLAS at hand).
    The dtype is numpy's for the two operands.

    >>> m = np.eye(3, dtype=np.float32)
    >>> blocked_product(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), m).tolist()
    [[1.0, 2.0, 3.0]]
    """
    q, m = np.asarray(queries), np.asarray(matrix)
    dtype = np.result_type(q, m)
    blocks = -(-len(q) // SCORE_BLOCK)
    padded = np.zeros((blocks * SCORE_BLOCK, m.shape[1]), dtype=dtype)
    padded[: len(q)] = q
    out = np.empty((len(padded), len(m)), dtype=dtype)
    for start in range(0, len(padded), SCORE_BLOCK):
        out[start : start + SCORE_BLOCK] = padded[start : start + SCORE_BLOCK] @ m.T
    return out[: len(q)]


class Catalogue:
    """Item embeddings with tags, ranked by dot product against a query.

    Parameters
    ----------
    dim
        Embedding width (384 for all-MiniLM-L6-v2).

    >>> cat = Catalogue(2)
    >>> cat.upsert("a", np.array([1.0, 0.0]), ("x",))
    >>> cat.upsert("b", np.array([0.0, 1.0]), ("y",))
    >>> cat.top_k(np.array([0.6, 0.8], dtype=np.float32), 2, exclude=())
    [('b', 0.8), ('a', 0.6)]
    >>> cat.top_k(np.array([0.6, 0.8], dtype=np.float32), 2, exclude={"b"})
    [('a', 0.6)]
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._uid = next(_CATALOGUES)
        self._changes = 0
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((64, dim), dtype=np.float32)
        self._alive = np.zeros(64, dtype=bool)
        self._tags: list[tuple[str, ...]] = []
        self._tag_sums: dict[str, np.ndarray] = {}
        self._tag_counts: dict[str, int] = {}
        self._sum = np.zeros(dim, dtype=np.float64)
        #: Per row, the change count at its last upsert or removal (`changed_rows`).
        self._row_change = np.zeros(64, dtype=np.int64)
        #: The alive rows' second moment sum ``X^T X`` (`moments`), None until asked
        #: for; then kept up to date lazily: rows added since (``_plus``) and the
        #: vectors of rows removed since (``_minus``) are folded in on the next ask.
        self._second: np.ndarray | None = None
        self._plus: set[int] = set()
        self._minus: list[np.ndarray] = []
        #: The approximate index that follows this catalogue (`models.ann.index_for`).
        self.ann: CatalogueIndex | None = None
        self._tag_cache: tuple[int, tuple[list[str], np.ndarray, np.ndarray]] | None = None
        #: The topic model shared by the workers (`models.interest.topics`), or None.
        self.topics: OnlineTopics | None = None

    def __len__(self) -> int:
        return int(self._alive[: len(self._ids)].sum())

    def __contains__(self, item_id: object) -> bool:
        row = self._rows.get(item_id)  # type: ignore[arg-type]
        return row is not None and bool(self._alive[row])

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(item_id)
        if row is None or not self._alive[row]:
            return None
        return self._matrix[row]

    def tags(self, item_id: str) -> tuple[str, ...]:
        row = self._rows.get(item_id)
        return () if row is None or not self._alive[row] else self._tags[row]

    def item_ids(self) -> list[str]:
        return [i for i, row in self._rows.items() if self._alive[row]]

    @property
    def revision(self) -> tuple[int, int]:
        """An opaque key that changes with every change (and differs between catalogues).

        Whatever is derived from `rows` stays valid while the revision does.
        """
        return self._uid, self._changes

    def rows(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every row: ids, unit vectors and the alive mask (removed rows are kept, not alive).

        The arrays are read-only views, valid until the next change.
        """
        n = len(self._ids)
        matrix, alive = self._matrix[:n].view(), self._alive[:n].view()
        matrix.flags.writeable = alive.flags.writeable = False
        return self._ids[:n], matrix, alive

    def row_of(self, item_id: str) -> int | None:
        """The row index of an item in `rows` (also of a removed one), None if never seen."""
        return self._rows.get(item_id)

    def upsert(self, item_id: str, vector: np.ndarray, tags: Iterable[str] = ()) -> None:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape[0] != self.dim:
            raise ValueError(f"item {item_id!r}: vector has {vec.shape[0]} dims, want {self.dim}")
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"item {item_id!r}: vector is zero or not finite")
        self._changes += 1
        self.remove(item_id)
        row = self._rows.get(item_id)
        if row is None:
            row = len(self._ids)
            self._grow(row + 1)
            self._ids.append(item_id)
            self._tags.append(())
            self._rows[item_id] = row
        self._matrix[row] = vec / norm
        self._alive[row] = True
        self._row_change[row] = self._changes
        if self._second is not None:
            self._plus.add(row)
        self._tags[row] = tuple(dict.fromkeys(tags))
        self._sum += self._matrix[row]
        for tag in self._tags[row]:
            self._tag_sums.setdefault(tag, np.zeros(self.dim, dtype=np.float64))
            self._tag_sums[tag] += self._matrix[row]
            self._tag_counts[tag] = self._tag_counts.get(tag, 0) + 1

    def remove(self, item_id: str) -> bool:
        """Drop an item (a tombstone). Returns whether it was present."""
        row = self._rows.get(item_id)
        if row is None or not self._alive[row]:
            return False
        self._changes += 1
        self._alive[row] = False
        self._row_change[row] = self._changes
        if self._second is not None:
            if row in self._plus:
                self._plus.discard(row)  # never folded in: nothing to take out
            else:
                self._minus.append(self._matrix[row].copy())
        self._sum -= self._matrix[row]
        for tag in self._tags[row]:
            self._tag_sums[tag] -= self._matrix[row]
            self._tag_counts[tag] -= 1
        return True

    def changed_rows(self, since: int) -> np.ndarray:
        """The rows upserted or removed after change count ``since`` (`revision`'s second part).

        What an index that follows the catalogue re-reads to catch up
        (`models.ann.CatalogueIndex.sync`); each row once, however often it changed.
        """
        n = len(self._ids)
        return np.flatnonzero(self._row_change[:n] > since)

    def moments(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The alive rows' count, sum ``X^T 1`` and second moment sum ``X^T X`` (float64).

        For any query ``q`` the scores ``s = X q`` of the alive rows then have
        mean ``sum . q / n`` and variance ``q^T (X^T X) q / n - mean^2``: a
        ranking that scores only some rows standardises them exactly as over
        the whole catalogue (`models.ann`). The arrays are read-only views,
        valid until the next change. The first call computes them
        from the rows (one pass); later ones fold in the changes since, as
        two products of the changed rows only.
        """
        n = len(self._ids)
        if self._second is None:
            self._second = np.zeros((self.dim, self.dim), dtype=np.float64)
            self._plus = set(np.flatnonzero(self._alive[:n]).tolist())
            self._minus = []
        if self._plus:
            rows = np.fromiter(sorted(self._plus), dtype=np.int64)
            for start in range(0, len(rows), 8192):
                block = self._matrix[rows[start : start + 8192]].astype(np.float64)
                self._second += block.T @ block
            self._plus = set()
        if self._minus:
            block = np.stack(self._minus).astype(np.float64)
            self._second -= block.T @ block
            self._minus = []
        total, second = self._sum.view(), self._second.view()
        total.flags.writeable = second.flags.writeable = False
        return len(self), total, second

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The dot product of every row (see `rows`) with ``query``; removed rows ``-inf``.

        The numbers `scores_many` gives the same query, bit for bit.
        """
        n = len(self._ids)
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dim,):
            raise ValueError(f"query has shape {q.shape}, want ({self.dim},)")
        return np.where(self._alive[:n], blocked_product(q[None], self._matrix[:n])[0], -np.inf)

    def scores_many(self, queries: np.ndarray) -> np.ndarray:
        """`scores` of each row of ``queries`` ([q, dim]): [q, rows], in products of
        `SCORE_BLOCK` queries (`blocked_product`), so a query's scores are the same
        whatever it is scored beside: alone, or with a whole micro-batch's users.

        A query that is all zeros scores ``-inf`` everywhere (undefined), as
        the updaters' `scores` do; removed rows are ``-inf``.
        """
        n = len(self._ids)
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        out = blocked_product(q, self._matrix[:n])
        out = np.where(self._alive[:n][None, :], out, -np.inf)
        out[~q.any(axis=1)] = -np.inf
        return out

    def rows_of(self, item_ids: Iterable[str]) -> list[int]:
        """The rows of those of ``item_ids`` the catalogue has seen."""
        return [row for row in map(self._rows.get, item_ids) if row is not None]

    def top_k(self, query: np.ndarray, k: int, exclude: Collection[str]) -> list[Ranked]:
        """The k best items by cosine with ``query``, highest first; ties broken by item id."""
        if not len(self._ids) or not np.any(query):
            return []
        return top_k(self._ids, self.scores(query), k, self.rows_of(exclude))

    def tag_weights(self, query: np.ndarray, n: int = 3) -> list[tuple[str, float]]:
        """A readable view of a query: its closest tags, weights summing to 1.

        Tags are their items' mean embedding. Sentence embeddings share a
        large common component, so the catalogue mean is subtracted from the
        tag means and the query first; weights are the positive cosines that
        remain, normalised over the top ``n``; ties go to the tag first by name.
        """
        q = np.asarray(query)
        if q.shape != (self.dim,):
            raise ValueError(f"query has shape {q.shape}, want ({self.dim},)")
        return self.tag_weights_many(q[None], n)[0]

    def tag_weights_many(self, queries: np.ndarray, n: int = 3) -> list[list[tuple[str, float]]]:
        """`tag_weights` of each row of ``queries`` ([m, dim]) in one product."""
        q = np.asarray(queries, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}, want [m, {self.dim}]")
        out: list[list[tuple[str, float]]] = [[] for _ in range(len(q))]
        if not len(self) or not len(q):
            return out
        tags, directions, mean = self._tag_directions()
        centred = q - mean
        norms = np.linalg.norm(centred, axis=1)
        ok = q.any(axis=1) & (norms >= 1e-9)
        if not tags or not ok.any():
            return out
        sims = blocked_product(centred[ok] / norms[ok, None], directions)  # as any batch
        # Tags are in name order (`_tag_directions`): a stable sort breaks ties by name.
        order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
        best_sims = np.take_along_axis(sims, order, axis=1).tolist()
        for row, best_rows, row_sims in zip(
            np.flatnonzero(ok).tolist(), order.tolist(), best_sims, strict=True
        ):
            best = [(tags[i], s) for i, s in zip(best_rows, row_sims, strict=True) if s > 0]
            mass = sum(s for _, s in best)
            out[row] = [(tag, round(s / mass, 3)) for tag, s in best] if mass > 0 else []
        return out

    def _tag_directions(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Unit directions of the tags' mean embeddings minus the catalogue mean (memoised)."""
        if self._tag_cache is not None and self._tag_cache[0] == self._changes:
            return self._tag_cache[1]
        mean = self._sum / len(self)
        tags, rows = [], []
        for tag, total in sorted(self._tag_sums.items()):
            if self._tag_counts[tag] == 0:
                continue
            direction = total / self._tag_counts[tag] - mean
            norm = float(np.linalg.norm(direction))
            if norm > 1e-9:
                tags.append(tag)
                rows.append(direction / norm)
        matrix = np.stack(rows) if rows else np.zeros((0, self.dim))
        self._tag_cache = (self._changes, (tags, matrix, mean))
        return tags, matrix, mean

    def _grow(self, size: int) -> None:
        if size <= self._matrix.shape[0]:
            return
        cap = max(size, 2 * self._matrix.shape[0])
        matrix = np.zeros((cap, self.dim), dtype=np.float32)
        matrix[: len(self._ids)] = self._matrix[: len(self._ids)]
        alive = np.zeros(cap, dtype=bool)
        alive[: len(self._ids)] = self._alive[: len(self._ids)]
        change = np.zeros(cap, dtype=np.int64)
        change[: len(self._ids)] = self._row_change[: len(self._ids)]
        self._matrix, self._alive, self._row_change = matrix, alive, change
