"""What every per-ticker number counts, defined once.

The alert detector, `moodwire backtest`, the dashboards' SQL and the HTML report all count the
same thing, so a chart, an alert and a backtest of the same minutes agree:

* **What is counted**: posts the model scored (`status = 'scored'`) that ingest did not flag as
  spam or bot-like (`flags` empty). Unscored posts (a language the model does not read) and
  flagged posts are stored but never counted.
* **Per ticker, by stance**: each post counts once for every ticker it names, under its stance
  toward that ticker (the `targets` the scorer wrote: negative = bearish, bad for holders).
  A post that names no ticker counts under the symbol '' (market-wide totals).
* **Stories, not copies**: posts of one story (the same wire story from several outlets, a
  brigade's copy-paste; ingest gives them one `story_id`) count once per ticker, in the minute of
  its first copy. A copy published within a day (`STORY_LOOKBACK`, ingest's near-duplicate
  window) after an earlier copy of the same story about the same ticker adds volume but not
  another story; a copy more than a day after the previous one counts again (the story is news
  again). A copy that arrives late but was published earlier moves the story to its own minute.
  The story's stance and probabilities are those of its post with the smallest id in that first
  minute, so the count does not depend on which copy arrived first, and a post delivered twice
  is counted once.
* **Minute**: the UTC minute of `published_at`.

Per (ticker, minute) that gives: `stories` (the total), `negative`, `neutral`, `positive`
(stories by stance), `expected_negative` (the sum over stories of P(negative) for that ticker)
and `posts` (distinct post ids published in that minute, every copy included: volume, not
sentiment). A minute that holds only later copies has a row with `stories` 0 and `posts` > 0.

In ClickHouse this is the `ticker_stories` table (one row of aggregate states per ticker,
minute and story, fed by a materialized view on `posts`) read through `story_rows_sql` and
`minute_counts_sql`, which look a day before the window for earlier copies. In Python
(`moodwire backtest`) it is `StoryTally`, which applies the same rules to scored posts.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from moodwire.labels import POLARITY_LABELS

COUNTED_STATUS = "scored"
STORY_TABLE = "ticker_stories"
# A copy this soon after the previous copy of its story (same ticker) is the same telling of it.
STORY_LOOKBACK = timedelta(hours=24)
_LOOKBACK_S = int(STORY_LOOKBACK.total_seconds())
_LOOKBACK_MINUTES = _LOOKBACK_S // 60

# Which posts rows count (SQL over the posts table).
COUNTED_POSTS_SQL = f"status = '{COUNTED_STATUS}' AND empty(flags)"
STORY_KEY_SQL = "if(story_id = '', id, story_id)"

# One (symbol, stance, stance score, P(negative)) tuple per ticker of a post, or one for symbol ''
# carrying the post's own labels when it names none.
_TARGETS_SQL = (
    "arrayJoin(if(empty(target_symbols), "
    "[tuple('', toString(polarity), polarity_score, p_negative)], "
    "arrayMap((s, st, sc, p) -> tuple(s, st, sc, p), "
    "target_symbols, target_polarities, target_scores, target_p_negative)))"
)


def ticker_stories_select(database: str) -> str:
    """The SELECT over `posts` that the materialized view (and a backfill) writes to ticker_stories.

    Column aliases differ from `posts` columns on purpose: ClickHouse resolves a name to the
    alias first, and `p_negative` as an alias of an expression over p_negative is a cycle.
    """
    return f"""WITH {_TARGETS_SQL} AS target
SELECT
    toStartOfMinute(published_at) AS minute,
    tupleElement(target, 1) AS symbol,
    {STORY_KEY_SQL} AS story,
    uniqExactState(id) AS posts,
    argMinState(tupleElement(target, 2), id) AS story_stance,
    argMinState(toFloat32(tupleElement(target, 3)), id) AS story_stance_score,
    argMinState(toFloat32(tupleElement(target, 4)), id) AS story_p_negative,
    argMinState(toString(emotion), id) AS story_emotion,
    argMinState(toString(kind), id) AS story_kind
