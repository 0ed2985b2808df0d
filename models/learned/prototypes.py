"""Online collaborative part of new items: the queries of the users who chose them.

The learned cell scores an item by ``q(h) . r``, with ``r`` fused from the
item's text and a learned id embedding. An item that arrived after training
has no id embedding and ranks on its text alone (on MovieLens-100K, none
of 201 stream events on items new after the training cut-off reached a top
10: `benchmarks/new_items.py`). `ItemPrototypes` keeps, per such item, the
sum and count of the ranking queries ``q(h)`` of the users who chose it, as
the stream runs; `ItemPrototypes.mix` adds their mean direction to the
item's representation, scaled to a typical trained item's norm and shrunk
by ``n / (n + prior)``. The cell is not retrained.

The statistics are sums, so two workers' observations merge by adding
(`merged`), and they serialise to bytes for the store (`to_bytes`). They
belong to one model version: another model's queries live in another space.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

#: Co-occurrences at which the online part has half the weight.
PRIOR = 5.0


@dataclass
class ItemPrototypes:
    """Per item id: the sum of the queries that chose it, and their count."""

    model_version: str
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, item_id: str, query: np.ndarray) -> None:
        q = np.asarray(query, dtype=np.float64)
        if not np.isfinite(q).all():
            raise ValueError(f"query for {item_id!r} is not finite")
        if item_id in self.sums:
            self.sums[item_id] = self.sums[item_id] + q
        else:
            self.sums[item_id] = q.copy()
        self.counts[item_id] = self.counts.get(item_id, 0.0) + 1.0

    def merged(self, other: ItemPrototypes) -> ItemPrototypes:
        """Both sets of observations (sums and counts add).

        >>> a, b = ItemPrototypes("v"), ItemPrototypes("v")
        >>> a.add("x", np.ones(2)); b.add("x", np.ones(2)); b.add("y", np.zeros(2))
        >>> m = a.merged(b)
        >>> m.counts, m.sums["x"].tolist()
        ({'x': 2.0, 'y': 1.0}, [2.0, 2.0])
        """
        if other.model_version != self.model_version:
            raise ValueError(
                f"prototypes of model {other.model_version} do not merge into "
                f"{self.model_version}'s"
            )
        out = ItemPrototypes(self.model_version, dict(self.sums), dict(self.counts))
        for item_id, s in other.sums.items():
            out.sums[item_id] = out.sums[item_id] + s if item_id in out.sums else s.copy()
            out.counts[item_id] = out.counts.get(item_id, 0.0) + other.counts[item_id]
        return out

    def mix(
        self,
        item_ids: list[str],
        reps: np.ndarray,
        cold: np.ndarray,
        scale: float,
        prior: float = PRIOR,
    ) -> np.ndarray:
        """``reps`` with each cold row that has observations moved along its users' queries."""
        out = np.array(reps, dtype=np.float32, copy=True)
        for row in np.flatnonzero(cold):
            n = self.counts.get(item_ids[row], 0.0)
            if n <= 0:
                continue
            mean = self.sums[item_ids[row]] / n
            norm = float(np.linalg.norm(mean))
            if norm > 1e-12 and mean.shape == out[row].shape:
                out[row] += np.float32(n / (n + prior) * scale / norm) * mean.astype(np.float32)
        return out

    def to_bytes(self) -> bytes:
        ids = sorted(self.counts)
        dim = len(next(iter(self.sums.values()))) if self.sums else 0
        buf = io.BytesIO()
        np.savez(
            buf,
            model_version=np.array(self.model_version),
            ids=np.array(ids, dtype=str),
            sums=np.array([self.sums[i] for i in ids], dtype=np.float64).reshape(len(ids), dim),
            counts=np.array([self.counts[i] for i in ids], dtype=np.float64),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemPrototypes:
        """The inverse of `to_bytes`; ValueError for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                version = str(npz["model_version"])
                ids = [str(i) for i in npz["ids"]]
                sums, counts = npz["sums"], npz["counts"]
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ValueError(f"not item prototypes: {exc}") from exc
        if len(sums) != len(ids) or len(counts) != len(ids):
            raise ValueError("item prototypes: ids, sums and counts differ in length")
        return cls(
            version,
            {i: np.array(s, dtype=np.float64) for i, s in zip(ids, sums, strict=True)},
            {i: float(c) for i, c in zip(ids, counts, strict=True)},
        )
