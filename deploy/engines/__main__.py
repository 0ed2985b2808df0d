"""``python -m deploy.engines {kafka|cassandra|all} {start|stop|status}``.

Exit status: 0 on success (``status``: every engine asked for answers),
1 if an engine is not running (``status``) or could not be started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

from deploy.engines import ENGINES, cassandra, kafka
from deploy.engines.common import EngineError, default_home

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
        "--cassandra-port",
        type=int,
        default=None,
        help="Cassandra native (CQL) port "
        f"(default $INTEREST_STREAM_CASSANDRA_PORT or {cassandra.DEFAULT_PORT})",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for readiness")
    parser.add_argument("--json", action="store_true", help="print engine info as JSON")
    return parser.parse_args(argv)


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
                    )
                else:
                    info = cassandra.start(home, port=args.cassandra_port, timeout=args.timeout)
                _show(info.to_json() if args.json else info.describe())
            elif args.action == "stop":
                module.stop(home)  # logs what it did, or that nothing ran
            else:
                info = module.status(home)
                if info is None:
                    _show(f"{name} is not running (or not answering) for {home / name}")
                    code = 1
                else:
                    _show(info.to_json() if args.json else info.describe())
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return code


def _show(what: object) -> None:
    print(json.dumps(what, indent=2) if isinstance(what, dict) else what, flush=True)


if __name__ == "__main__":
    sys.exit(main())
