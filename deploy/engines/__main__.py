"""``python -m deploy.engines {kafka|cassandra|all} {start|stop|status}``.

Exit status: 0 on success (``status``: every engine asked for answers),
1 if an engine is not running (``status``) or could not be started.

``--kafka-tls`` makes (once) a CA and key store under ``HOME/tls`` and adds
Kafka's SSL listener (and SASL_SSL with ``--kafka-sasl-user``); ``start`` and
``status`` print the CA file clients trust (JSON: ``ca_file``).
``--cassandra-user NAME=PASSWORD`` turns on Cassandra's password
authentication with that login role (superuser ``cassandra``/``cassandra``
besides), ``--cassandra-tls`` makes its native port TLS-only with the same CA.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

from deploy.engines import ENGINES, cassandra, kafka, tls
from deploy.engines.common import EngineError, EngineInfo, default_home

MODULES: dict[str, ModuleType] = {"kafka": kafka, "cassandra": cassandra}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.engines",
        description="Start, stop or inspect local Apache Kafka / Apache Cassandra engines "
        "assembled from Maven Central jars.",
    )
    parser.add_argument("engine", choices=[*ENGINES, "all"])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="folder for data, logs and pid files "
        "(default: $INTEREST_STREAM_ENGINES_HOME or .engines/ in the repo)",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help=f"Kafka client port (default $INTEREST_STREAM_KAFKA_PORT or {kafka.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--kafka-controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default $INTEREST_STREAM_KAFKA_CONTROLLER_PORT, "
        f"{kafka.DEFAULT_CONTROLLER_PORT} with the default client port, else a free one)",
    )
    parser.add_argument(
        "--kafka-sasl-user",
        action="append",
        default=[],
        metavar="NAME=PASSWORD",
        help="add a SASL_PLAINTEXT listener accepting this user with PLAIN, SCRAM-SHA-256 "
        "and SCRAM-SHA-512 (repeat for more users; PLAINTEXT stays the default listener)",
    )
    parser.add_argument(
        "--kafka-sasl-port",
        type=int,
        default=None,
        help="port of the SASL_PLAINTEXT listener "
        "(default $INTEREST_STREAM_KAFKA_SASL_PORT, else a free one)",
    )
    parser.add_argument(
        "--kafka-tls",
        action="store_true",
        help="add an SSL listener (and SASL_SSL with --kafka-sasl-user) presenting a "
        "certificate of a local CA made once under HOME/tls; start/status print its CA file",
    )
    parser.add_argument(
        "--kafka-ssl-port",
        type=int,
        default=None,
        help="port of the SSL listener (default $INTEREST_STREAM_KAFKA_SSL_PORT, else a free one)",
    )
    parser.add_argument(
        "--kafka-sasl-ssl-port",
        type=int,
        default=None,
        help="port of the SASL_SSL listener "
        "(default $INTEREST_STREAM_KAFKA_SASL_SSL_PORT, else a free one)",
    )
    parser.add_argument(
        "--cassandra-port",
        type=int,
        default=None,
        help="Cassandra native (CQL) port "
        f"(default $INTEREST_STREAM_CASSANDRA_PORT or {cassandra.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--cassandra-user",
        action="append",
        default=[],
        metavar="NAME=PASSWORD",
        help="turn on password authentication with this login role, which may create "
        "keyspaces (repeat for more roles)",
    )
    parser.add_argument(
        "--cassandra-tls",
        action="store_true",
        help="make the native port TLS-only, with a certificate of the local CA under HOME/tls",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for readiness")
    parser.add_argument("--json", action="store_true", help="print engine info as JSON")
    args = parser.parse_args(argv)
    try:
        args.kafka_sasl_users = _users(args.kafka_sasl_user, "--kafka-sasl-user")
        args.cassandra_users = _users(args.cassandra_user, "--cassandra-user")
    except ValueError as exc:
        parser.error(str(exc))
    if args.kafka_sasl_port is not None and not args.kafka_sasl_users:
        parser.error("--kafka-sasl-port needs at least one --kafka-sasl-user")
    if args.kafka_ssl_port is not None and not args.kafka_tls:
        parser.error("--kafka-ssl-port needs --kafka-tls")
    if args.kafka_sasl_ssl_port is not None and not (args.kafka_tls and args.kafka_sasl_users):
        parser.error("--kafka-sasl-ssl-port needs --kafka-tls and a --kafka-sasl-user")
    return args


def _users(pairs: list[str], option: str) -> dict[str, str]:
    """``["alice=secret", ...]`` as ``{"alice": "secret", ...}``."""
    users = {}
    for pair in pairs:
        name, sep, password = pair.partition("=")
        if not sep or not name or not password:
            raise ValueError(f"{option} wants NAME=PASSWORD, not {pair!r}")
        users[name] = password
    return users


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    home = (args.home or default_home()).expanduser().resolve()
    names = list(ENGINES) if args.engine == "all" else [args.engine]
    if args.action == "stop":
        names.reverse()  # stop in the reverse order of start
    code = 0
    for name in names:
        module = MODULES[name]
        try:
            if args.action == "start":
                if name == "kafka":
                    info = kafka.start(
                        home,
                        port=args.kafka_port,
                        controller_port=args.kafka_controller_port,
                        timeout=args.timeout,
                        sasl_users=args.kafka_sasl_users or None,
                        sasl_port=args.kafka_sasl_port,
                        tls=tls.ensure(home / "tls") if args.kafka_tls else None,
                        ssl_port=args.kafka_ssl_port,
                        sasl_ssl_port=args.kafka_sasl_ssl_port,
                    )
                else:
                    info = cassandra.start(
                        home,
                        port=args.cassandra_port,
                        timeout=args.timeout,
                        users=args.cassandra_users or None,
                        tls=tls.ensure(home / "tls") if args.cassandra_tls else None,
                    )
                _show_info(info, args.json)
            elif args.action == "stop":
                module.stop(home)  # logs what it did, or that nothing ran
            else:
                info = module.status(home)
                if info is None:
                    _show(f"{name} is not running (or not answering) for {home / name}")
                    code = 1
                else:
                    _show_info(info, args.json)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return code


def _show_info(info: EngineInfo, as_json: bool) -> None:
    """The engine's info, plus the CA file of an engine that speaks TLS."""
    if info.name == "kafka":
        ca = kafka.ca_file(info) if "ssl" in info.ports else None
    else:
        ca = cassandra.ca_file(info.home)
    if as_json:
        _show({**info.to_json(), **({"ca_file": str(ca)} if ca else {})})
    else:
        _show(info.describe() + (f"\n{info.name} TLS trusts the CA in {ca}" if ca else ""))


def _show(what: object) -> None:
    print(json.dumps(what, indent=2) if isinstance(what, dict) else what, flush=True)


if __name__ == "__main__":
    sys.exit(main())
