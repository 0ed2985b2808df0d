"""The leave-last-out split of an interaction log, time-ordered, one entry per user.

The protocol the harness scores and training tunes on: per user, the last
event is the test target, the one before it the validation target, the rest
is training (ties in file order, as the log sorts them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.datasets.interactions import Interactions


@dataclass(frozen=True, eq=False)
class Split:
    """Leave-last-out split, time-ordered, one entry per user.

    ``train[u]`` holds the items before the validation target (all of the
    user's items when they have fewer than 3 events, with ``valid[u]`` and
    ``test[u]`` then -1). The validation history is ``train[u]``; the test
    history is ``train[u]`` followed by ``valid[u]``.
    """

    train: list[np.ndarray]
    train_ts: list[np.ndarray]
    valid: np.ndarray
    valid_ts: np.ndarray
    test: np.ndarray
    test_ts: np.ndarray
    n_items: int

    @property
    def n_users(self) -> int:
        return len(self.train)

    def eval_users(self) -> np.ndarray:
        """Users that have validation and test targets."""
        return np.flatnonzero(self.test >= 0)

    def history(self, user: int, phase: str) -> np.ndarray:
        """Items the user had before the ``phase`` ("valid" or "test") target."""
        if phase == "valid":
            return self.train[user]
        if phase == "test":
            if self.valid[user] < 0:
                return self.train[user]
            return np.append(self.train[user], self.valid[user])
        raise ValueError(f"phase must be 'valid' or 'test', not {phase!r}")

    def target(self, phase: str) -> np.ndarray:
        """Per user, the ``phase`` target item (-1 when none)."""
        if phase == "valid":
            return self.valid
        if phase == "test":
            return self.test
        raise ValueError(f"phase must be 'valid' or 'test', not {phase!r}")

    def target_ts(self, phase: str) -> np.ndarray:
        """Per user, the ``phase`` target's timestamp (nan when none)."""
        return self.valid_ts if phase == "valid" else self.test_ts


def leave_last_out(log: Interactions) -> Split:
    """Per user: last event = test, second-last = validation, the rest = train.

    Users with fewer than 3 events keep everything in train and get -1 targets.
    """
    seqs, seq_ts = log.sequences(), log.sequence_ts()
    n = log.n_users
    valid = np.full(n, -1, dtype=np.int64)
    test = np.full(n, -1, dtype=np.int64)
    valid_ts = np.full(n, np.nan)
    test_ts = np.full(n, np.nan)
    train: list[np.ndarray] = []
    train_ts: list[np.ndarray] = []
    for u, (s, t) in enumerate(zip(seqs, seq_ts, strict=True)):
        if len(s) < 3:
            train.append(s.copy())
            train_ts.append(t.copy())
            continue
        train.append(s[:-2].copy())
        train_ts.append(t[:-2].copy())
        valid[u], valid_ts[u] = s[-2], t[-2]
        test[u], test_ts[u] = s[-1], t[-1]
    return Split(train, train_ts, valid, valid_ts, test, test_ts, log.n_items)
