"""One frozen settings object for every service: env vars `MOODWIRE_*`, optionally a TOML file.

Precedence (highest first): explicit keyword arguments, environment variables, the TOML file
named by `MOODWIRE_CONFIG` (or passed to `load_settings`), defaults.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from moodwire.connector_settings import (
    BlueskySettings,
    MastodonSettings,
    PushSettings,
    RedditSettings,
    StocktwitsSettings,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "MOODWIRE_"
# The file given to load_settings, seen by the TOML source without touching os.environ.
_config_file: ContextVar[str | None] = ContextVar("moodwire_config_file", default=None)


class FeedConfig(BaseModel):
    """One RSS/Atom feed to poll."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    interval_s: float = Field(default=300.0, ge=5.0, description="seconds between polls")
    name: str | None = None


# Posts per scorer micro-batch (one insert, one commit). 256 rather than 64: on 2 cores the
# broker -> ClickHouse rate went from 450 to 648 posts/s and the server's CPU from 0.25 to 0.10
# cores (fewer, larger inserts and merges), with p99 publish -> queryable 1.4 s at half load
# (bench/e2e_bench.py). Under light load batch_max_wait_ms, not this, bounds the wait.
DEFAULT_BATCH_MAX_SIZE = 256


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_nested_delimiter="__",
        # `MOODWIRE_WEBHOOK_URL=` (as .env files and compose write an unset value) means unset,
        # not the value "": the default applies.
        env_ignore_empty=True,
    )

    # Where the embedded default keeps chDB data and source checkpoints.
    data_dir: Path = Path("moodwire-data")

    bus: Literal["memory", "kafka"] = "memory"
    store: Literal["chdb", "clickhouse"] = "chdb"

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    posts_topic: str = "posts"
    dead_letter_topic: str = "posts-dead-letter"
    topic_partitions: int = Field(default=4, ge=1)
    consumer_group: str = "moodwire-scorer"
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    # How long the broker may hold a fetch when it has nothing new (Kafka's fetch.max.wait.ms).
    # 100 rather than Kafka's 500: publish -> queryable p50 at half load went from 1.06 to 0.86 s
    # (bench/e2e_bench.py on tansu), for a few more fetch requests a second while idle.
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=0, le=60_000)
    # How long the producer keeps trying one send before reporting it failed (Kafka's
    # delivery.timeout.ms, 120 s by default): ingest retries a refused batch itself, with backoff,
    # so a shorter bound lets it notice an outage, and a stop, sooner.
    kafka_delivery_timeout_ms: int = Field(default=30_000, ge=5_000, le=600_000)

    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = Field(default=9000, ge=1, le=65535)
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_database: str = "moodwire"
    # A cluster of the server's remote_servers: the schema becomes local tables on every shard
    # with Distributed tables over them under the usual names (README "Scale out").
    clickhouse_cluster: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    clickhouse_timeout_s: float = Field(default=30.0, gt=0)
    # The longest an analyst's query (`moodwire sql`, the report, the query endpoint) may run.
    analyst_query_timeout_s: float = Field(default=60.0, gt=0, le=3600)

    model_dir: Path | None = None
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    # Posts per scorer micro-batch: one insert and one commit (not the ONNX batch, below).
    batch_max_size: int = Field(default=DEFAULT_BATCH_MAX_SIZE, ge=1, le=4096)
    batch_max_wait_ms: int = Field(default=250, ge=0, le=60_000)
    # Rows per ONNX Runtime call; unset: the runtime's default (64 on a CPU, 256 on a GPU).
    inference_batch_size: int | None = Field(default=None, ge=1, le=4096)
    # Threads one scorer process gives the model (ONNX Runtime and the tokenizer); unset: every
    # core it may use. N scorers on one CPU host: cores / N each (README "Scale out").
    inference_threads: int | None = Field(default=None, ge=1, le=256)
    # While the store is down, a held batch tries again this often (so it is stored within about
    # this long of the store's return).
    store_retry_interval_s: float = Field(default=1.0, gt=0, le=60)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    text_max_chars: int = Field(default=4_000, ge=64)

    # Days of per-minute history behind each symbol's baseline (time-of-day aware).
    alert_baseline_days: int = Field(default=7, ge=1, le=28)
    # How long to wait for late posts before a minute is recorded as complete (the minutes so
    # far are evaluated every alert_interval_s before that; later posts still add evidence).
    alert_lateness_minutes: int = Field(default=1, ge=0, le=60)
    # How often the alert job evaluates the minutes so far and delivers what is due.
    alert_interval_s: float = Field(default=5.0, ge=1.0)
    # An opened alert waits this long for others to share its message.
    alert_group_wait_s: float = Field(default=15.0, ge=0, le=600)
    # Negative spikes on this many tickers within 15 minutes are one market-wide notification.
    alert_market_min_symbols: int = Field(default=4, ge=2)
    # Several `moodwire alert` processes on one store: one holds a lease in ClickHouse and does
    # the work; another takes over within this long when it stops renewing.
    alert_lease_s: float = Field(default=30.0, ge=3.0, le=3600)
    # What the detector's share test counts: stories labelled negative, or the model's
    # P(negative) summed over stories (alerting/detector.py).
    alert_evidence: Literal["labels", "probabilities"] = "labels"

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_format: Literal["moodwire", "slack"] = "moodwire"
    # Alertmanager's base URL (e.g. http://alertmanager:9093): moodwire's alerts go to its
    # /api/v2/alerts as well, for its grouping, silences and receivers.
    alertmanager_url: str | None = None
    alertmanager_timeout_s: float = Field(default=5.0, gt=0)
    # Grafana's base URL as analysts reach it (e.g. http://localhost:3000): alerts link to the
    # symbol's dashboard over the alert's window.
    grafana_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str = "moodwire@localhost"
    email_to: list[str] = Field(default_factory=list)

    feeds: list[FeedConfig] = Field(default_factory=list)
    reddit: RedditSettings | None = None
    mastodon: MastodonSettings | None = None
    bluesky: BlueskySettings | None = None
    stocktwits: StocktwitsSettings | None = None
    push: PushSettings | None = None
    sample_rate: float = Field(default=40.0, gt=0, description="posts/s when replaying the sample")

    query_host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    query_port: int = Field(default=8765, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("webhook_url", "alertmanager_url", "grafana_url")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_needs_a_server(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("store") != "clickhouse":
            raise ValueError('needs store = "clickhouse" (chDB is one process, not a cluster)')
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_file.get() or os.environ.get(f"{ENV_PREFIX}CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def has_live_sources(self) -> bool:
        return bool(self.feeds or self.reddit or self.mastodon or self.bluesky or self.stocktwits or self.push)

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"


class ConfigError(Exception):
    """A setting is invalid; the message names it and says what is accepted."""


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ())]
    name = location[0] if location else "?"
    setting = f"{ENV_PREFIX}{name.upper()}"
    if len(location) > 1:
        setting += " (" + ".".join(location[1:]) + ")"
    message = error.get("msg", "invalid")
    if error.get("type") == "extra_forbidden":
        message = "is not a known setting (see `moodwire --help` and README 'Configuration')"
    return f"{setting}: {message}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings, turning validation errors into one readable ConfigError."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    toml_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file is None and toml_path and not Path(toml_path).is_file():
        raise ConfigError(f"{ENV_PREFIX}CONFIG points to {toml_path}, which does not exist")
    token = _config_file.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # e.g. a TOML syntax error
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _config_file.reset(token)