FROM {database}.posts
WHERE {COUNTED_POSTS_SQL}
GROUP BY minute, symbol, story"""


def _table(database: str, name: str) -> str:
    """`database.name`, or the bare name ("" database: the connection's current database)."""
    return f"{database}.{name}" if database else name


def story_rows_sql(database: str, where: str = "1", since: str | None = None, *, copies: bool = False) -> str:
    """One row per counted story about a ticker: symbol, minute (of the story's first copy),
    story, stance, stance_score, negative_probability, emotion, kind and post_count (its copies
    in that minute).

    `where` filters ticker_stories rows (columns minute, symbol); keep it on those columns so
    ClickHouse reads only the parts it needs. When it bounds the minutes, pass `since`: an SQL
    expression at or before the first minute it admits (e.g. `toDateTime(%(start)s)` or
    `$__fromTime`), so copies in the day before are found and a story that started there is not
    counted again. Without `since` only the rows `where` admits are looked at. An empty
    `database` reads the connection's current one (analysts' queries).

    `copies=True` returns every (symbol, minute, story) row `where` admits, with a `counted`
    column (1 for a story's first copy, 0 for a later one): volume counts copies too.
    """
    table = _table(database, STORY_TABLE)
    rows = where
    if since is not None:
        # Earlier copies matter only for stories that have a row in the window.
        rows = (
            f"(({where}) OR (minute >= {since} - {_LOOKBACK_S} AND minute < {since}))\n"
            f"    AND (symbol, story) GLOBAL IN (SELECT symbol, story FROM {table} WHERE {where})"
        )
    return f"""SELECT symbol, minute, story, stance, stance_score, negative_probability, emotion, kind, post_count, counted
FROM (
    SELECT
        symbol,
        story,
        groupArray(minute) AS minutes,
        groupArray(stance) AS stances,
        groupArray(stance_score) AS stance_scores,
        groupArray(negative_probability) AS negative_probabilities,
        groupArray(emotion) AS emotions,
        groupArray(kind) AS kinds,
        groupArray(post_count) AS post_counts
    FROM (
        SELECT
            symbol,
            minute,
            story,
            argMinMerge(story_stance) AS stance,
            argMinMerge(story_stance_score) AS stance_score,
            argMinMerge(story_p_negative) AS negative_probability,
            argMinMerge(story_emotion) AS emotion,
            argMinMerge(story_kind) AS kind,
            uniqExactMerge(posts) AS post_count
        FROM {table}
        WHERE {rows}
        GROUP BY symbol, minute, story
    )
    GROUP BY symbol, story
)
ARRAY JOIN
    minutes AS minute,
    stances AS stance,
    stance_scores AS stance_score,
    negative_probabilities AS negative_probability,
    emotions AS emotion,
    kinds AS kind,
    post_counts AS post_count,
    -- a story's first copy: no copy of it about this ticker in the day before
    arrayMap(m -> NOT arrayExists(x -> x < m AND x >= m - {_LOOKBACK_S}, minutes), minutes) AS counted
WHERE {where if copies else f"({where}) AND counted"}"""


def minute_counts_sql(database: str, where: str = "1", story_where: str = "1", since: str | None = None) -> str:
    """Per (symbol, minute): stories, negative, neutral, positive, expected_negative, posts.

    `where` and `since` as in `story_rows_sql`; `story_where` filters stories after their states
    are merged (stance, emotion, kind: e.g. "kind = 'headline'" for news only).
    """
    return f"""SELECT
    symbol,
    minute,
    countIf(counted) AS stories,
    countIf(counted AND stance = 'negative') AS negative,
    countIf(counted AND stance = 'neutral') AS neutral,
    countIf(counted AND stance = 'positive') AS positive,
    sumIf(negative_probability, counted) AS expected_negative,
    sum(post_count) AS posts
FROM (
{story_rows_sql(database, where, since, copies=True)}
)
WHERE {story_where}
GROUP BY symbol, minute"""


def negative_examples_sql(database: str) -> str:
    """The most negative counted posts about %(symbol)s published in [%(start)s, %(end)s), one
    per story: the evidence attached to an alert (parameters: symbol, start, end, limit)."""
    at = "indexOf(target_symbols, %(symbol)s)"
    # Aliases unlike the columns: ClickHouse would read `published_at` in WHERE as the aggregate.
    return f"""SELECT id, any(text) AS example_text, min(target_scores[{at}]) AS example_score,
    any(published_at) AS example_published_at, any({STORY_KEY_SQL}) AS example_story
FROM {database}.posts
WHERE has(target_symbols, %(symbol)s) AND target_polarities[{at}] = 'negative' AND {COUNTED_POSTS_SQL}
    AND published_at >= toDateTime(%(start)s, 'UTC') AND published_at < toDateTime(%(end)s, 'UTC')
GROUP BY id
ORDER BY example_score ASC, id
LIMIT 1 BY example_story
LIMIT %(limit)s"""


# ---------------------------------------------------------------------------------------------
# The same rules in Python, for scored posts read from a file


def story_key(post_id: str, story_id: str | None) -> str:
    return story_id or post_id


def is_counted(status: str | None, flags: Sequence[str] | None) -> bool:
    return (status or COUNTED_STATUS) == COUNTED_STATUS and not flags


@dataclass(frozen=True)
class TickerVote:
    """What one post says about one ticker: its stance, stance score and P(negative)."""

    symbol: str
    stance: str
    negative_probability: float
    score: float = 0.0


@dataclass
class _Story:
    first_id: str
    stance: str
    negative_probability: float
    post_ids: set[str]


@dataclass(frozen=True)
class MinuteTotals:
    symbol: str
    minute: datetime
    stories: int
    negative: int
    neutral: int
    positive: int
    expected_negative: float
    posts: int


def _float32(value: float) -> float:
    """The value as the store keeps it (Float32), so Python sums what ClickHouse sums."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def votes_of(record: Mapping[str, Any]) -> list[TickerVote]:
    """The per-ticker stances of one scored post as `classify` and the bus write it.

    `targets` when present; otherwise (output of an older scorer) every symbol inherits the
    post's polarity, which is what the store's migration does for rows stored before targets.
    """
    polarity = str(record["polarity"])
    if polarity not in POLARITY_LABELS:
        raise ValueError(f"polarity {polarity!r} is not one of {', '.join(POLARITY_LABELS)}")
    probs = record.get("polarity_probs") or {}
    post_negative = _float32(float(probs.get("negative", 1.0 if polarity == "negative" else 0.0)))
    targets = record.get("targets")
    if targets:
        votes = []
        for target in targets:
            stance = str(target["polarity"])
            if stance not in POLARITY_LABELS:
                raise ValueError(f"target {target.get('symbol')!r}: polarity {stance!r} is not a label")
            t_probs = target.get("polarity_probs") or {}
            votes.append(
                TickerVote(
                    str(target["symbol"]),
                    stance,
                    _float32(float(t_probs.get("negative", 1.0 if stance == "negative" else 0.0))),
                    float(target.get("polarity_score", 0.0)),
                )
            )
        return votes
    symbols = record.get("symbols") or []
    score = float(record.get("polarity_score", 0.0))
    return [TickerVote(str(s), polarity, post_negative, score) for s in dict.fromkeys(symbols)] or [
        TickerVote("", polarity, post_negative, score)
    ]


class StoryTally:
    """Scored posts in, the same per-(ticker, minute) totals as `minute_counts_sql` out.

    Posts may be added in any order and the totals read at any time (a backtest replays posts
    as they arrived and reads the minutes so far). Stories are kept per (ticker, minute) with
    the minutes each (ticker, story) has copies in; whether a copy is its story's first is
    decided when the totals are read, so a late copy published earlier moves the story.
    """

    def __init__(self) -> None:
        self._cells: dict[tuple[str, int], dict[str, _Story]] = {}
        self._symbols_by_minute: dict[int, set[str]] = {}
        self._copy_minutes: dict[tuple[str, str], list[int]] = {}  # sorted
        self._changed: set[int] = set()

    def add(
        self,
        post_id: str,
        published_at: datetime,
        votes: Iterable[TickerVote],
        *,
        story_id: str | None = None,
        status: str | None = None,
        flags: Sequence[str] | None = None,
    ) -> bool:
        """Count one post; False when the rules leave it out (unscored or flagged)."""
        if not is_counted(status, flags):
            return False
        if published_at.tzinfo is None:
            raise ValueError("published_at must be timezone-aware")
        minute = int(published_at.timestamp()) // 60
        story = story_key(post_id, story_id)
        self._changed.add(minute)
        for vote in votes:
            cell = self._cells.get((vote.symbol, minute))
            if cell is None:
                cell = self._cells[(vote.symbol, minute)] = {}
                self._symbols_by_minute.setdefault(minute, set()).add(vote.symbol)
            current = cell.get(story)
            if current is None:
                cell[story] = _Story(post_id, vote.stance, vote.negative_probability, {post_id})
                self._note_copy_minute(vote.symbol, story, minute)
                continue
            current.post_ids.add(post_id)
            if post_id < current.first_id:  # argMin by id, as the table's states do
                current.first_id = post_id
                current.stance = vote.stance
                current.negative_probability = vote.negative_probability
        return True

    def _note_copy_minute(self, symbol: str, story: str, minute: int) -> None:
        minutes = self._copy_minutes.setdefault((symbol, story), [])
        at = bisect_left(minutes, minute)
        minutes.insert(at, minute)
        # Only the next copy can stop being a first copy: any later one within a day of this
        # minute already had that next copy in its day before.
        if at + 1 < len(minutes) and minutes[at + 1] - minute <= _LOOKBACK_MINUTES:
            self._changed.add(minutes[at + 1])

    def _is_first_copy(self, symbol: str, story: str, minute: int) -> bool:
        minutes = self._copy_minutes[(symbol, story)]
        at = bisect_left(minutes, minute)
        return at == 0 or minutes[at - 1] < minute - _LOOKBACK_MINUTES

    def take_changed(self) -> set[int]:
        """The minutes (epoch minutes) whose totals may have changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def totals(self) -> list[MinuteTotals]:
        """Every (ticker, minute), ordered by minute, then ticker."""
        return [self._total(symbol, minute) for minute, symbol in sorted((m, s) for s, m in self._cells)]

    def minute_totals(self, minute: int) -> list[MinuteTotals]:
        """The totals of one minute (epoch minutes: seconds // 60), ordered by ticker."""
        return [self._total(symbol, minute) for symbol in sorted(self._symbols_by_minute.get(minute, ()))]

    def _total(self, symbol: str, minute: int) -> MinuteTotals:
        by_stance = [0, 0, 0]
        expected = 0.0
        posts: set[str] = set()
        for key, story in self._cells[(symbol, minute)].items():
            posts |= story.post_ids
            if not self._is_first_copy(symbol, key, minute):
                continue
            by_stance[POLARITY_LABELS.index(story.stance)] += 1
            expected += story.negative_probability
        return MinuteTotals(
            symbol=symbol,
            minute=datetime.fromtimestamp(minute * 60, tz=UTC),
            stories=sum(by_stance),
            negative=by_stance[0],
            neutral=by_stance[1],
            positive=by_stance[2],
            expected_negative=expected,
            posts=len(posts),
        )
