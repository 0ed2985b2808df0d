"""Topic names and partition counts, in one place."""

from __future__ import annotations

from dataclasses import dataclass

#: Largest record the topics accept (``max.message.bytes``) and the clients
#: send or fetch. Kafka's default is ~1 MB; oversized input must still reach
#: the worker so it can be dead-lettered, original bytes included.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


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
    #: Replicas of every topic (1 for a single broker; 3 on a production cluster).
    replication: int = 1

    def specs(self) -> list[tuple[str, int, dict[str, str]]]:
        """(name, partitions, config) for every topic, to create them explicitly."""
        n = self.partitions
        size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        compact = {**size, "cleanup.policy": "compact"}
        return [
            (self.behaviours, n, size),
            (self.items, n, compact),
            (self.deltas, n, size),
            (self.dead_letters, 1, size),
            (self.wakeups, n, size),
        ]

    def prefixed(self, prefix: str) -> Topics:
        """The same topics under a name prefix (tests use a fresh set each)."""
        return Topics(
            *(prefix + name for name in (self.behaviours, self.items, self.deltas)),
            prefix + self.dead_letters,
            prefix + self.wakeups,
            self.partitions,
            self.replication,
        )
