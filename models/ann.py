"""Approximate candidates for ranking a large catalogue: an HNSW index that follows it.

Past `AnnSpec.min_items` items the core (`models.core.rank_many`) stops
scoring every catalogue row: each direction its ranking scores by (every
interest's, the short-term window's, the long-term profile's) fetches its
`AnnSpec.candidates` nearest rows from a `CatalogueIndex`, and only the union
of those rows is scored, with the exact formula. The levels' z-scores stay
those of the whole catalogue: the mean and variance of ``X q`` come from the
catalogue's moments (`models.catalogue.Catalogue.moments`), not from a scan.

The library is hnswlib (HNSW graphs, inner product), chosen by
``benchmarks/ann_index.py``: of hnswlib, usearch, faiss-cpu and voyager on
100,000 clustered 384-dim unit vectors (same graph degree and build width,
one run), it fetched 100 rows in 263 us a query at recall@10 1.000 (voyager
408 us, usearch 443 us), and it moves an item's vector in place and removes
one (a tombstone), which the online catalogue needs. faiss's HNSW was a
little faster (236 us, recall 0.997) but can neither move nor remove a
vector: a rebuild per change.

The index is keyed by catalogue row (`Catalogue.rows`), which never changes
for an item, and catches up with the catalogue on every use from its
per-row change counts (`Catalogue.changed_rows`): upserted rows are added
(or moved), removed ones marked deleted. Insertion is single-threaded with
a fixed seed, so the same catalogue changes give the same graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.catalogue import Catalogue

#: A user's fetch width grows by this step with the items they consumed (which
#: are fetched, then dropped): few distinct widths, so a batch's users share calls.
FETCH_STEP = 64


@dataclass(frozen=True)
class AnnSpec:
    """When the ranking goes through the index, and how the index is built and searched.

    Parameters
    ----------
    min_items
        The index is used once the catalogue holds more items than this; 0:
        never (always exact). Measured (``benchmarks/ann_index.py``, p99 of
        one user's ranking): exact 9 / 25 / 33 / 83 / 227 ms at 5k / 10k /
        20k / 50k / 100k items, the index 12-17 ms throughout; so exact,
        with no approximation at all, while it is that cheap.
    candidates
        Rows each direction fetches (before its consumed items are dropped).
        Measured at 100,000 items: recall@10 against exact ranking 1.000
        for 25 to 200 on clustered items, 0.990 for 25 and 50 on loose ones
        (noise 3), p99 rising from 12 ms (25) to 26 ms (200).
    connectivity
        The graph's degree (HNSW's ``M``).
    ef_construction
        Breadth of the search that links a new row (HNSW's ``ef_construction``).
    ef_search
        Least breadth of a fetch (HNSW's ``ef``); a fetch searches at least
        as broadly as the rows it fetches, so past ``candidates`` this only
        matters for a small ``candidates``.
    """

    min_items: int = 10_000
    candidates: int = 50
    connectivity: int = 16
    ef_construction: int = 100
    ef_search: int = 64

    def __post_init__(self) -> None:
        if self.min_items < 0:
            raise ValueError("ann_min_items must be >= 0 (0: never use the index)")
        if self.candidates < 1 or self.ef_search < 1:
            raise ValueError("ann_candidates and ann_ef_search must be >= 1")
        if self.connectivity < 2 or self.ef_construction < 1:
            raise ValueError("ann_connectivity must be >= 2 and ann_ef_construction >= 1")

    def applies(self, catalogue: Catalogue) -> bool:
        """Whether a catalogue this big is ranked through the index."""
        return self.min_items > 0 and len(catalogue) > self.min_items

    def fetch_width(self, consumed: int) -> int:
        """Rows a direction fetches for a user who consumed ``consumed`` items.

        >>> AnnSpec(candidates=200).fetch_width(0), AnnSpec(candidates=200).fetch_width(70)
        (200, 328)
        """
        return self.candidates + FETCH_STEP * -(-consumed // FETCH_STEP)


class CatalogueIndex:
    """An hnswlib graph over one catalogue's rows (labels are row numbers).

    Parameters
    ----------
    dim
        The catalogue's width.
    spec
        Graph settings (`AnnSpec`).

    Attributes
    ----------
    synced
        The catalogue change count (`Catalogue.revision`'s second part) the
        index reflects.
    owner
        The `Catalogue.revision` uid of the catalogue it follows.
    """

    def __init__(self, dim: int, spec: AnnSpec, owner: int) -> None:
        import hnswlib

        self.spec, self.owner, self.synced = spec, owner, -1
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._capacity = 1024
        self._index.init_index(
            self._capacity, M=spec.connectivity, ef_construction=spec.ef_construction, random_seed=0
        )
        self._present = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return int(self._present.sum())

    def sync(self, catalogue: Catalogue) -> None:
        """Catch up with ``catalogue``: add or move upserted rows, delete removed ones."""
        changes = catalogue.revision[1]
        if changes == self.synced:
            return
        rows = catalogue.changed_rows(self.synced)
        _, matrix, alive = catalogue.rows()
        if len(self._present) < len(alive):
            self._present = np.concatenate(
                [self._present, np.zeros(len(alive) - len(self._present), dtype=bool)]
            )
        gone = rows[~alive[rows] & self._present[rows]]
        for row in gone.tolist():
            self._index.mark_deleted(row)
        self._present[gone] = False
        live = rows[alive[rows]]
        if live.size:
            needed = self._index.get_current_count() + int((~self._present[live]).sum())
            if needed > self._capacity:
                self._capacity = max(needed, 2 * self._capacity)
                self._index.resize_index(self._capacity)
            self._index.add_items(np.ascontiguousarray(matrix[live]), live, num_threads=1)
            self._present[live] = True
        self.synced = changes

    def search(self, queries: np.ndarray, k: int) -> list[np.ndarray] | None:
        """Each query's ``k`` (at most the live rows) best rows by inner product, best first.

        None when the graph cannot return that many (hnswlib refuses a search
        that finds fewer than ``k`` live rows, as after many removals): the
        caller then ranks exactly.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self._index.dim)
        k = min(k, len(self))
        if k <= 0 or not len(q):
            return [np.zeros(0, dtype=np.int64) for _ in range(len(q))]
        self._index.set_ef(max(self.spec.ef_search, k))
        try:
            labels, _ = self._index.knn_query(q, k=k, num_threads=1)
        except RuntimeError:
            return None
        return [row.astype(np.int64) for row in labels]


def index_for(catalogue: Catalogue, spec: AnnSpec) -> CatalogueIndex:
    """The index that follows ``catalogue`` under ``spec``, built on first use and synced.

    It lives on the catalogue (`Catalogue.ann`), as the worker's one
    catalogue lives for the worker; another spec's graph is rebuilt.
    """
    index = catalogue.ann
    graph = (spec.connectivity, spec.ef_construction)
    if (
        index is None
        or index.owner != catalogue.revision[0]
        or (index.spec.connectivity, index.spec.ef_construction) != graph
    ):
        index = CatalogueIndex(catalogue.dim, spec, catalogue.revision[0])
        catalogue.ann = index
    elif index.spec != spec:
        index.spec = spec  # search settings only: the graph stays
    index.sync(catalogue)
    return index
