"""The ClickHouse schema, as numbered migrations rendered for the server they run on.

Two flavours: `modern` (a current server and chDB) and `legacy` (ClickHouse 18.x, as Debian ships
it), which lacks LowCardinality without a flag and column codecs. Every query the product runs
against these tables stays in the subset both understand.

`posts.symbol` is the primary ticker (the first of `symbols`, '' if none), so the simple
question "how many posts per ticker" is a plain GROUP BY; `symbols` holds them all.

Replay safety: `posts` is a ReplacingMergeTree on (hour, id), so a post inserted twice collapses
on merge, and every count reads `uniqExact(id)` (the aggregates keep uniqExact states) so it is
exact before the merge too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moodwire import counting
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS

Flavour = Literal["modern", "legacy"]

POLARITY_COLUMNS = tuple(f"p_{label}" for label in POLARITY_LABELS)
EMOTION_COLUMNS = tuple(f"e_{label}" for label in EMOTION_LABELS)

# Per-ticker stance, one array element per ticker of the post (schema migration 2).
TARGET_COLUMNS: tuple[str, ...] = (
    "target_symbols",
    "target_polarities",
    "target_scores",
    "target_p_negative",
    "target_p_neutral",
    "target_p_positive",
    "target_bases",
)

POST_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
    "text",
    "published_at",
    "author",
    "url",
    "lang",
    "symbols",
    "symbol",
    "kind",
    "story_id",
    "flags",
    "polarity",
    "polarity_score",
    "emotion",
    *POLARITY_COLUMNS,
    *EMOTION_COLUMNS,
    "model_version",
    "scored_at",
    "status",
    *TARGET_COLUMNS,
)

ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "episode_id",
    "symbol",
    "kind",
    "severity",
    "status",
    "fired_at",
    "statistic",
    "p_value",
    "window_minutes",
    "window_posts",
    "window_negative",
    "window_share",
    "baseline_share",
    "evidence",
    "created_at",
)

# What the detector compared each watched symbol's minute with (schema migration 3).
DETECTOR_MINUTE_COLUMNS: tuple[str, ...] = (
    "minute",
    "symbol",
    "stories",
    "negative",
    "expected_negative",
    "baseline_share",
    "baseline_probability",
    "baseline_stories",
    "information_gain",
    "window_minutes",
    "window_stories",
    "window_negative",
    "window_baseline_share",
    "evaluated_at",
    "version",
)

LEASE_COLUMNS: tuple[str, ...] = ("name", "holder", "token", "expires_ms", "version")

DELIVERY_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "channel",
    "outcome",
    "attempts",
    "error",
    "delivered_at",
)


def server_flavour(version: str) -> Flavour:
    major = int(version.split(".", 1)[0])
    return "legacy" if major < 19 else "modern"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _lc(flavour: Flavour) -> str:
    return "LowCardinality(String)" if flavour == "modern" else "String"


def migrations(database: str, flavour: Flavour) -> list[Migration]:
    lc = _lc(flavour)
    text_codec = " CODEC(ZSTD(3))" if flavour == "modern" else ""
    probability_columns = ",\n    ".join(
        f"{name} Float32" for name in (*POLARITY_COLUMNS, *EMOTION_COLUMNS)
    )
    posts = f"""
