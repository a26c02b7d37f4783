"""A self-contained HTML report for people without Grafana: sentiment and volume per symbol over a
time range, alerts marked on the plots, and the most negative posts.

One file, no scripts, no external fonts or stylesheets: the plots are SVG written here, so the
page opens offline and can be mailed or archived as it is. Counts read the per-minute aggregates
with uniqExactMerge and raw posts are deduplicated by id, so a replayed post is counted once,
as everywhere else in moodwire.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from moodwire import counting
from moodwire.schema import parse_timestamp
from moodwire.store import QueryResult, render

QueryFn = Callable[[str], QueryResult]

MAX_POINTS = 180
MIN_POINTS = 24
MIN_POSTS_PER_BUCKET = 3
_RELATIVE_RE = re.compile(r"^now(?:\s*-\s*(\d+)\s*([mhdw]))?$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Nice bucket sizes (seconds): a bucket is never finer than the aggregates' minute.
_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400)
_TICKS = (300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)


class ReportError(ValueError):
    """The request can't make a report (bad range, nothing to query)."""


def parse_when(text: str, now: datetime) -> datetime:
    """RFC 3339 with an offset, `now`, or `now-<N><m|h|d|w>`."""
    value = text.strip().lower()
    match = _RELATIVE_RE.match(value)
    if match:
        amount, unit = match.groups()
        return now if amount is None else now - timedelta(seconds=int(amount) * _UNIT_SECONDS[unit])
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise ReportError(f"{text!r}: {exc}; or write now, now-6h, now-2d") from None


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ReportError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")


def bucket_seconds(start: datetime, end: datetime, posts: int | None = None) -> int:
    """The finest nice bucket that keeps the plot under MAX_POINTS and, when `posts` (a typical
    symbol's volume in the range) is known, puts a few posts in each bucket: the net polarity
    of one post is always -1, 0 or +1, which is noise, not a trend."""
    span = (end - start).total_seconds()
    for step in _STEPS:
        points = span / step
        if points > MAX_POINTS:
            continue
        if posts is None or points <= MIN_POINTS or posts / points >= MIN_POSTS_PER_BUCKET:
            return step
    return max(_STEPS[-1], math.ceil(span / MAX_POINTS / 86400) * 86400)


# ------------------------------------------------------------------------------ data


@dataclass
class SymbolSeries:
    symbol: str
    # bucket start (unix seconds) -> (posts, negative, positive)
    buckets: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def posts(self) -> int:
        return sum(b[0] for b in self.buckets.values())

    @property
    def negative(self) -> int:
        return sum(b[1] for b in self.buckets.values())

    @property
    def net_polarity(self) -> float | None:
        posts = self.posts
        return None if posts == 0 else (sum(b[2] for b in self.buckets.values()) - self.negative) / posts


@dataclass(frozen=True)
class AlertMark:
    at: int
    symbol: str
    kind: str
    severity: str
    window_posts: int
    window_negative: int
    window_share: float
    baseline_share: float

    def describe(self) -> str:
        return (
            f"{_clock(self.at)} {self.symbol} {self.kind} ({self.severity}): {self.window_negative} of "
            f"{self.window_posts} stories negative, {self.window_share:.0%} against a {self.baseline_share:.0%} baseline"
        )


@dataclass(frozen=True)
class NegativePost:
    at: int
    tickers: str
    source: str
    score: float
    emotion: str
    text: str
    url: str


@dataclass
class ReportData:
    start: datetime
    end: datetime
    step_s: int
    series: list[SymbolSeries]
    alerts: list[AlertMark]
    posts: list[NegativePost]
    generated_at: datetime


