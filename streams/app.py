"""The one Faust app of a riskstream worker, built from the settings.

:func:`create_app` declares the topics (:mod:`streams.topics`), the card-state table
(:mod:`streams.tables`), the agents (:mod:`streams.agents`) and the ``/metrics`` page,
and wires the score pipeline to Redis, the scorer runtime and the app's producer.
Everything lives on the returned app's :attr:`RiskstreamApp.rs`.

Producer: linger 5 ms (a setting) and 1 MB batches, the fastest measured here
(ANCHORS.md). Consumer: Faust's defaults for fetch sizes (larger ``max_poll_records``
measured slower), commits every ``commit_interval_s``, and, in ``batch`` consume mode,
the batch hook of :mod:`streams.consumer` for ``transactions``.
"""

from __future__ import annotations

import gc
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import faust
from faust.types.transports import ConsumerT

from streams import adaptive, lag, native
from streams.agents import labels as labels_agent
from streams.agents import score as score_agent
from streams.alert_dedupe import AlertClaims
from streams.consumer import BatchConsumer
from streams.emitter import Emitter
from streams.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streams.metrics import METRICS, RiskstreamMetrics, metrics_payload
from streams.pipeline import ScorePipeline
from streams.recovery_watch import RecoveryProgress, watch_recovery
from streams.redis_conn import RedisGuard, connect_redis
from streams.runner import BatchRunner
from streams.runtime import ScorerRuntime, load_scorer
from streams.scored_store import ScoredStore
from streams.settings import Settings
from streams.tables import CardStates, define_card_table
from streams.terminal_store import TerminalStore
from streams.topics import Topics, define_topics

log = logging.getLogger(__name__)


class RiskstreamApp(faust.App):
    """A Faust app whose consumer may hand the score topic over in batches."""

    rs: Riskstream
    batch_consumer: bool = False

    async def on_start(self) -> None:
        await super().on_start()
        rs = getattr(self, "rs", None)
        if rs is not None:
            # Not an app timer: Faust starts those only after the first restore is done,
            # and a worker's first restore (after a crash or a deploy) can stall too.
            progress = RecoveryProgress(
                stall_s=rs.settings.recovery_stall_s,
                max_restarts=rs.settings.recovery_max_restarts,
            )
            self.add_future(watch_recovery(self, progress, rs.metrics))

    def _new_consumer(self) -> ConsumerT:
        if self.batch_consumer:
            # Only this app's transport instance gets the batching consumer class.
            self.transport.Consumer = BatchConsumer  # type: ignore[misc]
        consumer = super()._new_consumer()
        rs = getattr(self, "rs", None)
        if isinstance(consumer, BatchConsumer) and rs is not None:
            # Attached before the first fetch: no record may take the agent's path first.
            consumer.attach(rs.runner, [rs.settings.topic_transactions])
        return consumer

    def _create_directories(self) -> None:
        self.conf.datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        super()._create_directories()


