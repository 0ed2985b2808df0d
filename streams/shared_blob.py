"""Compare-and-set blobs in the store: what every worker shares and merges into.

The topic model (`streams.shared_topics`), the learned model's item
prototypes (`streams.shared_prototypes`) and the cold-start popularity
counts (`streams.shared_popularity`) each live in one versioned blob
(`Store.get_blob`, `Store.put_blob`). A worker reads the blob when it is
newer than the version it holds; it writes by building the new value from
what it holds and its own additions, and when another worker wrote first
it reloads and builds again on top of theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from streams.failures import InfrastructureError
from streams.stores.base import Store

log = logging.getLogger("interest_stream.shared")

#: Writes in a row that may lose to another worker before the store is blamed.
MAX_ATTEMPTS = 8


class Serialisable(Protocol):
    def to_bytes(self) -> bytes: ...


T = TypeVar("T")
S = TypeVar("S", bound=Serialisable)


def read_newer(
    store: Store, name: str, version: int, decode: Callable[[bytes], T], what: str
) -> tuple[T | None, int] | None:
    """The blob ``name`` decoded, with its version, when its version is not ``version``.

    None when there is no blob or it is the one held. A blob ``decode``
    refuses (`ValueError`: corrupt, or a newer format) is logged and comes
    back as ``(None, its version)``: keep what you have; your next write
    replaces it.
    """
    blob = store.get_blob(name)
    if blob is None or blob.version == version:
        return None
    try:
        return decode(blob.data), blob.version
    except ValueError as exc:
        log.error("%s v%d in the store is unreadable: %s", what, blob.version, exc)
        return None, blob.version


def write_merged(
    store: Store,
    name: str,
    build: Callable[[], S],
    version: Callable[[], int],
    reload: Callable[[], None],
    what: str,
) -> tuple[S, int]:
    """Write ``build()`` over the blob at ``version()``; on losing, ``reload`` and build again.

    Returns the value written and its new version. `InfrastructureError`
    after `MAX_ATTEMPTS` lost writes in a row.
    """
    for _ in range(MAX_ATTEMPTS):
        value = build()
        written = store.put_blob(name, value.to_bytes(), version())
        if written is not None:
            return value, written.version
        reload()  # another worker wrote first: build ours on top of theirs
    raise InfrastructureError(f"{what}: {MAX_ATTEMPTS} concurrent writers in a row")
