"""The interest structure: topics, several interests, queries, levels (pure, no I/O)."""
