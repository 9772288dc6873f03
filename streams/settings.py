"""The one frozen settings object; the only module that reads environment variables.

Precedence, highest first: keyword arguments, ``RISKSTREAM_*`` environment variables,
the services state file written by ``riskstream up`` (so every command finds the running
Kafka and Redis with no flags), then the defaults below.

Examples
--------
>>> s = Settings(kafka_bootstrap_servers="broker:9092", alert_threshold=0.9)
>>> s.kafka_bootstrap_servers, s.alert_threshold
('broker:9092', 0.9)
>>> s.redis_password.get_secret_value() if s.redis_password else None
>>> "secret" in repr(Settings(model_signing_key="secret"))
False
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "RISKSTREAM_"
STATE_FILE_NAME = "services.json"


def default_state_dir() -> Path:
    """Folder holding the services state file, Kafka data and caches.

    ``RISKSTREAM_STATE_DIR`` overrides it; the default is ``.riskstream`` in the
    current directory, which is the repository root for ``make`` targets.

    >>> default_state_dir().name in {".riskstream"} or "RISKSTREAM_STATE_DIR" in os.environ
    True
    """
    return Path(os.environ.get(ENV_PREFIX + "STATE_DIR", ".riskstream")).resolve()


class _StateFileSource(PydanticBaseSettingsSource):
    """Reads the addresses that ``riskstream up`` recorded for the running services."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = default_state_dir() / STATE_FILE_NAME
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        known = {"kafka_bootstrap_servers", "redis_url"}
        return {k: v for k, v in state.get("settings", {}).items() if k in known}


