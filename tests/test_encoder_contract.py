"""One behavioural contract, run against every encoder backend."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import Encoder

pytestmark = pytest.mark.torch  # the ONNX backend's artifact is exported with torch

# Shared session fixtures (one export, one PyTorch model): encoder_artifact,
# onnx_cpu_encoder, torch_encoder.

DIM = 384
TEXTS = [
    "Toy Story (1995)",
    "Star Wars (1977)",
    "Amélie (Le Fabuleux Destin d'Amélie Poulain) (2001)",
    "千と千尋の神隠し (Spirited Away)",
    "Pulp Fiction",
    "A",
    "The Lord of the Rings: The Fellowship of the Ring (2001) — extended edition",
    "Night of the Living Dead 🧟",
    "Casablanca (1942)",
]


# How far a text's vector may move with the batch it is encoded in. int8's
# activations are quantised with one range per batch (dynamic quantisation),
# so its rows move by up to ~0.03 (cosine >= 0.98) with their batch mates.
BATCH_ATOL = {"onnx-cpu": 1e-5, "onnx-int8": 0.05, "torch": 1e-5}


_FIXTURES = {
    "onnx-cpu": "onnx_cpu_encoder",
    "onnx-int8": "onnx_int8_encoder",
    "torch": "torch_encoder",
}


@pytest.fixture(params=list(_FIXTURES), scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def encoder(backend: str, request: pytest.FixtureRequest) -> Encoder:
    return request.getfixturevalue(_FIXTURES[backend])


@pytest.fixture(scope="module")
def batch_atol(backend: str) -> float:
    return BATCH_ATOL[backend]


def test_implements_protocol(encoder: Encoder) -> None:
    assert isinstance(encoder, Encoder)
    assert encoder.dim == DIM
    assert encoder.name


def test_shape_dtype_and_unit_norm(encoder: Encoder) -> None:
    out = encoder.encode(TEXTS)
    assert out.shape == (len(TEXTS), DIM)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_empty_input(encoder: Encoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, DIM)
    assert out.dtype == np.float32


def test_deterministic(encoder: Encoder) -> None:
    np.testing.assert_array_equal(encoder.encode(TEXTS), encoder.encode(TEXTS))


def test_batch_invariance(encoder: Encoder, batch_atol: float) -> None:
    together = encoder.encode(TEXTS)
    one_by_one = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=batch_atol)


def test_order_preserved(encoder: Encoder, batch_atol: float) -> None:
    forward = encoder.encode(TEXTS)
    backward = encoder.encode(TEXTS[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=batch_atol)
    # Distinct titles give distinct rows, so a mix-up could not hide.
    assert not np.allclose(forward[0], forward[1])


def test_input_not_mutated(encoder: Encoder) -> None:
    texts = list(TEXTS)
    encoder.encode(texts)
    assert texts == TEXTS
    # Any sequence works, not only lists.
    np.testing.assert_allclose(encoder.encode(tuple(TEXTS)), encoder.encode(TEXTS), atol=1e-6)


def test_empty_string(encoder: Encoder) -> None:
    out = encoder.encode(["", "Toy Story (1995)"])
    assert out.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated(encoder: Encoder) -> None:
    words = ["galaxy", "battle", "starship", "rebel"]
    very_long = " ".join(words[i % 4] for i in range(5000))
    long_enough = " ".join(words[i % 4] for i in range(400))  # > 256 tokens as well
    out = encoder.encode([very_long, long_enough])
    assert out.shape == (2, DIM)
    assert np.all(np.isfinite(out))
    # Both are cut to the same first 256 tokens.
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_unicode(encoder: Encoder) -> None:
    out = encoder.encode(["Amélie", "Amelie", "千と千尋の神隠し", "🧟🧟🧟"])
    assert np.all(np.isfinite(out))
    # The BERT normaliser keeps accents but lowercases: still near-identical meaning.
    assert float(out[0] @ out[1]) > 0.5


def test_semantic_sanity(encoder: Encoder) -> None:
    star_wars, star_trek, cooking = encoder.encode(
        [
            "Star Wars: A New Hope",
            "Star Trek: The Wrath of Khan",
            "Julie & Julia: Mastering the Art of French Cooking",
        ]
    )
    assert float(star_wars @ star_trek) > float(star_wars @ cooking) + 0.1
