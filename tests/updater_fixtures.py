"""Every interest updater, built small and seeded, for the contract suites.

`updater_factories` names each updater kind and builds it for a catalogue of
``TEXT_DIM``-wide vectors; a new updater is one more entry here, and the
updater contract suite (`tests/test_updater_contract.py`) runs over it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.catalogue import Catalogue
from models.learned import LearnedUpdater, save_artifact
from models.learned.artifact import N_GAP, WEIGHT_NAMES
from models.update import InterestUpdater, TimeDecayUpdater

TEXT_DIM, ITEM_DIM, HIDDEN, N_ITEMS = 16, 8, 12, 30
#: Items of the catalogue without a learned id embedding (the model never saw them).
COLD = frozenset({3, 7, 11})


def unit_texts(rng: np.random.Generator, n: int = N_ITEMS) -> np.ndarray:
    t = rng.standard_normal((n, TEXT_DIM)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def small_catalogue(seed: int = 0) -> Catalogue:
    cat = Catalogue(TEXT_DIM)
    for i, vec in enumerate(unit_texts(np.random.default_rng(seed))):
        cat.upsert(f"m{i}", vec, (f"g{i % 3}",))
    return cat


def random_cell_weights(
    rng: np.random.Generator, n_vocab: int, text_dim: int = TEXT_DIM, heads: int = 1
) -> dict[str, np.ndarray]:
    shapes = {
        "text_w": (text_dim, ITEM_DIM),
        "text_b": (ITEM_DIM,),
        "text_bias_w": (text_dim,),
        "id_emb": (n_vocab, ITEM_DIM),
        "id_bias": (n_vocab,),
        "w_ih": (3 * HIDDEN, ITEM_DIM + 2 + N_GAP),
        "w_hh": (3 * HIDDEN, HIDDEN),
        "b_ih": (3 * HIDDEN,),
        "b_hh": (3 * HIDDEN,),
        "out_w": (heads * ITEM_DIM, HIDDEN),
        "out_b": (heads * ITEM_DIM,),
    }
    return {n: (0.4 * rng.standard_normal(shapes[n])).astype(np.float32) for n in WEIGHT_NAMES}


def random_learned_updater(folder: Path, seed: int = 7, heads: int = 1) -> LearnedUpdater:
    """An exported GRU cell with random weights over items ``m0..m29`` (minus `COLD`)."""
    rng = np.random.default_rng(seed)
    vocab = [f"m{i}" for i in range(N_ITEMS) if i not in COLD]
    weights = random_cell_weights(rng, len(vocab), heads=heads)
    save_artifact(folder, weights, vocab, config={"seed": seed, "heads": heads})
    return LearnedUpdater.load(folder)


def updater_factories() -> dict[str, Callable[[Path], InterestUpdater]]:
    """Readable test id -> build(tmp folder)."""
    return {
        "time-decay": lambda _: TimeDecayUpdater(half_life_s=6 * 3600.0),
        "learned-gru": lambda folder: random_learned_updater(folder / "model"),
        "learned-gru-3-heads": lambda folder: random_learned_updater(folder / "model", heads=3),
    }
