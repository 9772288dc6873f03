"""Real services for integration tests: ONE Kafka broker and ONE Valkey per test run.

Fixtures
--------
kafka_broker     (session) the running :class:`~streams.services.kafka.KafkaBroker`
kafka_bootstrap  (session) its ``"127.0.0.1:<port>"``
redis_url        (session) the embedded Valkey's URL, or ``RISKSTREAM_REDIS_URL`` when set
                 in the environment (then nothing is started; its database gets FLUSHDB
                 after each test that uses ``redis_client``, so point it at a scratch db)
settings         (function) factory ``settings(**overrides) -> Settings`` pointed at both,
                 with a unique ``app_id`` and unique topic names; ``create_topics=True``
                 creates the project topics first. Topics named by it, and topics starting
                 with its ``app_id`` (Faust's changelogs), are deleted after the test.
make_topic       (function) factory ``make_topic(name=None, partitions=4) -> str``; the
                 topics are deleted after the test
redis_client     (function) a ``redis.Redis`` (bytes in, bytes out); FLUSHDB after the test
kafka_admin      (session) a ``kafka.KafkaAdminClient`` on the broker

Both services run on free ports, die with the test process even on ``kill -9``, and are
stopped at the end of the session whatever the tests did.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streams.services.kafka import KafkaBroker
from streams.services.process import ServiceStartError
from streams.services.topics import create_topics, delete_topics, ensure_topics, list_topics
from streams.services.valkey import EmbeddedValkey
from streams.settings import Settings, env_field_names

SettingsFactory = Callable[..., Settings]
TopicFactory = Callable[..., str]


def _start_or_fail(service: KafkaBroker | EmbeddedValkey) -> None:
    try:
        service.start()
    except ServiceStartError as exc:
        pytest.fail(f"{exc}\n{exc.log_tail}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's Apache Kafka broker (KRaft, one node, free ports)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), owned=True)
    started = time.monotonic()
    try:
        _start_or_fail(broker)
        print(f"\nkafka {broker.bootstrap_servers} ready in {time.monotonic() - started:.2f} s")
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of the session's broker."""
    return kafka_broker.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's Redis URL: ``RISKSTREAM_REDIS_URL`` if set, else an embedded Valkey."""
    if "redis_url" in env_field_names():
        yield Settings().redis_url
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), owned=True)
    try:
        _start_or_fail(server)
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[Any]:
    """A ``kafka.KafkaAdminClient`` connected to the session's broker."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    try:
        yield admin
    finally:
        admin.close()


def _slug(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-").lower()
    return f"{name[:24]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(
    kafka_bootstrap: str,
    redis_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[SettingsFactory]:
    """Factory of settings for one test: its own app id, topics and state folder."""
    made: list[Settings] = []

    def make(create_topics: bool = False, **overrides: Any) -> Settings:
        slug = _slug(request)
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "redis_url": redis_url,
            "state_dir": tmp_path / f"state-{slug}",
            "app_id": f"rs-{slug}",
            "topic_transactions": f"transactions-{slug}",
            "topic_labels": f"labels-{slug}",
            "topic_scores": f"scores-{slug}",
            "topic_alerts": f"alerts-{slug}",
            "topic_dlq": f"transactions.dlq-{slug}",
            "topic_model_updates": f"model-updates-{slug}",
        }
        values.update(overrides)
        made.append(Settings(**values))
        if create_topics:
            ensure_topics(made[-1])
        return made[-1]

    yield make
    if made:
        existing = list_topics(kafka_bootstrap)
        doomed = set()
        for s in made:
            names = {s.topic_transactions, s.topic_labels, s.topic_scores, s.topic_alerts}
            names |= {s.topic_dlq, s.topic_model_updates}
            doomed |= {t for t in existing if t in names or t.startswith(s.app_id + "-")}
        delete_topics(kafka_bootstrap, doomed)


@pytest.fixture
def make_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Factory ``make_topic(name=None, partitions=4) -> name``; deletes its topics after."""
    made: list[str] = []

    def make(name: str | None = None, partitions: int = 4, **configs: str) -> str:
        topic = name or f"t-{_slug(request)}"
        create_topics(kafka_bootstrap, {topic: partitions}, configs=configs or None)
        made.append(topic)
        return topic

    yield make
    delete_topics(kafka_bootstrap, made)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis (bytes values); its database is flushed after."""
    password = Settings().redis_password
    client = redis.Redis.from_url(
        redis_url, password=password.get_secret_value() if password else None
    )
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test only (it may stop and restart it); stopped afterwards."""
    broker = KafkaBroker(tmp_path / "private-kafka", owned=True)
    try:
        _start_or_fail(broker)
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def private_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of this test only (it may stop and restart it); stopped afterwards.

    It saves its data set on shutdown and reloads it on start, as a production Redis with
    snapshots does, so a stop/start is an outage, not a wipe.
    """
    server = EmbeddedValkey(tmp_path / "private-valkey", owned=True, persist=True)
    try:
        _start_or_fail(server)
        yield server
    finally:
        server.stop()
