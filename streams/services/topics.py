"""Kafka topic administration: the project's topics, plus helpers for tests and tools.

Every function takes either a bootstrap address (``"host:port"``, plaintext) or a
:class:`~streams.settings.Settings`, whose security options (SASL, SSL) are then used.
An unreachable broker raises :class:`~streams.errors.RiskstreamError` with one line.

Examples
--------
>>> from streams.settings import Settings
>>> s = Settings(topic_partitions=6, topic_dlq="tx.dlq")
>>> wanted = project_topics(s)
>>> wanted["tx.dlq"], wanted[s.topic_model_updates]
(6, 1)
>>> kafka_client_options(Settings(kafka_bootstrap_servers="b:9092"))["bootstrap_servers"]
'b:9092'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from streams.errors import RiskstreamError
from streams.settings import Settings

log = logging.getLogger(__name__)

Target = str | Settings

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


def kafka_client_options(target: Target) -> dict[str, Any]:
    """kafka-python client options (bootstrap, security) for ``target``."""
    if isinstance(target, str):
        return {"bootstrap_servers": target}
    opts: dict[str, Any] = {
        "bootstrap_servers": target.kafka_bootstrap_servers,
        "security_protocol": target.kafka_security_protocol,
    }
    if target.kafka_security_protocol.startswith("SASL"):  # PLAIN unless told otherwise
        opts["sasl_mechanism"] = target.kafka_sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = target.kafka_sasl_username
        if target.kafka_sasl_password is not None:
            opts["sasl_plain_password"] = target.kafka_sasl_password.get_secret_value()
    for name in ("cafile", "certfile", "keyfile"):
        value = getattr(target, f"kafka_ssl_{name}")
        if value is not None:
            opts[f"ssl_{name}"] = str(value)
    return opts


def _bootstrap(target: Target) -> str:
    return target if isinstance(target, str) else target.kafka_bootstrap_servers


@contextmanager
def admin_client(target: Target, *, timeout_s: float = 10.0) -> Iterator[Any]:
    """A connected ``kafka.KafkaAdminClient``, closed on exit.

    Raises
    ------
    RiskstreamError
        If no broker answers within ``timeout_s``.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **kafka_client_options(target),
            client_id="riskstream-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 1000),
        )
    except KafkaError as exc:
        sasl = not isinstance(target, str) and target.kafka_security_protocol.startswith("SASL")
        hint = (
            "is it running, and are the SASL user name and password right?"
            if sasl
            else "is it running? `riskstream up` starts one"
        )
        raise RiskstreamError(
            f"Kafka is not reachable at {_bootstrap(target)}: {type(exc).__name__} ({hint})"
        ) from exc
    try:
        yield admin
    finally:
        admin.close()


def project_topics(settings: Settings) -> dict[str, int]:
    """The topics riskstream uses, with their partition counts (model updates: one)."""
    partitions = settings.topic_partitions
    return {
        settings.topic_transactions: partitions,
        settings.topic_labels: partitions,
        settings.topic_scores: partitions,
        settings.topic_alerts: partitions,
        settings.topic_dlq: partitions,
        # One partition keeps every worker seeing model versions in publication order.
        settings.topic_model_updates: 1,
    }


def topic_partitions(target: Target, names: Iterable[str]) -> dict[str, int]:
    """Partition count of each of ``names`` that exists (missing ones are left out)."""
    with admin_client(target) as admin:
        described = admin.describe_topics(list(names))
    return {t["name"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}


def create_topics(
    target: Target,
    topics: dict[str, int],
    *,
    replication: int = 1,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create each ``{name: partitions}`` that does not exist yet; return the created names.

    Waits until every created topic has a leader on each partition, so a producer or
    consumer can use it at once.
    """
    if not topics:
        return []
    request = {
        name: {
            "num_partitions": partitions,
            "replication_factor": replication,
            "configs": dict(configs or {}),
        }
        for name, partitions in topics.items()
    }
    with admin_client(target) as admin:
        response = admin.create_topics(request, timeout_ms=30_000, raise_errors=False)
        created, failed = [], []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code != _TOPIC_ALREADY_EXISTS:
                failed.append(f"{result['name']}: {result.get('error_message') or code}")
        if failed:
            raise RiskstreamError(f"could not create Kafka topics: {'; '.join(failed)}")
        admin.wait_for_topics(created, timeout_ms=30_000)
    return created


def create_topic(
    target: Target,
    name: str,
    partitions: int = 4,
    *,
    replication: int = 1,
    configs: dict[str, str] | None = None,
) -> bool:
    """Create one topic; True if it was created, False if it already existed."""
    created = create_topics(target, {name: partitions}, replication=replication, configs=configs)
    return bool(created)


def delete_topics(target: Target, names: Iterable[str]) -> list[str]:
    """Delete the topics among ``names`` that exist; return the deleted names."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    with admin_client(target) as admin:
        response = admin.delete_topics(wanted, timeout_ms=30_000, raise_errors=False)
    deleted = []
    for result in response["topics"]:
        if result["error_code"] == 0:
            deleted.append(result["name"])
        elif result["error_code"] != _UNKNOWN_TOPIC:
            log.warning("could not delete topic %s: error %s", result["name"], result["error_code"])
    return deleted


def list_topics(target: Target) -> list[str]:
    """Names of every topic in the cluster, internal ones included, sorted."""
    with admin_client(target) as admin:
        return sorted(admin.list_topics())


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create the project's missing topics (see :func:`project_topics`).

    Returns every project topic with its actual partition count. An existing topic with
    fewer partitions than configured is left alone (adding partitions would move keys and
    break per-card state) and logged as a warning.
    """
    wanted = project_topics(settings)
    existing = topic_partitions(settings, wanted)
    missing = {name: n for name, n in wanted.items() if name not in existing}
    create_topics(settings, missing, replication=settings.topic_replication)
    for name, count in existing.items():
        if count < wanted[name]:
            log.warning("topic %s has %d partitions; settings ask %d", name, count, wanted[name])
    return {name: existing.get(name, wanted[name]) for name in wanted}
