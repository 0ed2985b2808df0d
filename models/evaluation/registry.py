"""The models the harness can run, by name: the baselines, and SASRec and the learned GRU lazily.

Adding a model is one line::

    register("my-model", MyRecommender)                      # a factory
    register_lazy("my-model", "my_package.my_module:MyRecommender")

A lazy entry imports its module only when the model runs, so this module
imports neither torch nor `models.training` (which itself builds on the
evaluation's split and metrics: importing it from here would make a cycle).
A model whose optional dependency is missing (the factory or ``fit`` raises
ImportError or `ModelUnavailable`) is reported as skipped with the reason.

>>> MODELS["sasrec"].__name__
'lazy[models.training.recommenders:SasrecRecommender]'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from models.evaluation.baselines import Recommender, factories

#: Model name -> factory taking no arguments.
MODELS: dict[str, Callable[..., Recommender]] = dict(factories())


def register(name: str, factory: Callable[..., Recommender]) -> None:
    """Add (or replace) a model under ``name``."""
    MODELS[name] = factory


def register_lazy(name: str, target: str) -> None:
    """Register ``"package.module:Factory"``, imported only when the model runs.

    A failing import makes the model "skipped" with the import error as reason.
    """

    def factory(**kwargs: Any) -> Recommender:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)(**kwargs)

    factory.__qualname__ = factory.__name__ = f"lazy[{target}]"
    MODELS[name] = factory


# Trained with torch by `models.training` (the `train` extra).
register_lazy("sasrec", "models.training.recommenders:SasrecRecommender")
register_lazy("learned-gru", "models.training.recommenders:LearnedGruRecommender")
