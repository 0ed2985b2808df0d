"""`models.atomic_write.write_atomic`: old or new content, never a part, no litter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import models.atomic_write as atomic_write
from models.atomic_write import write_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    write_atomic(target, "old")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_write.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_the_file_gets_the_mode_a_plain_open_gives(tmp_path: Path) -> None:
    """Exported folders are read by other users: not the 0600 of a mkstemp file."""
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "weights.npz", b"\x00\x01")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "weights.npz").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644


def test_bytes_and_text(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"\xff")
    write_atomic(tmp_path / "b", "é")
    assert (tmp_path / "a").read_bytes() == b"\xff"
    assert (tmp_path / "b").read_bytes() == "é".encode()
