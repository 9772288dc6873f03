"""The app's Kafka topics, declared once from the settings.

Inputs (``transactions``, ``labels``) are read as raw bytes: the agents parse them
themselves so that *any* payload gets a dead-letter reason instead of a decode crash.
Outputs are written as bytes already encoded to the wire contract
(``streams.records``), so every topic here is ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.settings import Settings


@dataclass(frozen=True)
class Topics:
    """Every topic the worker reads or writes."""

    transactions: faust.TopicT
    labels: faust.TopicT
    scores: faust.TopicT
    alerts: faust.TopicT
    dlq: faust.TopicT
    model_updates: faust.TopicT


def define_topics(app: faust.App, settings: Settings) -> Topics:
    """Declare the topics on ``app`` (names and partitions from ``settings``).

    >>> app = faust.App("doc-topics", broker="kafka://localhost:1")
    >>> t = define_topics(app, Settings(topic_transactions="tx-in"))
    >>> t.transactions.get_topic_name(), t.transactions.partitions
    ('tx-in', 4)
    """

    def raw(name: str, partitions: int | None) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            replicas=settings.topic_replication,
        )

    n = settings.topic_partitions
    return Topics(
        transactions=raw(settings.topic_transactions, n),
        labels=raw(settings.topic_labels, n),
        scores=raw(settings.topic_scores, n),
        alerts=raw(settings.topic_alerts, n),
        dlq=raw(settings.topic_dlq, n),
        model_updates=raw(settings.topic_model_updates, 1),
    )
