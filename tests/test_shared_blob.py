"""`streams.shared_blob`: the compare-and-set blobs the workers share."""

from __future__ import annotations

import logging

import pytest

from streams.failures import InfrastructureError
from streams.shared_blob import MAX_ATTEMPTS, read_newer, write_merged
from streams.stores.sqlite import SqliteStore


class Text:
    def __init__(self, text: str) -> None:
        self.text = text

    def to_bytes(self) -> bytes:
        return self.text.encode()


def decode(data: bytes) -> str:
    if not data.isascii():
        raise ValueError("not ascii")
    return data.decode()


def test_read_newer_gives_a_newer_blob_only_and_a_refused_one_as_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SqliteStore(":memory:")
    assert read_newer(store, "b", 0, decode, "thing") is None  # no blob
    first = store.put_blob("b", b"one", 0)
    assert first is not None
    assert read_newer(store, "b", 0, decode, "thing") == ("one", first.version)
    assert read_newer(store, "b", first.version, decode, "thing") is None  # the one held
    second = store.put_blob("b", "é".encode(), first.version)
    assert second is not None
    with caplog.at_level(logging.ERROR):
        assert read_newer(store, "b", first.version, decode, "thing") == (None, second.version)
    assert f"thing v{second.version} in the store is unreadable: not ascii" in caplog.text


def test_write_merged_builds_again_on_top_of_a_writer_that_came_first() -> None:
    store = SqliteStore(":memory:")
    held = {"text": "", "version": 0}
    other = store.put_blob("b", b"theirs", 0)  # another worker, unseen by us
    assert other is not None

    def reload() -> None:
        got = read_newer(store, "b", held["version"], decode, "thing")
        assert got is not None and got[0] is not None
        held["text"], held["version"] = got

    value, version = write_merged(
        store, "b", lambda: Text(held["text"] + "+ours"), lambda: held["version"], reload, "thing"
    )
    assert value.text == "theirs+ours" and version == store.get_blob("b").version
    assert store.get_blob("b").data == b"theirs+ours"


def test_write_merged_blames_the_store_after_losing_every_attempt() -> None:
    store = SqliteStore(":memory:")
    assert store.put_blob("b", b"x", 0) is not None
    reloads = []
    with pytest.raises(InfrastructureError, match=f"thing: {MAX_ATTEMPTS} concurrent writers"):
        write_merged(store, "b", lambda: Text("y"), lambda: 0, lambda: reloads.append(1), "thing")
    assert len(reloads) == MAX_ATTEMPTS
