"""Dashboards and Prometheus provisioning against the real things they read.

Grafana itself can't be installed here, so every panel's SQL is expanded the way the
grafana-clickhouse-datasource plugin expands it (macros, then the $symbol variable) and run
against the ClickHouse 18.16 server and against chDB after a test stream of scored posts;
every metric a dashboard or rule names must appear in a real /metrics output. Prometheus
rules: test_prometheus_rules.py; the compose stack: test_stack.py.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerting.alert import NEGATIVE_SPIKE, alert_row_id
from alerting.detector_settings import DetectorSettings
from alerting.job import AlertJob
from alerting.lifecycle import LifecycleSettings
from moodwire import counting, store_schema
from moodwire.config import load_settings
from moodwire.labels import EMOTION_LABELS, POLARITY_LABELS
from moodwire.schema import Post, ScoredPost
from moodwire.store import ChdbStore, QueryResult, ServerStore
from tests.conftest import unique
from tests.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"
PROMETHEUS = ROOT / "dashboards" / "prometheus"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"

SYMBOLS = ("AAPL", "BA", "TSLA", "MSFT")
SELECTED = ("BA", "AAPL")
SPIKE_SYMBOL = "BA"

# What each ClickHouse query must return, by panel title (and the symbol variable and the
# alert annotation). A new panel without an entry here fails the test: say what it shows.
EXPECTED_COLUMNS: dict[str, list[str]] = {
    "variable symbol": ["symbol"],
    "annotation Alerts": ["time", "text", "tags"],
    "Posts": ["volume"],
    "Negative share": ["negative_share"],
    "Alerts fired": ["alerts"],
    "Symbols": ["symbols"],
    "Polarity over time": ["time", "symbol", "net_polarity"],
    "Negative share against baseline": ["time", "symbol", "negative_share", "baseline_share"],
    "Volume": ["time", "symbol", "volume"],
    "Emotion mix": ["time", "emotion", "volume"],
    "Most negative recent posts": ["time", "tickers", "source", "score", "emotion", "text", "url"],
    "Negative-share leaderboard": ["symbol", "volume", "negative_share", "baseline_volume", "baseline_share", "change"],
    "Alerts": ["time", "symbol", "kind", "severity", "state", "resolved_at", "negative", "stories", "share", "baseline",
               "p", "from_ms", "to_ms"],
    "Negative share: news against social": ["time", "source_kind", "negative_share"],
    "Emotion mix per symbol": ["symbol", *EMOTION_LABELS],
    "Posts stored (ClickHouse, deduplicated)": ["time", "stored"],
    "Recent alert deliveries": ["time", "alert_id", "channel", "outcome", "attempts", "error"],
}


# ------------------------------------------------------------------------------ test stream


@dataclass(frozen=True)
class Stream:
    """A scored stream ending at `now`: 26 hours of posts on four tickers, a negative spike on
    BA in the last hour, a replayed tail (the same posts inserted twice), alerts and deliveries."""

    now: datetime
    posts: list[ScoredPost]
    replayed: list[ScoredPost]
    alerts: list[tuple[Any, ...]]
    deliveries: list[tuple[Any, ...]]

    def distinct_in(self, symbol: str, start: datetime, end: datetime) -> int:
        return len({p.post.id for p in self.posts if symbol in p.post.symbols and start <= p.post.published_at <= end})


def _probabilities(labels: tuple[str, ...], winner: str, rng: random.Random) -> dict[str, float]:
    top = rng.uniform(0.55, 0.95)
    rest = (1.0 - top) / (len(labels) - 1)
    return {label: top if label == winner else rest for label in labels}


_EMOTIONS = {
    "negative": ("fear", "anger", "sadness", "disgust"),
    "neutral": ("neutral", "surprise"),
    "positive": ("joy", "surprise"),
}


def scored_stream(now: datetime | None = None, seed: int = 6) -> Stream:
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    posts: list[ScoredPost] = []
    for minutes_ago in range(26 * 60, 0, -5):
        published = now - timedelta(minutes=minutes_ago)
        for symbol in SYMBOLS:
            in_spike = symbol == SPIKE_SYMBOL and minutes_ago <= 60
            weights = (0.85, 0.1, 0.05) if in_spike else (0.2, 0.5, 0.3)
            polarity = rng.choices(POLARITY_LABELS, weights)[0]
            emotion = rng.choice(_EMOTIONS[polarity])
            symbols = [symbol, "MSFT"] if symbol == "AAPL" and minutes_ago % 35 == 0 else [symbol]
            index = len(posts)
            p_pos = rng.uniform(0.0, 0.3)
            p_neg = rng.uniform(0.6, 1.0) if polarity == "negative" else rng.uniform(0.0, 0.3)
            score = max(-1.0, min(1.0, p_pos - p_neg)) if polarity != "positive" else rng.uniform(0.2, 0.9)
            post = Post(
                id=f"test:{symbol}:{index}",
                source=rng.choice(("rss", "reddit", "mastodon")),
                text=f"${symbol} {polarity} take number {index}: <b>shares</b> & outlook",
                published_at=published + timedelta(seconds=rng.randint(0, 59)),
                url=f"https://news.example.com/{symbol.lower()}/{index}",
                symbols=symbols,
                kind=rng.choice(("post", "headline")),
            )
            posts.append(
                ScoredPost(
                    post=post,
                    polarity=polarity,
                    polarity_score=score,
                    emotion=emotion,
                    polarity_probs=_probabilities(POLARITY_LABELS, polarity, rng),
                    emotion_probs=_probabilities(EMOTION_LABELS, emotion, rng),
                    model_version="test-model",
                    scored_at=published + timedelta(seconds=61),
                )
            )
        if minutes_ago % 60 == 0:  # a market-wide post with no ticker
            post = Post(id=f"test:none:{len(posts)}", source="rss", text="Markets close mixed", published_at=published)
            posts.append(
                ScoredPost(
                    post=post,
                    polarity="neutral",
                    polarity_score=0.0,
                    emotion="neutral",
                    polarity_probs=_probabilities(POLARITY_LABELS, "neutral", rng),
                    emotion_probs=_probabilities(EMOTION_LABELS, "neutral", rng),
                    model_version="test-model",
                    scored_at=published,
                )
            )
    # A crash between insert and commit: the last 60 posts come again, scored a second time.
    replayed = [p.model_copy(update={"scored_at": p.scored_at + timedelta(minutes=1)}) for p in posts[-60:]]

    fired = now - timedelta(minutes=30)
    evidence = json.dumps({"examples": [posts[-4].post.id]})
    episode = ("episode-ba-1", SPIKE_SYMBOL, NEGATIVE_SPIKE, "critical")
    stats = (fired, 41.5, 1e-9, 10, 24, 20, 20 / 24, 0.2, evidence)
    alerts = [  # as the alert job writes them: a row per status, alert_id = episode:status
        (alert_row_id("episode-ba-1", "firing"), *episode, "firing", *stats, fired),
        (alert_row_id("episode-ba-1", "resolved"), *episode, "resolved", *stats, fired + timedelta(minutes=20)),
        # Older than the dashboards' range: must not show.
        ("alert-aapl-0", "episode-aapl-0", "AAPL", NEGATIVE_SPIKE, "warning", "firing",
         now - timedelta(hours=20), 9.0, 1e-5, 10, 15, 9, 0.6, 0.2, "{}", now - timedelta(hours=20)),
    ]
    deliveries = [
        (alert_row_id("episode-ba-1", "firing"), "webhook", "sent", 1, "", fired + timedelta(seconds=2)),
        (alert_row_id("episode-ba-1", "firing"), "email", "failed", 3, "connection refused", fired + timedelta(seconds=40)),
    ]
    return Stream(now, posts, replayed, alerts, deliveries)


def load_stream(store: ServerStore | ChdbStore, stream: Stream) -> None:
    store.migrate()
    store.insert_posts(stream.posts)
    store.insert_posts(stream.replayed)
    # What the detector compared each minute with (detector_minutes), as the real alert job
    # writes it: ten minutes after the last post, it has evaluated every minute of the range.
    job = AlertJob(store, [], DetectorSettings(), LifecycleSettings(channels=()), clock=lambda: stream.now + timedelta(minutes=10))
    assert job.run_once() == []  # the stream's spike is too thin to alert on: the alerts below are the ones shown
    store.insert_rows("alerts", store_schema.ALERT_COLUMNS, stream.alerts)
    store.insert_rows("alert_deliveries", store_schema.DELIVERY_COLUMNS, stream.deliveries)


# ------------------------------------------------------------------------------ dashboards


@dataclass(frozen=True)
class PanelQuery:
    name: str
    datasource: str
    sql: str


def load_dashboard(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def _uid(datasource: Any) -> str:
    return datasource.get("uid", "") if isinstance(datasource, dict) else str(datasource or "")


def clickhouse_queries(board: dict[str, Any]) -> list[PanelQuery]:
    queries: list[PanelQuery] = []
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and variable["datasource"]["type"] == CLICKHOUSE_PLUGIN:
            queries.append(PanelQuery(f"variable {variable['name']}", CLICKHOUSE_PLUGIN, variable["query"]))
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") == CLICKHOUSE_PLUGIN:
            queries.append(PanelQuery(f"annotation {annotation['name']}", CLICKHOUSE_PLUGIN, annotation["target"]["rawSql"]))
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            kind = (target.get("datasource") or panel.get("datasource") or {}).get("type")
            if kind == CLICKHOUSE_PLUGIN:
                queries.append(PanelQuery(panel["title"], kind, target["rawSql"]))
    return queries


def prometheus_expressions() -> list[str]:
    expressions = [
        target["expr"]
        for name in ("market-sentiment.json", "pipeline-health.json")
        for panel in all_panels(load_dashboard(name))
        for target in panel.get("targets", [])
        if (target.get("datasource") or {}).get("type") == "prometheus"
    ]
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return expressions


def expand(sql: str, start: datetime, end: datetime, interval_s: int, symbols: tuple[str, ...]) -> str:
    """What the plugin sends for this SQL: Grafana substitutes the variable, the plugin the macros."""
    quoted = ",".join("'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'" for s in symbols)
    sql = sql.replace("${symbol:singlequote}", quoted)
    sql = re.sub(r"\$\{symbol\}|\$symbol\b", symbols[0], sql)
    sql = re.sub(r"\$__timeFilter\(\s*([^)]+?)\s*\)", lambda m: f"{m[1]} >= toDateTime({int(start.timestamp())}) AND {m[1]} <= toDateTime({int(end.timestamp())})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({int(start.timestamp())})")
    sql = sql.replace("$__toTime", f"toDateTime({int(end.timestamp())})")
    sql = sql.replace("$__interval_s", str(max(interval_s, 1)))
    leftover = re.findall(r"\$\{?__?\w+", sql)
    assert not leftover, f"unexpanded macros or variables: {leftover}"
    return sql


def test_dashboards_are_valid_grafana_json() -> None:
    for name in ("market-sentiment.json", "pipeline-health.json"):
        board = load_dashboard(name)
        assert board["uid"].startswith("moodwire-") and board["title"] and board["panels"]
        ids = [panel["id"] for panel in all_panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in all_panels(board):
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                uid = _uid(target.get("datasource") or panel.get("datasource"))
                assert uid in {"moodwire-clickhouse", "moodwire-prometheus"}, f"{panel['title']}: datasource {uid!r}"
    market = load_dashboard("market-sentiment.json")
    assert [v["name"] for v in market["templating"]["list"]] == ["symbol"]
    assert any(a["name"] == "Alerts" for a in market["annotations"]["list"])


def test_provisioning_points_at_the_dashboards_and_datasources() -> None:
    datasources = {
        ds["uid"]: ds
        for path in (PROVISIONING / "datasources").glob("*.yaml")
        for ds in yaml.safe_load(path.read_text())["datasources"]
    }
    clickhouse = datasources["moodwire-clickhouse"]
    assert clickhouse["type"] == CLICKHOUSE_PLUGIN
    assert clickhouse["jsonData"]["username"] == "analyst"  # read-only: dashboards never write
    assert clickhouse["jsonData"]["defaultDatabase"] == "moodwire"
    assert clickhouse["secureJsonData"]["password"] == "${ANALYST_PASSWORD}"
    assert datasources["moodwire-prometheus"]["url"] == "http://prometheus:9090"
    providers = [
        provider
        for path in (PROVISIONING / "dashboards").glob("*.yaml")
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./dashboards/grafana/dashboards:" + providers[0]["options"]["path"]) for m in mounts)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return scored_stream()


@pytest.fixture(scope="module")
def server_store(clickhouse_port: int, tmp_path_factory: pytest.TempPathFactory, stream: Stream) -> Iterator[ServerStore]:
    settings = load_settings(
        store="clickhouse",
        clickhouse_port=clickhouse_port,
        clickhouse_database=unique("dash"),
        data_dir=tmp_path_factory.mktemp("dash-server"),
    )
    store = ServerStore(settings)
    load_stream(store, stream)
    yield store
    store.run_ddl(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def _run_all(store: ServerStore | ChdbStore, stream: Stream, interval_s: int) -> dict[str, QueryResult]:
    start, end = stream.now - timedelta(hours=2), stream.now
    results: dict[str, QueryResult] = {}
    for name in ("market-sentiment.json", "pipeline-health.json"):
        for query in clickhouse_queries(load_dashboard(name)):
            sql = expand(query.sql, start, end, interval_s, SELECTED)
            try:
                results[query.name] = store.analyst_query(sql)
            except Exception as exc:  # name the panel: the store's message alone doesn't
                raise AssertionError(f"panel {query.name!r} failed: {exc}\n{sql}") from None
    return results


def test_every_per_ticker_panel_reads_the_one_definition_of_what_is_counted() -> None:
    """A panel that counts per ticker reads moodwire.counting's story rows verbatim (a story
    once per ticker, with the day before the range looked at), so the chart, the alert job and
    the backtest count the same thing."""
    lookback = int(counting.STORY_LOOKBACK.total_seconds())
    pattern = re.compile(
        rf"\(minute >= (.+?) - {lookback} AND minute < \1\)\)\n"
        r"\s*AND \(symbol, story\) GLOBAL IN \(SELECT symbol, story FROM ticker_stories WHERE (.*)\)\n"
    )
    per_ticker = 0
    for name in ("market-sentiment.json", "pipeline-health.json"):
        for query in clickhouse_queries(load_dashboard(name)):
            assert "post_minutes" not in query.sql, query.name
            found = pattern.findall(query.sql)
            # every read of ticker_stories is one of these (each reads it twice)
            assert query.sql.count("FROM ticker_stories") == 2 * len(found), query.name
            for since, where in found:
                per_ticker += 1
                expected = "\n".join("    " + line for line in counting.story_rows_sql("", where, since).splitlines())
                assert expected in query.sql, f"{query.name}: its story rows differ from moodwire.counting"
    assert per_ticker >= 9


def _check(results: dict[str, QueryResult], stream: Stream) -> None:
    assert set(results) == set(EXPECTED_COLUMNS), "every ClickHouse query needs an entry in EXPECTED_COLUMNS"
    for name, result in results.items():
        assert result.columns == EXPECTED_COLUMNS[name], f"{name}: columns {result.columns}"
        assert result.rows, f"{name}: no rows"
        for row in result.rows:
            for column, value in zip(result.columns, row):
                assert value is not None, f"{name}: {column} is NULL"
                if isinstance(value, float):
                    assert value == value and abs(value) != float("inf"), f"{name}: {column} is {value}"

    start, end = stream.now - timedelta(hours=2), stream.now
    # Replay-safe: the replayed tail is counted once.
    volume = results["Volume"].dicts()
    for symbol in SELECTED:
        counted = sum(int(r["volume"]) for r in volume if r["symbol"] == symbol)
        assert counted == stream.distinct_in(symbol, start, end), symbol
    assert {r["symbol"] for r in volume} == set(SELECTED)
    assert {row[0] for row in results["variable symbol"].rows} == set(SYMBOLS)
    posts = results["Most negative recent posts"].dicts()
    urls = [p["url"] for p in posts]
    assert len(urls) == len(set(urls)), "a replayed post shows twice"
    assert all(p["score"] < 0 for p in posts) and [p["score"] for p in posts] == sorted(p["score"] for p in posts)
    leaderboard = results["Negative-share leaderboard"].dicts()
    assert leaderboard[0]["symbol"] == SPIKE_SYMBOL, leaderboard
    assert leaderboard[0]["change"] > 0.15
    baseline = {r["symbol"]: r["baseline_share"] for r in results["Negative share against baseline"].dicts()}
    assert all(0.05 < share < 0.5 for share in baseline.values()), baseline
    annotations = results["annotation Alerts"].dicts()
    assert len(annotations) == 1 and annotations[0]["text"].startswith(f"BA {NEGATIVE_SPIKE} (critical)")
    assert results["Alerts fired"].rows == [(1,)]
    # The alerts table: the one alert in range, once, resolved, linking to its window.
    (row,) = results["Alerts"].dicts()
    assert (row["symbol"], row["state"], row["negative"], row["stories"]) == (SPIKE_SYMBOL, "resolved", 20, 24)
    assert row["resolved_at"].startswith((stream.now - timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M"))
    fired_ms = int((stream.now - timedelta(minutes=30)).timestamp()) * 1000
    assert (row["from_ms"], row["to_ms"]) == (fired_ms - (10 * 60 + 3600) * 1000, fired_ms + 3600 * 1000)
    kinds = results["Negative share: news against social"].dicts()
    assert {r["source_kind"] for r in kinds} == {"news", "social"}, "the stream has headlines and posts"
    # Emotion per symbol counts every story of the symbol once: the Volume panel's total.
    for r in results["Emotion mix per symbol"].dicts():
        by_emotion = sum(int(r[e]) for e in EMOTION_LABELS)
        assert by_emotion == sum(int(v["volume"]) for v in volume if v["symbol"] == r["symbol"]), r
    outcomes = {r["channel"]: r["outcome"] for r in results["Recent alert deliveries"].dicts()}
    assert outcomes == {"webhook": "sent", "email": "failed"}


@pytest.mark.parametrize("interval_s", [20, 300])
def test_panel_sql_on_clickhouse_server(server_store: ServerStore, stream: Stream, interval_s: int) -> None:
    # Debian's 18.16 unless MOODWIRE_TEST_CLICKHOUSE_PORT points elsewhere; 20 s is finer than
    # the minute aggregates (the panels must clamp it), 300 s is coarser.
    _check(_run_all(server_store, stream, interval_s), stream)


def test_panel_sql_on_chdb(tmp_path: Path, stream: Stream) -> None:
    # chDB allows one session per process: this store is closed before any other opens.
    store = ChdbStore(tmp_path / "chdb")
    try:
        load_stream(store, stream)
        _check(_run_all(store, stream, 60), stream)
    finally:
        store.close()


# ------------------------------------------------------------------------------ metrics


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def served_metric_names(tmp_path: Path) -> set[str]:
    """What a real `moodwire run` serves on /metrics once it has ingested, scored, dead-lettered,
    dropped a duplicate, fired an alert and delivered it: nothing here increments a metric itself."""
    import os
    import signal
    import sys
    import threading
    import time

    from moodwire.app import bundled_sample

    lines = bundled_sample().read_text(encoding="utf-8").splitlines()
    lines += ["{not json", lines[5]]  # a line to dead-letter and a post sent twice
    source = tmp_path / "stream.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    env = {
        **os.environ,
        "MOODWIRE_DATA_DIR": str(tmp_path / "data"),
        "MOODWIRE_METRICS_PORT": str(port),
        "MOODWIRE_QUERY_PORT": "0",
        "MOODWIRE_ALERT_INTERVAL_S": "5",
        "MOODWIRE_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_address[1]}/hook",
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "moodwire.cli", "run", "--input", str(source), "--rate", "1000"],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.log").open("wb"),
    )
    text = ""
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and 'moodwire_alerts_sent_total{channel="webhook"} 1.0' not in text:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    text = response.read().decode("utf-8")
            except OSError:
                continue
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        hook.shutdown()
    assert 'moodwire_alerts_sent_total{channel="webhook"} 1.0' in text, (tmp_path / "run.log").read_text()[-3000:]
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


# Series Prometheus makes itself, not the services.
PROMETHEUS_BUILTINS = {"up"}
_PROMQL_WORDS = {
    "sum", "rate", "increase", "deriv", "histogram_quantile", "max", "time", "and", "or", "unless", "vector",
    "avg", "min", "count", "clamp_min", "e", "absent",
}


def test_every_metric_a_dashboard_or_rule_uses_is_served(tmp_path: Path) -> None:
    served = served_metric_names(tmp_path)
    expressions = prometheus_expressions()
    assert len(expressions) >= 15
    used: set[str] = set()
    for expr in expressions:
        # Drop label matchers, ranges, strings and grouping clauses: what is left names series.
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
        bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
        used |= set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare)) - _PROMQL_WORDS
    metric_names = used - PROMETHEUS_BUILTINS
    assert metric_names and all(n.startswith("moodwire_") for n in metric_names), sorted(metric_names)
    missing = sorted(metric_names - served)
    assert not missing, f"used by a dashboard or rule but not in /metrics: {missing}"
