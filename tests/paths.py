"""Where tests find the shared MovieLens data (never copied into the repo).

``INTEREST_STREAM_ML100K`` if set; else ``shared/data/ml-100k`` beside this
checkout, or beside the repository it was cloned from (CI runs a clean clone
that may live elsewhere, e.g. under /tmp; its ``origin`` is the local path).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BESIDE = Path("shared") / "data" / "ml-100k"


def _origin_dir() -> Path | None:
    """The local folder this checkout was cloned from, if it was cloned from one."""
    try:
        url = subprocess.run(
            ["git", "-C", str(ROOT), "remote", "get-url", "origin"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return None
    path = Path(url.removeprefix("file://"))
    return path.resolve() if url and path.is_absolute() and path.is_dir() else None


def _find_ml100k() -> Path:
    if "INTEREST_STREAM_ML100K" in os.environ:
        return Path(os.environ["INTEREST_STREAM_ML100K"])
    beside = ROOT.parent / _BESIDE
    if (beside / "u.data").is_file():
        return beside
    origin = _origin_dir()
    if origin is not None and (origin.parent / _BESIDE / "u.data").is_file():
        return origin.parent / _BESIDE
    return beside


ML_100K = _find_ml100k()


def require_ml100k() -> Path:
    """The data folder; a missing folder fails the test instead of skipping it."""
    if not (ML_100K / "u.data").is_file():
        raise FileNotFoundError(
            f"MovieLens-100K not found at {ML_100K} (nor beside the clone's origin); "
            "set INTEREST_STREAM_ML100K"
        )
    return ML_100K


def run_benchmark(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` with ``args`` from the checkout; fail with its output's tail."""
    import sys

    run = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run
