"""The dataset layer: interaction logs, the MovieLens loaders and the leave-last-out split.

No heavy imports (numpy only), so training, evaluation and the demo workload
all build on it:

- `interactions`: `Interactions` (a timestamped log, dense ids) and the
  text of its items (`item_text`, `item_texts`);
- `movielens`: `load_movielens` for the ML-100K, ML-1M/10M and
  ML-latest/20M/25M/32M layouts;
- `split`: `Split` and `leave_last_out`, the protocol training tunes on and
  the harness scores.
"""

from models.datasets.interactions import Interactions, item_text, item_texts
from models.datasets.movielens import detect_layout, load_movielens
from models.datasets.split import Split, leave_last_out

__all__ = [
    "Interactions",
    "Split",
    "detect_layout",
    "item_text",
    "item_texts",
    "leave_last_out",
    "load_movielens",
]
