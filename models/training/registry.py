"""Registers SASRec and the learned GRU with the evaluation harness.

Imported by `models.evaluation.harness`; imports no torch itself: the
models load lazily, and without the `train` extra they are reported as
skipped.
"""

from __future__ import annotations

from models.evaluation.harness import register_lazy

register_lazy("sasrec", "models.training.recommenders:SasrecRecommender")
register_lazy("learned-gru", "models.training.recommenders:LearnedGruRecommender")