CREATE TABLE IF NOT EXISTS {database}.posts (
    id String,
    source {lc},
    text String{text_codec},
    published_at DateTime('UTC'),
    author String,
    url String,
    lang {lc},
    symbols Array(String),
    symbol String,
    kind {lc},
    story_id String,
    flags Array(String),
    polarity {lc},
    polarity_score Float32,
    emotion {lc},
    {probability_columns},
    model_version {lc},
    scored_at DateTime('UTC'),
    status {lc},
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(scored_at)
PARTITION BY toYYYYMM(published_at)
ORDER BY (toStartOfHour(published_at), id)"""
    post_minutes = f"""
CREATE TABLE IF NOT EXISTS {database}.post_minutes (
    minute DateTime('UTC'),
    symbol String,
    polarity {lc},
    emotion {lc},
    posts AggregateFunction(uniqExact, String),
    stories AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (symbol, minute, polarity, emotion)"""
    # Posts with no ticker land under symbol '' so market-wide totals stay exact.
    post_minutes_mv = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.post_minutes_mv TO {database}.post_minutes AS
SELECT
    toStartOfMinute(published_at) AS minute,
    arrayJoin(if(empty(symbols), [''], symbols)) AS symbol,
    polarity,
    emotion,
    uniqExactState(id) AS posts,
    uniqExactState(if(story_id = '', id, story_id)) AS stories
FROM {database}.posts
WHERE status = 'scored' AND empty(flags)
GROUP BY minute, symbol, polarity, emotion"""
    alerts = f"""
CREATE TABLE IF NOT EXISTS {database}.alerts (
    alert_id String,
    episode_id String,
    symbol String,
    kind {lc},
    severity {lc},
    status {lc},
    fired_at DateTime('UTC'),
    statistic Float64,
    p_value Float64,
    window_minutes UInt32,
    window_posts UInt32,
    window_negative UInt32,
    window_share Float64,
    baseline_share Float64,
    evidence String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(fired_at)
ORDER BY (alert_id, status)"""
    alert_state = f"""
CREATE TABLE IF NOT EXISTS {database}.alert_state (
    name String,
    state String,
    updated_at DateTime('UTC'),
    revision UInt64
) ENGINE = ReplacingMergeTree(revision)
ORDER BY name"""
    deliveries = f"""
CREATE TABLE IF NOT EXISTS {database}.alert_deliveries (
    alert_id String,
    channel {lc},
    outcome {lc},
    attempts UInt32,
    error String,
    delivered_at DateTime('UTC')
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(delivered_at)
ORDER BY (alert_id, channel, delivered_at)"""
    return [
        Migration(
            1,
            "posts, per-minute aggregates, alerts, alert state, deliveries",
            (posts, post_minutes, post_minutes_mv, alerts, alert_state, deliveries),
        ),
        Migration(
            2,
            "per-ticker stance on posts; ticker_stories (one definition of what is counted) replaces post_minutes",
            _per_ticker_stance(database, flavour),
        ),
        Migration(
            3,
            "detector_minutes (what the detector compared each minute with); alert_leases and a fencing token on alert_state (several alert instances)",
            _detector_minutes_and_leases(database),
        ),
    ]


def _detector_minutes_and_leases(database: str) -> tuple[str, ...]:
    """Per evaluated minute and watched symbol, the detector's own baseline and counts (the
    dashboards chart them; a minute evaluated again replaces its row, by `version`); the lease
    that lets one of several `moodwire alert` processes work; and the lease token on every saved
    alert state, so a state saved by an instance that lost its lease never wins over the new one."""
    detector_minutes = f"""
CREATE TABLE IF NOT EXISTS {database}.detector_minutes (
    minute DateTime('UTC'),
    symbol String,
    stories UInt32,
    negative UInt32,
    expected_negative Float64,
    baseline_share Float64,
    baseline_probability Float64,
    baseline_stories Float64,
    information_gain Float64,
    window_minutes UInt16,
    window_stories UInt32,
    window_negative UInt32,
    window_baseline_share Float64,
    evaluated_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (symbol, minute)"""
    leases = f"""
CREATE TABLE IF NOT EXISTS {database}.alert_leases (
    name String,
    holder String,
    token UInt64,
    expires_ms UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name"""
    token = f"ALTER TABLE {database}.alert_state ADD COLUMN token UInt64 DEFAULT 0"
    return detector_minutes, leases, token


def _per_ticker_stance(database: str, flavour: Flavour) -> tuple[str, ...]:
    """Stance columns on posts (rows stored before keep their post polarity as every ticker's
    stance, through the DEFAULTs), the per-story aggregates every count reads, and a backfill.

    The materialized view exists before the backfill runs, so a post stored in between is
    written by both: harmless, the aggregate states are sets and minima by id.
    """
    # One copy of the post-level value per symbol (18.x cannot call a function on an outer column
    # inside a lambda, so arrayMap is out).
    each = "arrayResize([{0}], length(symbols), {0})"
    columns = (
        ("target_symbols", "Array(String)", "symbols"),
        ("target_polarities", "Array(String)", each.format("toString(polarity)")),
        ("target_scores", "Array(Float32)", each.format("polarity_score")),
        ("target_p_negative", "Array(Float32)", each.format("p_negative")),
        ("target_p_neutral", "Array(Float32)", each.format("p_neutral")),
        ("target_p_positive", "Array(Float32)", each.format("p_positive")),
        ("target_bases", "Array(String)", each.format("'post'")),
    )
    # 18.x has no ADD COLUMN IF NOT EXISTS; the migration runner skips a column that is there.
    if_absent = " IF NOT EXISTS" if flavour == "modern" else ""
    alters = tuple(
        f"ALTER TABLE {database}.posts ADD COLUMN{if_absent} {name} {kind} DEFAULT {default}"
        for name, kind, default in columns
    )
    stories = f"""
CREATE TABLE IF NOT EXISTS {database}.{counting.STORY_TABLE} (
    minute DateTime('UTC'),
    symbol String,
    story String,
    posts AggregateFunction(uniqExact, String),
    story_stance AggregateFunction(argMin, String, String),
    story_stance_score AggregateFunction(argMin, Float32, String),
    story_p_negative AggregateFunction(argMin, Float32, String),
    story_emotion AggregateFunction(argMin, String, String),
    story_kind AggregateFunction(argMin, String, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (symbol, minute, story)"""
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{counting.STORY_TABLE}_mv "
        f"TO {database}.{counting.STORY_TABLE} AS\n{counting.ticker_stories_select(database)}"
    )
    backfill = f"INSERT INTO {database}.{counting.STORY_TABLE}\n{counting.ticker_stories_select(database)}"
    # Analysts' per-(post, ticker) table: every stored post once per ticker with its stance.
    post_targets = f"""
CREATE VIEW IF NOT EXISTS {database}.post_targets AS
SELECT
    id, source, published_at, kind, story_id, flags, status, model_version,
    target_symbols[i] AS symbol,
    target_polarities[i] AS polarity,
    target_scores[i] AS polarity_score,
    target_p_negative[i] AS p_negative,
    target_p_neutral[i] AS p_neutral,
    target_p_positive[i] AS p_positive,
    target_bases[i] AS basis
FROM {database}.posts
ARRAY JOIN arrayEnumerate(target_symbols) AS i"""
    return (
        *alters,
        stories,
        view,
        backfill,
        post_targets,
        f"DROP TABLE IF EXISTS {database}.post_minutes_mv",
        f"DROP TABLE IF EXISTS {database}.post_minutes",
    )


def migrations_table(database: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {database}.schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY version"""
