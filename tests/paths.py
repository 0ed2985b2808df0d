"""Where tests find the shared MovieLens data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ML_100K = Path(
    os.environ.get("INTEREST_STREAM_ML100K", ROOT.parent / "shared" / "data" / "ml-100k")
)


def require_ml100k() -> Path:
    """The data folder; a missing folder fails the test instead of skipping it."""
    if not (ML_100K / "u.data").is_file():
        raise FileNotFoundError(
            f"MovieLens-100K not found at {ML_100K}; set INTEREST_STREAM_ML100K"
        )
    return ML_100K
