"""The local CA and server key store of ``deploy.engines.tls`` (needs keytool)."""

from __future__ import annotations

import os
import ssl
import stat
import time
from pathlib import Path

from deploy.engines import tls


def test_material_is_made_once_private_and_renewed_before_expiry(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = tls.ensure(folder)
    assert first.ca_pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
    ssl.create_default_context(cafile=str(first.ca_pem))  # a CA Python accepts
    for path in (first.keystore, folder / "password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    assert tls.ensure(folder) == first  # reused: same password, same files

    old = time.time() - (tls.RENEW_AFTER_DAYS + 1) * 86400
    os.utime(first.ca_pem, (old, old))
    renewed = tls.ensure(folder)
    assert renewed.password != first.password
    assert tls._age_days(renewed.ca_pem) < 1
