"""A Cassandra keyspace's replication map: its default, its one check, its CQL literal.

`Settings` checks ``cassandra_replication`` with `parse_replication` at load
time, and the Cassandra store renders the same map with `replication_cql`
when it creates the keyspace, so a value that loads is one the store
accepts (the check used to be done twice, and the settings let through maps
the store then refused at the first worker start). Standard library only:
`streams.settings` imports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: One replica: a single local node. Production names its DCs (NetworkTopologyStrategy).
DEFAULT_REPLICATION = '{"class": "SimpleStrategy", "replication_factor": 1}'

# Class names, DC names and factors: nothing that could close the CQL string literal.
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]+")


def parse_replication(replication: Mapping[str, Any] | str) -> dict[str, str]:
    """The map (a dict or its JSON) as strings; ValueError if it is not a safe one with a class.

    >>> parse_replication('{"class": "NetworkTopologyStrategy", "dc1": 3}')
    {'class': 'NetworkTopologyStrategy', 'dc1': '3'}
    >>> parse_replication({"replication_factor": 1})
    Traceback (most recent call last):
    ...
    ValueError: replication must be a map with a 'class'
    """
    try:
        value = json.loads(replication) if isinstance(replication, str) else dict(replication)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"replication is not a JSON object: {exc}") from exc
    if not isinstance(value, dict) or "class" not in value:
        raise ValueError("replication must be a map with a 'class'")
    out = {}
    for key, option in value.items():
        key, option = str(key), str(option)
        if not (_TOKEN.fullmatch(key) and _TOKEN.fullmatch(option)):
            raise ValueError(f"unsafe replication option {key!r}: {option!r}")
        out[key] = option
    return out


def replication_cql(replication: Mapping[str, Any] | str) -> str:
    """The map as a CQL map literal, checked by `parse_replication`.

    >>> replication_cql(DEFAULT_REPLICATION)
    "{'class': 'SimpleStrategy', 'replication_factor': '1'}"
    """
    parsed = parse_replication(replication)
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in parsed.items()) + "}"