class Settings(BaseSettings):
    """Every tunable of riskstream. Each field is read from ``RISKSTREAM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- services -----------------------------------------------------------------
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="RISKSTREAM_STATE_DIR: services state file, Kafka jars/data, caches.",
    )
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", description="RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS: host:port[,host:port]."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="RISKSTREAM_KAFKA_SECURITY_PROTOCOL."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="RISKSTREAM_KAFKA_SASL_MECHANISM, with a SASL_* protocol."
    )
    kafka_sasl_username: str | None = Field(None, description="RISKSTREAM_KAFKA_SASL_USERNAME.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="RISKSTREAM_KAFKA_SASL_PASSWORD (masked everywhere)."
    )
    kafka_ssl_cafile: Path | None = Field(None, description="RISKSTREAM_KAFKA_SSL_CAFILE.")
    kafka_ssl_certfile: Path | None = Field(None, description="RISKSTREAM_KAFKA_SSL_CERTFILE.")
    kafka_ssl_keyfile: Path | None = Field(None, description="RISKSTREAM_KAFKA_SSL_KEYFILE.")
    kafka_port: int = Field(
        0, description="RISKSTREAM_KAFKA_PORT: port for the embedded broker; 0 picks a free one."
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="RISKSTREAM_REDIS_URL: any Redis/Valkey; rediss:// for TLS.",
    )
    redis_password: SecretStr | None = Field(
        None, description="RISKSTREAM_REDIS_PASSWORD: Redis AUTH password (masked)."
    )
    redis_port: int = Field(
        0, description="RISKSTREAM_REDIS_PORT: port for the embedded Valkey; 0 picks a free one."
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "riskstream",
        description="RISKSTREAM_CACHE_DIR: shared cache outside the repo (Kafka jars), reused "
        "by every clone and run.",
    )
    kafka_heap_mb: int = Field(
        512, ge=128, description="RISKSTREAM_KAFKA_HEAP_MB: max heap of the embedded broker."
    )
    kafka_start_timeout_s: float = Field(
        60.0, gt=0, description="RISKSTREAM_KAFKA_START_TIMEOUT_S: wait for broker readiness."
    )

    # --- topics ---------------------------------------------------------------------
    app_id: str = Field("riskstream", description="RISKSTREAM_APP_ID: Faust app id / group.")
    topic_transactions: str = Field("transactions", description="RISKSTREAM_TOPIC_TRANSACTIONS.")
    topic_labels: str = Field("labels", description="RISKSTREAM_TOPIC_LABELS.")
    topic_scores: str = Field("scores", description="RISKSTREAM_TOPIC_SCORES.")
    topic_alerts: str = Field("alerts", description="RISKSTREAM_TOPIC_ALERTS.")
    topic_dlq: str = Field("transactions.dlq", description="RISKSTREAM_TOPIC_DLQ.")
    topic_model_updates: str = Field("model-updates", description="RISKSTREAM_TOPIC_MODEL_UPDATES.")
    topic_partitions: int = Field(4, ge=1, description="RISKSTREAM_TOPIC_PARTITIONS.")
    topic_replication: int = Field(1, ge=1, description="RISKSTREAM_TOPIC_REPLICATION.")

    # --- scoring --------------------------------------------------------------------
    alert_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="RISKSTREAM_ALERT_THRESHOLD: score >= this alerts/blocks."
    )
    review_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="RISKSTREAM_REVIEW_THRESHOLD: score >= this is review."
    )
    max_batch: int = Field(1000, ge=1, description="RISKSTREAM_MAX_BATCH: micro-batch size.")
    max_wait_s: float = Field(
        0.01, gt=0, description="RISKSTREAM_MAX_WAIT_S: longest wait to fill a micro-batch."
    )
    max_message_bytes: int = Field(
        65536, ge=256, description="RISKSTREAM_MAX_MESSAGE_BYTES: larger payloads are rejected."
    )
    max_features: int = Field(
        256, ge=0, description="RISKSTREAM_MAX_FEATURES: cap on the free `features` map."
    )
    model_path: Path | None = Field(
        None, description="RISKSTREAM_MODEL_PATH: artifact folder to score with at start."
    )
    explain_top_k: int = Field(3, ge=0, description="RISKSTREAM_EXPLAIN_TOP_K.")

    # --- worker ---------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="RISKSTREAM_WEB_HOST: metrics/web bind.")
    web_port: int = Field(6066, ge=0, description="RISKSTREAM_WEB_PORT: metrics/web port.")
    log_level: str = Field("info", description="RISKSTREAM_LOG_LEVEL.")

    # --- stream processing (streams/app.py, streams/pipeline.py) -----------------------
    native: bool = Field(
        True,
        description="RISKSTREAM_NATIVE: score with the compiled kernels of streams/native"
        " when they are built (false: their Python references, the same outputs).",
    )
    consume_mode: Literal["batch", "stream"] = Field(
        "batch",
        description="RISKSTREAM_CONSUME_MODE: `batch` hands each fetched batch of `transactions`"
        " to the score pipeline at once; `stream` iterates Faust's stream with take().",
    )
    state_flush_interval_s: float = Field(
        1.0, ge=0, description="RISKSTREAM_STATE_FLUSH_INTERVAL_S: card-state changelog flushes."
    )
    terminal_cache_ttl_s: float = Field(
        30.0, ge=0, description="RISKSTREAM_TERMINAL_CACHE_TTL_S: local cache of terminal counts."
    )
    alert_dedupe_ttl_s: int = Field(
        7 * 86400, ge=1, description="RISKSTREAM_ALERT_DEDUPE_TTL_S: alert:{tx_id} keys kept."
    )
    commit_interval_s: float = Field(
        1.0, gt=0, description="RISKSTREAM_COMMIT_INTERVAL_S: consumer offset commits."
    )
    session_timeout_s: float = Field(
        30.0, ge=6, description="RISKSTREAM_SESSION_TIMEOUT_S: a dead worker's partitions move."
    )
    producer_linger_s: float = Field(
        0.005, ge=0, description="RISKSTREAM_PRODUCER_LINGER_S: producer batching delay."
    )
    recovery_stall_s: float = Field(
        15.0,
        gt=0,
        description="RISKSTREAM_RECOVERY_STALL_S: state restore idle this long: restart it.",
    )
    recovery_max_restarts: int = Field(
        3,
        ge=0,
        description="RISKSTREAM_RECOVERY_MAX_RESTARTS: then the worker exits for a restart.",
    )

    # --- labels and adaptation --------------------------------------------------------
    feature_ttl_s: int = Field(
        8 * 86400, ge=1, description="RISKSTREAM_FEATURE_TTL_S: scored feature vectors kept."
    )
    pending_label_ttl_s: float = Field(
        60.0, ge=0, description="RISKSTREAM_PENDING_LABEL_TTL_S: wait for an unknown tx_id."
    )
    case_cap_per_class: int = Field(
        5000, ge=1, description="RISKSTREAM_CASE_CAP_PER_CLASS: labelled cases kept per class."
    )
    adapt_min_new_cases: int = Field(
        10, ge=1, description="RISKSTREAM_ADAPT_MIN_NEW_CASES: new cases that trigger adapting."
    )
    adapt_interval_s: float = Field(
        300.0, gt=0, description="RISKSTREAM_ADAPT_INTERVAL_S: periodic adaptation."
    )
    adapt_strategy: Literal["refresh", "maml", "reptile", "pattern"] = Field(
        "pattern",
        description=(
            "RISKSTREAM_ADAPT_STRATEGY: refresh = new support set; maml/reptile = plus inner"
            " gradient steps; pattern (default) = refresh plus a pattern head fitted against"
            " recent traffic when the labelled frauds come from 3 cards or more, and the plain"
            " refresh when that candidate is refused."
        ),
    )
    adapt_traffic_rows: int = Field(
        20_000,
        ge=100,
        description=(
            "RISKSTREAM_ADAPT_TRAFFIC_ROWS: recent scored transactions sampled from Redis as"
            " the pattern head's reference traffic."
        ),
    )
    adapt_traffic_days: float = Field(
        7.0,
        gt=0,
        description=(
            "RISKSTREAM_ADAPT_TRAFFIC_DAYS: that traffic is cut to the last this many days of"
            " event time."
        ),
    )
    adapt_inner_steps: int = Field(5, ge=0, description="RISKSTREAM_ADAPT_INNER_STEPS.")
    adapt_max_alert_growth: float = Field(
        4.0,
        ge=1,
        description=(
            "RISKSTREAM_ADAPT_MAX_ALERT_GROWTH: a candidate that alerts on more than this many"
            " times the current model's share of recent traffic (+1 point) is not published."
        ),
    )
    model_signing_key: SecretStr = Field(
        SecretStr("riskstream-dev-key-change-me"),
        description="RISKSTREAM_MODEL_SIGNING_KEY: HMAC-SHA256 key for model updates.",
    )
    model_keep_versions: int = Field(
        50, ge=1, description="RISKSTREAM_MODEL_KEEP_VERSIONS: model versions kept in Redis."
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.review_threshold > self.alert_threshold:
            raise ValueError("review_threshold must not exceed alert_threshold")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _StateFileSource(settings_cls), file_secret_settings)

    def masked(self) -> dict[str, Any]:
        """Effective settings as JSON-ready values, secrets shown as ``**********``.

        >>> Settings(redis_password="hunter2").masked()["redis_password"]
        '**********'
        """
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********"
            elif isinstance(value, Path):
                out[name] = str(value)
            elif name.endswith("_url") and isinstance(value, str):
                out[name] = safe_url(value)  # redis://:password@host is allowed too
            else:
                out[name] = value
        return out

    @property
    def state_file(self) -> Path:
        """Where ``riskstream up`` records the running services."""
        return self.state_dir / STATE_FILE_NAME


def safe_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***`` (for messages and logs).

    >>> safe_url("redis://:s3cret@host:6379/0"), safe_url("redis://u:p@h/0")
    ('redis://:***@host:6379/0', 'redis://u:***@h/0')
    >>> safe_url("redis://host:6379/0")
    'redis://host:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def env_field_names() -> frozenset[str]:
    """Fields set explicitly through ``RISKSTREAM_*`` variables (not defaults, not state file).

    ``riskstream up`` uses it to tell "use this external server" from "start the embedded one".

    >>> "app_id" in env_field_names() or "RISKSTREAM_APP_ID" not in os.environ
    True
    """
    given = {key.upper() for key in os.environ}
    return frozenset(name for name in Settings.model_fields if ENV_PREFIX + name.upper() in given)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
