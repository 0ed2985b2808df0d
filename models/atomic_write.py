"""Write a file so that readers see the old content or the new one, never a part.

The encoder export's manifest, the learned updater's weights and manifest,
and the embedding caches are read by other processes (workers, a second
eval run) while one may be writing them; a crash mid-write must not leave a
truncated file under the real name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` through a temp file and a rename.

    The temp file sits in the same folder (a rename is atomic only within one
    file system) under a name unique to this call, so concurrent writers of
    the same path never write into each other's temp file; the last rename
    wins. It is flushed to disk before the rename, created with the mode a
    plain ``open`` would give (the umask applies: exported folders are read
    by other users), and removed when anything fails.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_atomic(folder / "a.json", '{"v": 1}')
    >>> write_atomic(folder / "a.json", b'{"v": 2}')
    >>> (folder / "a.json").read_text(), sorted(p.name for p in folder.iterdir())
    ('{"v": 2}', ['a.json'])
    >>> import shutil; shutil.rmtree(folder)
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
