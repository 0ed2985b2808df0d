"""Topic names and partition counts, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The topics interest-stream reads and writes.

    Behaviours and wakeups are both keyed by user and consumed by one agent,
    so they must have the same partition count (co-partitioned).
    """

    behaviours: str = "behaviours"
    items: str = "items"
    deltas: str = "recommendation-deltas"
    dead_letters: str = "dead-letters"
    wakeups: str = "interest-stream-wakeups"
    partitions: int = 4

    def specs(self) -> list[tuple[str, int, dict[str, str]]]:
        """(name, partitions, config) for every topic, to create them explicitly."""
        n = self.partitions
        compact = {"cleanup.policy": "compact"}
        return [
            (self.behaviours, n, {}),
            (self.items, n, compact),
            (self.deltas, n, {}),
            (self.dead_letters, 1, {}),
            (self.wakeups, n, {}),
        ]

    def prefixed(self, prefix: str) -> Topics:
        """The same topics under a name prefix (tests use a fresh set each)."""
        return Topics(
            *(prefix + name for name in (self.behaviours, self.items, self.deltas)),
            prefix + self.dead_letters,
            prefix + self.wakeups,
            self.partitions,
        )