@dataclass
class Riskstream:
    """Everything a worker's agents share."""

    app: RiskstreamApp
    settings: Settings
    topics: Topics
    card_table: Any
    runtime: ScorerRuntime[Any]
    redis: Any
    guard: RedisGuard
    terminals: TerminalStore
    scored: ScoredStore
    claims: AlertClaims
    emitter: Emitter
    cards: CardStates
    pipeline: ScorePipeline
    runner: BatchRunner
    metrics: RiskstreamMetrics
    # Few-shot adaptation (issue 5, streams.adaptive.install): the labels agent's batch
    # handler, and the adaptation pieces of this worker.
    label_handler: Any = None
    adaptive: Any = None


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured Kafka security protocol (None: plaintext).

    >>> broker_credentials(Settings()) is None
    True
    >>> type(broker_credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT",
    ...     kafka_sasl_username="u", kafka_sasl_password="p"))).__name__
    'SASLCredentials'
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    return faust.SSLCredentials(context)


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configuration of a worker.

    >>> conf = faust_settings(Settings(kafka_bootstrap_servers="a:1,b:2"))
    >>> conf["broker"], conf["store"], conf["producer_max_batch_size"]
    ('kafka://a:1;kafka://b:2', 'memory://', 1048576)
    """
    brokers = ";".join(
        f"kafka://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",")
    )
    session = settings.session_timeout_s
    return {
        "broker": brokers,
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication,
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "producer_linger": settings.producer_linger_s,
        "producer_max_batch_size": 1 << 20,
        "producer_max_request_size": 4 << 20,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_session_timeout": session,
        "broker_heartbeat_interval": min(3.0, session / 3.0),
        "broker_request_timeout": max(90.0, session + 10.0),
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "stream_wait_empty": True,
        "table_standby_replicas": 1,
        # Faust's data folder (table bookkeeping) under the state dir, not the cwd.
        "datadir": str(settings.state_dir / "faust" / settings.app_id),
    }


def create_app(settings: Settings, *, scorer: Any = None) -> RiskstreamApp:
    """The worker's Faust app; ``scorer`` defaults to the artifact the settings name.

    >>> from streams.runtime import ScorerRuntime
    >>> class Stub:  # any object with a version works for building (not for scoring)
    ...     version = "doc"
    >>> app = create_app(Settings(app_id="doc-app"), scorer=Stub())
    >>> sorted(app.agents), app.rs.runtime.version, app.conf.web_port
    (['labels', 'score'], 'doc', 6066)
    """
    # the score path's compiled kernels, or their Python references (the same outputs)
    native_kernels = native.configure(settings.native)
    app = RiskstreamApp(settings.app_id, **faust_settings(settings))
    app.batch_consumer = settings.consume_mode == "batch"
    topics = define_topics(app, settings)
    table = define_card_table(app, settings)
    prefix = f"{settings.app_id}:"
    redis = connect_redis(settings)
    metrics = METRICS
    guard = RedisGuard(on_change=lambda down: metrics.set_degraded("redis", down))
    runtime: ScorerRuntime[Any] = ScorerRuntime(
        scorer if scorer is not None else load_scorer(settings),
        on_live=lambda s: metrics.record_model_loaded(s.version),
    )
    emitter = Emitter(app)
    cards = CardStates(
        table.data,
        table.changelog_topic.get_topic_name(),
        emitter.send_many,
        native=native_kernels,
    )
    terminals = TerminalStore(
        redis, prefix=prefix, cache_ttl_s=settings.terminal_cache_ttl_s, native=native_kernels
    )
    scored = ScoredStore(redis, prefix=prefix, ttl_s=settings.feature_ttl_s)
    claims = AlertClaims(settings, prefix=prefix)
    pipeline = ScorePipeline(
        settings,
        runtime=runtime,
        cards=cards,
        terminals=terminals,
        scored=scored,
        claims=claims,
        emitter=emitter,
        redis=redis,
        guard=guard,
        metrics=metrics,
        native_kernels=native_kernels,
    )

    async def crash(exc: BaseException) -> None:
        await app.crash(exc)

    runner = BatchRunner(
        pipeline,
        cards,
        ack=lambda records: _ack(app, records),
        max_batch=settings.max_batch,
        flush_interval_s=settings.state_flush_interval_s,
        stopping=lambda: bool(app.should_stop),
        crash=crash,
    )
    app.rs = Riskstream(
        app=app,
        settings=settings,
        topics=topics,
        card_table=table,
        runtime=runtime,
        redis=redis,
        guard=guard,
        terminals=terminals,
        scored=scored,
        claims=claims,
        emitter=emitter,
        cards=cards,
        pipeline=pipeline,
        runner=runner,
        metrics=metrics,
    )
    score_agent.register(app.rs)
    labels_agent.register(app.rs)
    adaptive.install(app.rs)
    lag.install(app.rs)
    _register_web(app)
    _register_startup(app)
    return app


def _ack(app: RiskstreamApp, records: Any) -> None:
    consumer = app.consumer
    if isinstance(consumer, BatchConsumer):
        consumer.ack_records(records)
    # stream mode: Faust acknowledges the events itself after the take() batch


def _register_web(app: RiskstreamApp) -> None:
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            metrics_payload(app.rs.metrics.registry),
            headers={"Content-Type": METRICS_CONTENT_TYPE},
        )


def tune_gc() -> None:
    """Stop the garbage collector rescanning the start-up heap on every collection.

    A worker holds a large, long-lived heap once it has imported torch and loaded its
    model; with Python's default thresholds, the full collections that allocation-heavy
    batches trigger keep walking it. Freezing it (and collecting young objects less
    often) measured ~70 -> ~50 µs of CPU per transaction in the score pipeline. Objects
    are still freed by reference counting; only cycles among frozen objects would stay.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _register_startup(app: RiskstreamApp) -> None:
    @app.task
    async def prepare() -> None:
        rs = app.rs
        consumer = app.consumer
        if isinstance(consumer, BatchConsumer):
            consumer.attach(rs.runner, [rs.settings.topic_transactions])
        rs.metrics.set_worker_info(
            app_id=rs.settings.app_id, score_path="native" if rs.pipeline.native else "python"
        )
        if rs.pipeline.native:
            log.info("score path: the compiled kernels of streams.native")
        else:
            why_not = "RISKSTREAM_NATIVE=false" if native.AVAILABLE else native.MISSING
            log.warning("score path: the Python references (%s)", why_not)
        tune_gc()
        await rs.guard.attempt(rs.terminals.load_scripts)
        await rs.guard.attempt(lambda: rs.claims.load_scripts(rs.redis))

    @app.timer(1.0, name="redis-probe")  # type: ignore[misc]
    async def redis_probe() -> None:
        # Leaves degraded mode when Redis is back even if no batch touches it.
        await app.rs.guard.probe(app.rs.redis)
