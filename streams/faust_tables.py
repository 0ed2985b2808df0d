"""Faust's table manager without its one-second start-up sleep.

Faust's ``TableManager.on_start`` sleeps 1 s, so that tables declared late
still join the recovery, before it starts the recovery service, and the
consumer subscribes only after that. interest-stream declares no Faust
tables (a user's state lives in the store), so the sleep only delays every
start and restart of a worker (a kill -9 test restarts five times) and of the
bench's pass-through. `TablelessManager` skips it while no table is
declared and is Faust's own otherwise; passed as Faust's ``TableManager``
setting. Its body is faust-streaming 0.15.3's (pinned in pyproject.toml)
less the sleep.
"""

from __future__ import annotations

from faust.tables import TableManager


class TablelessManager(TableManager):
    """`faust.tables.TableManager`, starting at once when the app declares no table."""

    async def on_start(self) -> None:
        if len(self):  # tables declared: keep Faust's wait for more of them
            await super().on_start()
            return
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
