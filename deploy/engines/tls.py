"""A throwaway certificate authority and server key store for local engines.

    from deploy.engines import tls
    material = tls.ensure(home / "tls")      # TlsMaterial: ca.pem, server.p12, password
    # Kafka / Cassandra: keystore material.keystore (PKCS12), material.password
    # clients: CA file material.ca_pem, server name 127.0.0.1 or localhost

Made with the JDK's ``keytool`` (the launchers need Java anyway, so no new
dependency): a self-signed CA, and a server key pair whose certificate the CA
signs for ``IP:127.0.0.1`` and ``DNS:localhost``, so clients can verify the
hostname. The CA carries a key usage extension (keyCertSign): OpenSSL's
strict verification, Python 3.13's default, refuses a CA without one. Made
once per folder and reused; the password lives next to the key store (these
are test engines on loopback, not a secret store).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.engines import common
from deploy.engines.common import EngineError

VALIDITY_DAYS = "365"
RENEW_AFTER_DAYS = 335
SERVER_NAMES = "IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class TlsMaterial:
    """Paths clients and engines need; ``password`` opens the PKCS12 key store."""

    folder: Path
    ca_pem: Path
    keystore: Path
    password: str


def ensure(folder: Path) -> TlsMaterial:
    """The CA and server key store under ``folder``, made on first use.

    Made again once it is older than :data:`RENEW_AFTER_DAYS` (before the
    certificates expire); engines started earlier keep the old key store
    until they restart. The folder is private to its owner (0700).
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem, keystore, secret = folder / "ca.pem", folder / "server.p12", folder / "password"
    with common.locked(folder / ".lock"):
        present = ca_pem.exists() and keystore.exists() and secret.exists()
        if not present or _age_days(ca_pem) > RENEW_AFTER_DAYS:
            _make(folder, ca_pem, keystore, secret)
    return TlsMaterial(folder, ca_pem, keystore, secret.read_text().strip())


def _age_days(path: Path) -> float:
    return (time.time() - path.stat().st_mtime) / 86400


def _make(folder: Path, ca_pem: Path, keystore: Path, secret: Path) -> None:
    keytool = common.require_tool("keytool")
    password = secrets.token_hex(16)
    ca_store = folder / "ca.p12"
    for path in (ca_store, keystore, ca_pem):
        path.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]

    def run(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [keytool, *args], input=stdin, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-800:]
            raise EngineError(f"keytool {args[0]} failed ({proc.returncode}): {output}")
        return proc.stdout

    run("-genkeypair", "-alias", "ca", "-dname", "CN=interest-stream local CA",
        "-keyalg", "RSA", "-keysize", "2048", "-validity", VALIDITY_DAYS,
        "-ext", "bc:c", "-ext", "KU:c=keyCertSign,cRLSign",
        "-keystore", str(ca_store), *store)  # fmt: skip
    ca_pem.write_text(
        run("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), *store)
    )
    run("-genkeypair", "-alias", "server", "-dname", "CN=localhost",
        "-keyalg", "RSA", "-keysize", "2048", "-validity", VALIDITY_DAYS,
        "-keystore", str(keystore), *store)  # fmt: skip
    request = run("-certreq", "-alias", "server", "-keystore", str(keystore), *store)
    signed = run("-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca_store),
                 "-ext", f"SAN={SERVER_NAMES}", "-ext", "EKU=serverAuth",
                 "-validity", VALIDITY_DAYS, *store, stdin=request)  # fmt: skip
    chain = folder / "server-chain.pem"
    chain.write_text(signed + ca_pem.read_text())
    run("-importcert", "-noprompt", "-alias", "server", "-file", str(chain),
        "-keystore", str(keystore), *store)  # fmt: skip
    chain.unlink()
    ca_store.unlink()  # nothing else is ever signed: the CA key is not kept
    secret.write_text(password + "\n")
    for path in (keystore, secret):
        path.chmod(0o600)
    folder.chmod(0o700)
