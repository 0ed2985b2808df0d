"""`streams.faust_tables.TablelessManager`: no start-up sleep without tables, Faust's with."""

from __future__ import annotations

import asyncio
from unittest import mock

import faust

from streams.app import app_config
from streams.faust_tables import TablelessManager
from streams.settings import Settings


def _started(app: faust.App) -> mock.AsyncMock:
    """Run the app's table manager's on_start with its I/O faked; return its sleep."""
    manager = app.tables
    sleep = mock.AsyncMock()
    with (
        mock.patch.object(manager, "sleep", sleep),
        mock.patch.object(manager, "_update_channels", mock.AsyncMock()) as channels,
        mock.patch.object(type(manager), "recovery", mock.Mock(start=mock.AsyncMock())),
    ):
        asyncio.run(manager.on_start())
        channels.assert_awaited_once()
        manager.recovery.start.assert_awaited_once()
    return sleep


def test_a_worker_app_starts_its_tables_at_once() -> None:
    app = faust.App("tables-a", **app_config(Settings(), "127.0.0.1:9092"))
    assert isinstance(app.tables, TablelessManager)
    _started(app).assert_not_awaited()


def test_with_a_table_declared_it_keeps_faust_s_wait() -> None:
    app = faust.App("tables-b", **app_config(Settings(), "127.0.0.1:9092"))
    app.Table("counts", default=int)
    _started(app).assert_awaited_once_with(1.0)
