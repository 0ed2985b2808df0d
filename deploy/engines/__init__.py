"""Local launchers for the real engines (Apache Kafka, Apache Cassandra).

Each engine is a module here with ``start(home) -> EngineInfo``, ``stop(home)``
and ``status(home)``; ``python -m deploy.engines ENGINE start|stop|status``
dispatches to it. Shared helpers live in :mod:`deploy.engines.common`.
"""

ENGINES = ("kafka", "cassandra")