def _run(query: QueryFn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    # Rendered here (escaped by clickhouse-driver) because the running process's endpoint takes
    # finished SQL only.
    return query(render(sql, params)).dicts()


_ALERTS_SQL = """
SELECT toUInt32(fired_at) AS at, symbol, kind, severity, window_posts, window_negative, window_share, baseline_share
FROM (
    SELECT * FROM alerts
    WHERE fired_at >= toDateTime(%(start)s) AND fired_at < toDateTime(%(end)s)
    -- an episode has a row per status (firing, resolved): show it once
    ORDER BY episode_id, created_at DESC
    LIMIT 1 BY episode_id
)
ORDER BY at, symbol
LIMIT 500"""

# Every per-ticker number below is moodwire.counting's: stories of scored, unflagged posts under
# their per-ticker stance, the same numbers the alerts and the dashboards show.
_WINDOW = "minute >= toDateTime(%(start)s) AND minute < toDateTime(%(end)s)"
_SINCE = "toDateTime(%(start)s)"

_TOP_SYMBOLS_SQL = f"""
SELECT symbol, count() AS volume
FROM ({counting.story_rows_sql("", _WINDOW + " AND symbol != ''", _SINCE)})
GROUP BY symbol
ORDER BY volume DESC, symbol
LIMIT %(limit)s"""

_VOLUME_SQL = f"""
SELECT symbol, count() AS volume
FROM ({counting.story_rows_sql("", _WINDOW + " AND symbol IN %(symbols)s", _SINCE)})
GROUP BY symbol"""

_SERIES_SQL = f"""
SELECT
    symbol,
    intDiv(toUInt32(minute), %(step)s) * %(step)s AS at,
    count() AS volume,
    countIf(stance = 'negative') AS negative,
    countIf(stance = 'positive') AS positive
FROM ({counting.story_rows_sql("", _WINDOW + " AND symbol IN %(symbols)s", _SINCE)})
GROUP BY symbol, at
ORDER BY symbol, at"""

# The most bearish posts about the chosen tickers: a post once, under its most negative stance.
_NEGATIVE_POSTS_SQL = f"""
SELECT toUInt32(published_at) AS at, arrayStringConcat(target_symbols, ' ') AS tickers, source,
       score, emotion, text, url
FROM (
    SELECT id, any(published_at) AS published_at, any(target_symbols) AS target_symbols, any(source) AS source,
           min(stance_score) AS score, any(emotion) AS emotion, any(text) AS text, any(url) AS url
    FROM (
        SELECT id, published_at, target_symbols, source, emotion, text, url,
               target_scores[i] AS stance_score
        FROM posts
        ARRAY JOIN arrayEnumerate(target_symbols) AS i
        WHERE published_at >= toDateTime(%(start)s) AND published_at < toDateTime(%(end)s)
          AND {counting.COUNTED_POSTS_SQL}
          AND target_polarities[i] = 'negative' AND has(%(symbol_list)s, target_symbols[i])
    )
    GROUP BY id
)
ORDER BY score, at DESC
LIMIT %(limit)s"""


def collect(
    query: QueryFn,
    start: datetime,
    end: datetime,
    symbols: Sequence[str] | None = None,
    *,
    max_symbols: int = 8,
    top_posts: int = 25,
    now: datetime | None = None,
) -> ReportData:
    """Everything the report shows: alerts, the symbols' volumes, their series, the negative posts
    (and the busiest symbols when none are given)."""
    check_range(start, end)
    window = {"start": int(start.timestamp()), "end": int(end.timestamp())}
    alerts = [
        AlertMark(
            at=int(r["at"]),
            symbol=str(r["symbol"]),
            kind=str(r["kind"]),
            severity=str(r["severity"]),
            window_posts=int(r["window_posts"]),
            window_negative=int(r["window_negative"]),
            window_share=float(r["window_share"]),
            baseline_share=float(r["baseline_share"]),
        )
        for r in _run(query, _ALERTS_SQL, window)
    ]
    if symbols:
        chosen = list(dict.fromkeys(s.strip().lstrip("$").upper() for s in symbols if s.strip()))
    else:
        # Alerted symbols first (that is what the reader came for), then the busiest.
        chosen = list(dict.fromkeys(a.symbol for a in alerts))[:max_symbols]
        busiest = _run(query, _TOP_SYMBOLS_SQL, {**window, "limit": max_symbols})
        chosen += [str(r["symbol"]) for r in busiest if r["symbol"] not in chosen][: max_symbols - len(chosen)]
    series = {symbol: SymbolSeries(symbol) for symbol in chosen}
    posts: list[NegativePost] = []
    step = bucket_seconds(start, end)
    if chosen:
        volumes = sorted(int(r["volume"]) for r in _run(query, _VOLUME_SQL, {**window, "symbols": tuple(chosen)}))
        step = bucket_seconds(start, end, volumes[len(volumes) // 2] if volumes else None)
        rows = _run(query, _SERIES_SQL, {**window, "step": step, "symbols": tuple(chosen)})
        for r in rows:
            series[str(r["symbol"])].buckets[int(r["at"])] = (int(r["volume"]), int(r["negative"]), int(r["positive"]))
        rows = _run(query, _NEGATIVE_POSTS_SQL, {**window, "symbol_list": chosen, "limit": top_posts})
        posts = [
            NegativePost(
                at=int(r["at"]),
                tickers=str(r["tickers"]),
                source=str(r["source"]),
                score=float(r["score"]),
                emotion=str(r["emotion"]),
                text=str(r["text"]),
                url=str(r["url"]),
            )
            for r in rows
        ]
    return ReportData(start, end, step, list(series.values()), alerts, posts, now or datetime.now(UTC))


# ------------------------------------------------------------------------------ SVG

_WIDTH = 960
_LEFT, _RIGHT = 52, 14
_SENT_TOP, _SENT_H = 14, 130
_VOL_TOP, _VOL_H = 162, 78
_AXIS_Y = _VOL_TOP + _VOL_H
_HEIGHT = _AXIS_Y + 26
_BLUE, _RED, _GREY, _INK, _RULE = "#2563eb", "#dc2626", "#a3a3a3", "#404040", "#e5e5e5"


def _clock(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def _num(value: float) -> str:
    return f"{value:.1f}"


def _tick_step(span_s: float) -> int:
    for step in _TICKS:
        if span_s / step <= 8:
            return step
    return math.ceil(span_s / 8 / 86400) * 86400


def _tick_label(at: int, span_s: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    if span_s <= 86400:
        return moment.strftime("%H:%M")
    if moment.hour == 0 and moment.minute == 0:
        return moment.strftime("%b %d")
    return moment.strftime("%d %H:%M")


def symbol_chart(series: SymbolSeries, alerts: Sequence[AlertMark], start: int, end: int, step: int) -> str:
    """Net polarity (line, −1..1) above volume (bars, negative part in red), alerts as red rules."""
    plot_w = _WIDTH - _LEFT - _RIGHT
    span = max(end - start, 1)

    def x(at: float) -> float:
        return _LEFT + (at - start) / span * plot_w

    def y_sent(value: float) -> float:
        return _SENT_TOP + (1 - (value + 1) / 2) * _SENT_H

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{html.escape(series.symbol)}: net polarity and volume">'
    ]
    # Sentiment grid and labels.
    for value in (-1.0, -0.5, 0.0, 0.5, 1.0):
        y = y_sent(value)
        stroke = _INK if value == 0 else _RULE
        parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{_num(y)}" y2="{_num(y)}" stroke="{stroke}" stroke-width="1"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{_num(y + 4)}" text-anchor="end" class="tick">{value:+.1f}</text>')
    parts.append(f'<text x="{_LEFT}" y="{_SENT_TOP - 3}" class="label">net polarity</text>')

    # Volume bars: the whole bucket in grey, its negative part in red on top of the baseline.
    peak = max((b[0] for b in series.buckets.values()), default=0)
    parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{_AXIS_Y}" y2="{_AXIS_Y}" stroke="{_INK}" stroke-width="1"/>')
    parts.append(f'<text x="{_LEFT}" y="{_VOL_TOP - 3}" class="label">posts per {_duration(step)} (negative in red)</text>')
    parts.append(f'<text x="{_LEFT - 6}" y="{_VOL_TOP + 8}" text-anchor="end" class="tick">{peak}</text>')
    parts.append(f'<text x="{_LEFT - 6}" y="{_AXIS_Y}" text-anchor="end" class="tick">0</text>')
    for at, (volume, negative, _positive) in sorted(series.buckets.items()):
        if volume == 0 or peak == 0:
            continue
        height = volume / peak * _VOL_H
        neg_height = negative / peak * _VOL_H
        # The first and last buckets may stick out of the range: draw only their part inside.
        left = x(max(at, start))
        bar_w = max(x(min(at + step, end)) - left - 1.0, 1.0)
        title = f"<title>{_clock(at)}: {volume} posts, {negative} negative</title>"
        parts.append(
            f'<g><rect x="{_num(left)}" y="{_num(_AXIS_Y - height)}" width="{_num(bar_w)}" height="{_num(height)}" fill="{_GREY}"/>'
            f'<rect x="{_num(left)}" y="{_num(_AXIS_Y - neg_height)}" width="{_num(bar_w)}" height="{_num(neg_height)}" fill="{_RED}"/>{title}</g>'
        )

    # Net polarity line, broken where a bucket has no posts rather than drawn across the gap.
    segments: list[list[str]] = [[]]
    for at in range(start - start % step, end, step):
        bucket = series.buckets.get(at)
        if not bucket or bucket[0] == 0:
            if segments[-1]:
                segments.append([])
            continue
        volume, negative, positive = bucket
        middle = (max(at, start) + min(at + step, end)) / 2
        segments[-1].append(f"{_num(x(middle))},{_num(y_sent((positive - negative) / volume))}")
    for points in segments:
        if len(points) == 1:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{_BLUE}"/>')
        elif points:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{_BLUE}" stroke-width="2" stroke-linejoin="round"/>')

    # Alerts: a red rule through both plots and a marker on top, with the details as a tooltip.
    for alert in alerts:
        if not start <= alert.at <= end:
            continue
        ax = _num(x(alert.at))
        parts.append(
            f'<g class="alert"><line x1="{ax}" x2="{ax}" y1="{_SENT_TOP}" y2="{_AXIS_Y}" stroke="{_RED}" '
            f'stroke-width="2" stroke-dasharray="5 3"/>'
            f'<path d="M{ax},{_SENT_TOP + 8} l-6,-10 h12 z" fill="{_RED}"/>'
            f"<title>{html.escape(alert.describe())}</title></g>"
        )

    # Time axis.
    tick = _tick_step(span)
    first = start + (-start) % tick
    for at in range(first, end + 1, tick):
        tx = _num(x(at))
        parts.append(f'<line x1="{tx}" x2="{tx}" y1="{_AXIS_Y}" y2="{_AXIS_Y + 4}" stroke="{_INK}"/>')
        parts.append(f'<text x="{tx}" y="{_AXIS_Y + 17}" text-anchor="middle" class="tick">{_tick_label(at, span)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d" if seconds != 86400 else "day"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h" if seconds != 3600 else "hour"
    return f"{seconds // 60} min" if seconds != 60 else "minute"


# ------------------------------------------------------------------------------ HTML

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #171717; background: #fff; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #e5e5e5; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 2px; }
.meta, .note { color: #525252; font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e5e5; vertical-align: top; }
th { background: #fafafa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.chart { display: block; max-width: 100%; height: auto; }
.chart .tick { font-size: 11px; fill: #525252; }
.chart .label { font-size: 11px; fill: #404040; font-weight: 600; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; color: #404040; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
.neg { color: #dc2626; font-weight: 600; }
.critical { color: #dc2626; font-weight: 600; }
.warning { color: #b45309; font-weight: 600; }
"""


def _legend() -> str:
    return (
        '<p class="legend">'
        f'<span><i class="swatch" style="background:{_BLUE}"></i>net polarity: (positive − negative) / posts</span>'
        f'<span><i class="swatch" style="background:{_GREY}"></i>posts</span>'
        f'<span><i class="swatch" style="background:{_RED}"></i>negative posts</span>'
        f'<span><i class="swatch" style="background:{_RED};width:3px"></i>alert (hover for details)</span>'
        "</p>"
    )


def _safe_link(url: str, label: str) -> str:
    """Only http(s) links are clickable: a post's URL is untrusted input."""
    if url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url, quote=True)}" rel="noopener noreferrer nofollow">{label}</a>'
    return label


def render_html(data: ReportData) -> str:
    start, end = int(data.start.timestamp()), int(data.end.timestamp())
    esc = html.escape
    title = f"moodwire report: {_clock(start)} to {_clock(end)} UTC"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may load from elsewhere: the report must open offline, and a post's text can't run code.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">Generated {esc(_clock(int(data.generated_at.timestamp())))} UTC · buckets of {_duration(data.step_s)} · '
        "counts are distinct posts (a replayed post counts once)</p>",
    ]

    out.append("<h2>Summary</h2>")
    if not any(s.posts for s in data.series):
        out.append('<p class="note">No scored posts in this range.</p>')
    out.append(
        '<table><thead><tr><th>symbol</th><th class="num">posts</th><th class="num">negative</th>'
        '<th class="num">net polarity</th><th class="num">alerts</th></tr></thead><tbody>'
    )
    for series in data.series:
        alerts = sum(1 for a in data.alerts if a.symbol == series.symbol)
        share = f"{series.negative / series.posts:.0%}" if series.posts else "–"
        net = f"{series.net_polarity:+.2f}" if series.net_polarity is not None else "–"
        out.append(
            f'<tr><td><a href="#sym-{esc(series.symbol)}">{esc(series.symbol)}</a></td><td class="num">{series.posts}</td>'
            f'<td class="num">{share}</td><td class="num">{net}</td>'
            f'<td class="num{" neg" if alerts else ""}">{alerts}</td></tr>'
        )
    out.append("</tbody></table>")

    out.append("<h2>Sentiment and volume</h2>")
    out.append(_legend())
    for series in data.series:
        alerts = [a for a in data.alerts if a.symbol == series.symbol]
        out.append(f'<h3 id="sym-{esc(series.symbol)}">{esc(series.symbol)}</h3>')
        if not series.posts:
            out.append('<p class="note">No posts in this range.</p>')
            continue
        out.append(symbol_chart(series, alerts, start, end, data.step_s))

    out.append("<h2>Alerts</h2>")
    if data.alerts:
        out.append(
            '<table><thead><tr><th>fired (UTC)</th><th>symbol</th><th>kind</th><th>severity</th>'
            '<th class="num">negative / posts</th><th class="num">share</th><th class="num">baseline</th></tr></thead><tbody>'
        )
        for alert in data.alerts:
            out.append(
                f"<tr><td>{_clock(alert.at)}</td><td>{esc(alert.symbol)}</td><td>{esc(alert.kind)}</td>"
                f'<td class="{esc(alert.severity)}">{esc(alert.severity)}</td>'
                f'<td class="num">{alert.window_negative} / {alert.window_posts}</td>'
                f'<td class="num">{alert.window_share:.0%}</td><td class="num">{alert.baseline_share:.0%}</td></tr>'
            )
        out.append("</tbody></table>")
    else:
        out.append('<p class="note">No alerts fired in this range.</p>')

    out.append("<h2>Most negative posts</h2>")
    if data.posts:
        out.append(
            '<table><thead><tr><th>published (UTC)</th><th>symbols</th><th>source</th>'
            '<th class="num">score</th><th>emotion</th><th>text</th></tr></thead><tbody>'
        )
        for post in data.posts:
            text = post.text if len(post.text) <= 400 else post.text[:400].rstrip() + "…"
            out.append(
                f"<tr><td>{_clock(post.at)}</td><td>{esc(post.tickers)}</td><td>{esc(post.source)}</td>"
                f'<td class="num neg">{post.score:+.2f}</td><td>{esc(post.emotion)}</td>'
                f"<td>{_safe_link(post.url, esc(text))}</td></tr>"
            )
        out.append("</tbody></table>")
    else:
        out.append('<p class="note">No negative posts about these symbols in this range.</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
