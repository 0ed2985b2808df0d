"""Offline evaluation: MovieLens loaders, leave-last-out split, metrics, baselines.

`data` has no heavy imports and is what training code builds against; the
harness (`harness.run_eval`) replays the log through each registered model and
scores next-item prediction over the full catalogue.
"""

from models.evaluation.data import Interactions, Split, leave_last_out, load_movielens

__all__ = ["Interactions", "Split", "leave_last_out", "load_movielens"]
