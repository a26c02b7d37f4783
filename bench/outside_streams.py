"""Scored-post streams "by other hands": an independent generator for measuring the alert detector.

The detector's own benchmark streams come from one generator written by the people who tuned it.
This module was written without looking at that generator or at the detector, from a separate set
of assumptions about how financial post streams behave, so that the detector can be measured on
streams it was not tuned on. numpy and the standard library only.

What a stream is
----------------
A stream is a list of JSONL lines in the format `moodwire classify` writes (one scored post per
line, with per-ticker `targets`), in ARRIVAL order (`scored_at`), plus the list of events that
were planted in it. Every post has a *true* stance per ticker it names; the labels in the lines
are what a simulated sentiment MODEL made of them (a per-family confusion matrix, ticker-specific
bias, probabilities that are sometimes confidently wrong, and in one family a model update
mid-stream). The detector only sees the model's labels.

Common machinery (all families)
-------------------------------
* Volume is an inhomogeneous Poisson process per ticker and minute: a ticker's base rate (posts a
  minute at a "normal" market hour) times a time-of-day/day-of-week profile times a day-to-day
  log-normal factor. Events add their own rate shapes on top (exponential news decay, plateaus,
  ramps), each with its own true-stance mix. One family adds self-exciting (Hawkes) reposting.
* News headlines (source `newswire`) are syndicated: copies by other outlets a few seconds to 15
  minutes later, with their own ids and one shared `story_id` (the same text, so the same labels).
* Delivery: most posts reach the system seconds after they are written; a few percent minutes
  late, under 1% hours late. Some posts are delivered twice (same id, later `scored_at`). One
  family adds a feed outage (a whole source delivered hours late in one batch) and a consumer
  restart that re-delivers a block of posts.
* Tickers are invented names (2-5 upper-case letters), some "thin" (a few posts a day).

The "must be found" rule (`qualifies`)
--------------------------------------
Evaluated on the model's LABELS in the lines, exactly as a detector could see them:

* story units: lines are taken in arrival order; a repeated `id` is dropped, and so is any later
  line whose `story_id` was already seen (a story counts once, by its first-arriving copy).
* spike window: the ticker's units (targets naming the ticker) published in [onset, onset+10 min)
  that ARRIVED by onset+15 min (a real-time detector can't use posts that come hours late).
  S10 = their number, N10 = how many are labelled negative for that ticker.
* baseline: the ticker's units published in [onset-L, onset-5 min) that arrived before onset, for
  the first L in (120, 360, 1440, 4320) minutes that gives at least 30 units (the last L
  otherwise). b = max((negatives + 0.5) / (units + 1), 0.02): the labelled negative share just
  before the spike, smoothed so that a handful of posts can't make it 0.
* qualifies = planned duration >= 10 minutes and N10 >= 12 and N10 / S10 >= 2 b.

The planned duration of an event is how long its extra volume stays at or above the ticker's
expected background volume at that time (i.e. total volume at least 2x), or at or above half its
own peak if that is lower, from the generator's intensity, not from the sampled posts. Only events
of kind "negative-spike" can qualify; every other kind is a decoy (or another real event that is
not a negative spike) and has qualifies False.
After generation, every ticker is scanned minute by minute for windows that meet the rule but lie
in no planned negative spike (chance clustering on a busy ticker, a reposting cascade that got out
of hand): each run of such windows is listed as an "organic-flurry" event (qualifies False). Nobody
planted them, but on labels they are indistinguishable from a small real spike, so they should
count neither way (an alert there is not a false alarm, a miss is not a miss). Decoys are designed
not to meet the rule at their onset; one that does anyway (say a huge earnings beat on a ticker
whose labelled negative share is ~4%: the model's few misreadings of hundreds of positive posts
double it) is on labels a negative spike, so it is listed as an "organic-flurry" instead, and
`python -m bench.outside_streams` names it. Chance flurries are most common on tickers with a few
posts a minute and a low labelled share, where 12 negatives in 10 minutes is within the noise.

Families
--------
earnings
    A US earnings season (January, with the Martin Luther King Jr. Day holiday and a weekend).
    Trading-hours rhythm in New York time: near-empty nights, a pre-market ramp, a burst at the
    open, a lunch lull, a second burst at the close; weekends and holidays nearly empty. Almost
    every ticker reports once, before the open (~07:00 ET) or after the close (~16:05 ET). Volume builds
    up for 1-3 hours before the release (anxious chatter, tone barely moved), jumps 10-50x at the
    release and decays exponentially (half-life 10-60 min, a news cycle, not a step that ends),
    with a smaller second wave at the next regular open. Outcomes: beat (positive spike, decoy),
    in line (volume without a tone change, decoy), miss (negative spike), and "beat but guides
    down" (a positive burst at the release, then a negative one at the conference call about an
    hour later). Misses drag sector peers mildly (sympathy moves, usually below the rule), and
    half of the misses get analyst downgrades next morning. Plus ordinary news spikes either way.
    Headlines are heavily syndicated. A decent finance-tuned model (negative recall ~0.8).
crowd
    Retail social chatter (March, spanning the US daylight-saving switch, so New York hours move
    by one UTC hour mid-stream). Ticker popularity is Pareto (a few tickers get most posts),
    a quarter of tickers are thin. Posting is self-exciting: every post spawns replies/reposts
    (Hawkes, branching ratio 0.35, mean delay 4 min) that mostly echo its stance, so the
    background is bursty on its own. Weekends and evenings are busy. Some tickers are
    sarcasm-heavy (the model reads "great, another -20% day, love it" as negative; labelled base
    negative share 0.5+ so that even a real pile-on can't double it); cheerleader tickers sit
    near 0.05. Negative spikes are pile-ons (short reports, dilution, scandals): an exogenous
    shock whose posts cascade with a higher branching ratio. Decoys: bot brigades (hundreds of
    near-identical negative posts in minutes, which ingest clustered under a few story_ids, so
    they count as a few stories), pump brigades (positive, unique ids), viral attention with an
    unchanged tone, meme rallies. A noisier social model (negative recall ~0.72).
drift
    A summer week with two market-wide sell-offs (one intraday, one a gap down at the open after a
    weekend): most tickers turn negative within minutes of each other, big names first, with a
    plateau (not a decay) and many multi-ticker posts; a few defensive tickers rally (decoy).
    The base share drifts all the time (a market mood and a per-ticker mood, mean-reverting over
    hours to days), some tickers bleed slowly for hours (negative share up 1.5-2.2x over hours:
    NOT a spike, decoy "slow-bleed"), and the sentiment model is updated mid-stream (a two-hour
    canary on 10% of posts, then all posts; per-ticker labelled negative share moves by 0.9-1.35x,
    mostly up, decoy "model-update"). Individual negative spikes are halts/short reports with a plateau shape. Pair
    trades name two tickers with opposite stances. A newswire outage delivers an hour of
    headlines hours late in one batch (decoy "late-batch" where the batch is large), and a
    consumer restart re-delivers a block of posts (duplicate ids).
tokens
    Crypto tokens, traded 24/7: no market hours, an Asia/Europe/US daily rhythm, quieter
    weekends. Liquidation cascades hit most tokens within a couple of minutes and decay fast
    (half-life 5-15 min), at any hour, weekends included; some are followed by relief bounces
    (decoy). Exploits/hacks bring long, very negative plateaus. Pump-and-dumps: a positive pump
    (decoy) then, 0-30 min after it fades, a negative dump (a negative spike whose baseline just
    before is the pump's low negative share). Scheduled unlocks bring a slow negative drift with
    volume (a real negative change, usually below the rule). Listings (positive decoys),
    airdrop-spam brigades under a few story_ids (neutral decoys). The model struggles with
    crypto slang: low negative recall (~0.62), more confidently wrong, token names that read as
    words ("BURN", "MOON") bias it.

Use `generate(family, seed, days=None)`; `python -m bench.outside_streams` prints a summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

OUTSIDE_FAMILIES: tuple[str, ...] = ("earnings", "crowd", "drift", "tokens")

NEG, NEU, POS = 0, 1, 2
_LABELS = ("negative", "neutral", "positive")
# Rule constants (see the module docstring).
RULE_WINDOW_MIN = 10
RULE_ARRIVAL_GRACE_MIN = 5
RULE_MIN_NEGATIVES = 12
RULE_RATIO = 2
RULE_BASELINE_LOOKBACKS_MIN = (120, 360, 1440, 4320)
RULE_BASELINE_GAP_MIN = 5
RULE_BASELINE_MIN_UNITS = 30
RULE_BASELINE_FLOOR = 0.02  # used as 25 * N10 >= S10 in integer form

_SOURCES = ("social", "forum", "newswire", "wire-b", "wire-c", "finblog", "outlet-d")
_SRC_SOCIAL, _SRC_FORUM, _SRC_NEWS = 0, 1, 2
_OUTLETS = np.array([3, 4, 5, 6])

# Text tags (the texts only decorate; the detector reads labels).
_T_CHAT, _T_NEWS, _T_EARN, _T_BRIGADE, _T_PUMP, _T_SELLOFF, _T_PAIR, _T_CRYPTO, _T_SPAM = range(9)
_TEXTS: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    _T_CHAT: (
        ("{s} looks weak here, trimming", "not liking the tape on {s}", "{s} bagholders again",
         "{s} management keeps disappointing", "selling my {s} into any bounce"),
        ("anyone watching {s} today", "{s} volume is light", "{s} sitting at support?",
         "{s} options chain is busy", "what is the float on {s}"),
        ("{s} breaking out", "added more {s} this morning", "{s} looks strong into the close",
         "buyers stepping in on {s}", "{s} is my top pick this year"),
    ),
    _T_NEWS: (
        ("{s} shares fall after regulator opens probe", "{s} cut to underperform at broker",
         "{s} faces class action over disclosures", "{s} recalls product line"),
        ("{s} to present at industry conference", "{s} files quarterly report",
         "{s} announces board changes", "{s} schedules earnings call"),
        ("{s} wins large government contract", "{s} raised to outperform",
         "{s} announces buyback", "{s} shares rise on new product"),
    ),
    _T_EARN: (
        ("{s} misses on revenue, guidance cut", "{s} earnings ugly, margins collapsed",
         "{s} call was a disaster", "{s} down big after hours on the miss"),
        ("{s} results roughly in line", "{s} earnings out, digesting the numbers",
         "{s} reports tonight, holding through", "{s} call starts in ten minutes"),
        ("{s} crushed estimates", "{s} beat and raise, huge quarter", "{s} guidance way above street",
         "{s} up big after hours on the beat"),
    ),
    _T_BRIGADE: (
        ("{s} is a fraud, get out before it goes to zero", "{s} insiders dumping, run",
         "{s} accounting does not add up, sell now"),
        ("{s} check the filings", "{s} read the thread"),
        ("{s} going to the moon", "{s} load up now"),
    ),
    _T_PUMP: (
        ("{s} rug incoming", "{s} pump is over"),
        ("{s} join the group", "{s} next one"),
        ("{s} 100x easy, buy now", "{s} to the moon, do not miss this", "{s} whales accumulating"),
    ),
    _T_SELLOFF: (
        ("{s} getting crushed with the market", "bloodbath, {s} down hard", "{s} margin calls everywhere",
         "{s} no bid at all"),
        ("{s} moving with the index", "{s} watching the futures"),
        ("{s} holding up well in this mess", "{s} flight to safety bid"),
    ),
    _T_PAIR: (("short {s} / long",), ("{s} pair vs",), ("long {s} / short",)),
    _T_CRYPTO: (
        ("{s} rekt again", "{s} ngmi", "{s} dev team went quiet, not good", "{s} chart is cooked"),
        ("{s} funding flat", "{s} sideways all day", "{s} whats the unlock schedule"),
        ("{s} wagmi", "{s} breaking range", "{s} accumulating here", "{s} looks ready"),
    ),
    _T_SPAM: (
        ("{s} airdrop is a scam",),
        ("{s} airdrop claim is live, connect wallet", "{s} free tokens check pinned"),
        ("{s} airdrop free money",),
    ),
}
_EMO = (
    (("fear", 0.35), ("anger", 0.3), ("sadness", 0.2), ("disgust", 0.15)),
    (("neutral", 0.85), ("surprise", 0.15)),
    (("joy", 0.8), ("surprise", 0.2)),
)


@dataclass(frozen=True)
class OutsideEvent:
    symbol: str
    kind: str
    onset: int
    minutes: int
    qualifies: bool
    selloff: int | None = None


@dataclass
class OutsideStream:
    family: str
    seed: int
    start: datetime
    posts: list[str]
    events: list[OutsideEvent]
    symbols: list[str]
    thin: list[str]
    evaluation_start: int
    evaluated_symbol_days: float


# ----------------------------------------------------------------------------------------------
# small helpers


def _logu(rng: np.random.Generator, a: float, b: float) -> float:
    return float(math.exp(rng.uniform(math.log(a), math.log(b))))


def _shape_exp(peak: float, half_life: float, rise: int = 0, cutoff: float = 0.02) -> np.ndarray:
    """Excess rate: a linear rise over `rise` minutes, then exponential decay to `cutoff` x peak."""
    n = rise + int(math.ceil(half_life * math.log2(1.0 / cutoff)))
    t = np.arange(n, dtype=float) + 0.5
    out = peak * np.power(2.0, -np.clip(t - rise, 0.0, None) / half_life)
    if rise:
        out[:rise] = peak * t[:rise] / rise
    return out


def _shape_plateau(peak: float, rise: int, plateau: int, half_life: float) -> np.ndarray:
    decay = _shape_exp(peak, half_life)
    up = peak * (np.arange(rise, dtype=float) + 0.5) / max(rise, 1)
    return np.concatenate([up, np.full(plateau, peak), decay])


def _shape_ramp(peak: float, up: int, hold: int, down: int) -> np.ndarray:
    a = peak * (np.arange(up, dtype=float) + 0.5) / max(up, 1)
    c = peak * (1.0 - (np.arange(down, dtype=float) + 0.5) / max(down, 1))
    return np.concatenate([a, np.full(hold, peak), c])


def _mix(neg: float, pos: float) -> np.ndarray:
    neg = min(max(neg, 0.0), 0.97)
    pos = min(max(pos, 0.0), 0.97 - neg)
    return np.array([neg, 1.0 - neg - pos, pos])


_BAD_NAMES = ("CUM", "FAG", "SEX", "ASS", "TIT", "FUK", "FUC", "NIG", "KKK", "DIK", "DIC", "PUS", "POO", "JEW", "GAY", "NAZ", "RAP", "SUC")


def _tickers(rng: np.random.Generator, n: int, reserved: tuple[str, ...] = ()) -> list[str]:
    cons, vow = "BCDFGHJKLMNPRSTVWXZ", "AEIOUY"
    out: list[str] = list(reserved)
    seen = set(out)
    while len(out) < n:
        length = int(rng.choice([2, 3, 4, 5], p=[0.05, 0.4, 0.4, 0.15]))
        # mostly consonant-vowel alternation, sometimes two consonants in a row
        chars = []
        for i in range(length):
            pool = vow if (i % 2 == 1 and rng.random() > 0.3) else cons
            chars.append(pool[int(rng.integers(0, len(pool)))])
        name = "".join(chars)
        if name not in seen and not any(bad in name for bad in _BAD_NAMES):
            seen.add(name)
            out.append(name)
    order = rng.permutation(len(out))
    return [out[i] for i in order]


# ----------------------------------------------------------------------------------------------
# time profiles

_WEEKDAY_KNOTS = (
    (0.0, 0.10), (4.0, 0.07), (6.0, 0.16), (8.0, 0.38), (9.5, 0.62), (9.55, 1.70), (10.5, 1.05),
    (12.0, 0.80), (13.5, 0.70), (15.0, 0.95), (16.0, 1.30), (16.1, 0.78), (18.0, 0.42),
    (21.0, 0.30), (24.0, 0.10),
)
_WEEKEND_KNOTS = ((0.0, 0.10), (4.0, 0.05), (10.0, 0.12), (14.0, 0.16), (20.0, 0.20), (22.0, 0.16), (24.0, 0.10))
_TOKEN_KNOTS = ((0.0, 0.95), (3.0, 0.80), (7.0, 0.82), (9.0, 0.95), (13.0, 1.10), (15.0, 1.30), (18.0, 1.15), (21.0, 1.00), (24.0, 0.95))


@dataclass
class _Clock:
    """Per stream minute: New York (or UTC) local hour, local day number, day type."""

    hour: np.ndarray  # float local hour
    day: np.ndarray  # int local day index (days since 1970-01-01)
    weekday: np.ndarray  # Mon = 0
    holiday: np.ndarray  # bool
    offset: np.ndarray  # hours UTC - local


def _clock(start: datetime, n_min: int, offset_of: Callable[[np.ndarray], np.ndarray], holidays: tuple[str, ...]) -> _Clock:
    base = np.datetime64(start.replace(tzinfo=None), "m")
    t = np.arange(n_min)
    offset = offset_of(t)
    local = base + t - (offset * 60).astype(np.int64)
    day = local.astype("datetime64[D]")
    hour = (local - day).astype(np.int64) / 60.0
    dayn = day.astype(np.int64)
    hol = np.isin(day, np.array([np.datetime64(h) for h in holidays], dtype="datetime64[D]")) if holidays else np.zeros(n_min, bool)
    return _Clock(hour=hour, day=dayn, weekday=(dayn + 3) % 7, holiday=hol, offset=offset)


def _knots(hour: np.ndarray, knots: tuple[tuple[float, float], ...]) -> np.ndarray:
    xs = np.array([k[0] for k in knots])
    ys = np.array([k[1] for k in knots])
    return np.interp(hour, xs, ys)


# ----------------------------------------------------------------------------------------------
# the stream under construction


_FIELDS = ("sec", "sym", "true", "comp", "src", "tag", "story", "branch", "s2", "t2", "s3", "t3")
_DTYPES = {
    "sec": np.int64, "sym": np.int32, "true": np.int8, "comp": np.int32, "src": np.int8, "tag": np.int8,
    "story": np.int64, "branch": np.float32, "s2": np.int32, "t2": np.int8, "s3": np.int32, "t3": np.int8,
}


@dataclass
class _Plan:
    sym: int
    kind: str
    onset: int
    minutes: int
    selloff: int | None = None
    qualifies: bool = False
    note: str = ""  # what planted it (diagnostics only)


@dataclass
class _ModelVersion:
    name: str
    confusion: np.ndarray  # (n_sym, 3 true, 3 predicted)
    confident_wrong: float


@dataclass
class _Gen:
    family: str
    seed: int
    rng: np.random.Generator
    start: datetime
    n_min: int
    eval_start: int
    symbols: list[str]
    thin: list[int]
    clock: _Clock
    rate: np.ndarray  # (n_sym, n_min) expected background posts a minute
    mix: np.ndarray  # (n_sym, n_min, 3) background true-stance mix, float32
    prefix: str
    news_frac: float = 0.15
    syndicate_p: float = 0.5
    late_frac: float = 0.03
    hours_late_frac: float = 0.006
    dup_frac: float = 0.01
    versions: list[_ModelVersion] = field(default_factory=list)
    version_of: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    outages: list[tuple[int, int, int, int]] = field(default_factory=list)  # src, pub a, pub b (sec), deliver at sec
    redeliveries: list[tuple[int, int, int]] = field(default_factory=list)  # arrival a, b (sec), replay delay sec
    plans: list[_Plan] = field(default_factory=list)
    chunks: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in _FIELDS})
    busy: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    next_story: int = 0

    # --- scheduling -------------------------------------------------------------------------
    def free(self, sym: int, a: int, b: int) -> bool:
        return all(b <= x or a >= y for x, y in self.busy.get(sym, []))

    def reserve(self, sym: int, a: int, b: int) -> bool:
        if not self.free(sym, a, b):
            return False
        self.busy.setdefault(sym, []).append((a, b))
        return True

    def new_stories(self, n: int) -> np.ndarray:
        out = np.arange(self.next_story, self.next_story + n, dtype=np.int64)
        self.next_story += n
        return out

    # --- posts ------------------------------------------------------------------------------
    def add(self, sec: np.ndarray, sym: np.ndarray | int, true: np.ndarray, *, comp: int = -1, src: np.ndarray | int = _SRC_SOCIAL,
            tag: np.ndarray | int = _T_CHAT, story: np.ndarray | int = -1, branch: np.ndarray | float = 0.0,
            s2: np.ndarray | int = -1, t2: np.ndarray | int = -1, s3: np.ndarray | int = -1, t3: np.ndarray | int = -1) -> None:
        n = len(sec)
        if n == 0:
            return
        values = {"sec": sec, "sym": sym, "true": true, "comp": comp, "src": src, "tag": tag, "story": story,
                  "branch": branch, "s2": s2, "t2": t2, "s3": s3, "t3": t3}
        for k, v in values.items():
            arr = np.asarray(v, dtype=_DTYPES[k])
            self.chunks[k].append(np.broadcast_to(arr, (n,)).copy() if arr.ndim == 0 else arr.astype(_DTYPES[k], copy=False))

    def sample_true(self, mix: np.ndarray, n: int) -> np.ndarray:
        """mix: (3,) or (n, 3) -> stances."""
        u = self.rng.random(n)
        cum = np.cumsum(mix, axis=-1)
        if cum.ndim == 1:
            return ((u > cum[0]).astype(np.int8) + (u > cum[1]).astype(np.int8)).astype(np.int8)
        return ((u > cum[:, 0]).astype(np.int8) + (u > cum[:, 1]).astype(np.int8)).astype(np.int8)

    def add_rate(self, sym: int, t0: int, rates: np.ndarray, mix: np.ndarray | None, *, comp: int = -1, tag: int = _T_CHAT,
                 news_frac: float | None = None, branch: float = 0.0, forum_frac: float = 0.3) -> int:
        """Poisson posts for one ticker from minute t0 on; mix None = the ticker's background mix."""
        end = min(t0 + len(rates), self.n_min)
        if end <= t0 or t0 < 0:
            return 0
        counts = self.rng.poisson(np.clip(rates[: end - t0], 0.0, None))
        n = int(counts.sum())
        if n == 0:
            return 0
        minute = t0 + np.repeat(np.arange(end - t0), counts)
        sec = minute.astype(np.int64) * 60 + self.rng.integers(0, 60, n)
        m = self.mix[sym, minute] if mix is None else (mix[minute - t0] if mix.ndim == 2 else mix)
        true = self.sample_true(np.asarray(m, dtype=float), n)
        nf = self.news_frac if news_frac is None else news_frac
        u = self.rng.random(n)
        src = np.where(u < nf, _SRC_NEWS, np.where(u < nf + forum_frac * (1 - nf), _SRC_FORUM, _SRC_SOCIAL))
        tags = np.where(src == _SRC_NEWS, _T_NEWS, tag)
        self.add(sec, sym, true, comp=comp, src=src, tag=tags, branch=np.where(src == _SRC_NEWS, branch * 0.5, branch))
        return n

    def event(self, sym: int, kind: str, onset: int, shape: np.ndarray, mix: np.ndarray | None, *, rise: int = 0,
              selloff: int | None = None, tag: int = _T_CHAT, news_frac: float | None = None, branch: float = 0.0,
              intensity: np.ndarray | None = None, note: str = "") -> _Plan:
        """Plant an event: posts from `shape`, duration from `intensity` (default the shape itself)."""
        comp = len(self.plans)
        self.add_rate(sym, onset, shape, mix, comp=comp, tag=tag, news_frac=news_frac, branch=branch)
        plan = _Plan(sym, kind, onset, self.duration(sym, onset, shape if intensity is None else intensity, rise), selloff,
                     note=note or kind)
        self.plans.append(plan)
        return plan

    def duration(self, sym: int, onset: int, excess: np.ndarray, rise: int = 0) -> int:
        """Minutes until the extra volume falls below the background volume (total under 2x), or
        below half its own peak if that is lower (an event that adds little volume still lasts)."""
        end = min(onset + len(excess), self.n_min)
        ex = excess[: end - onset]
        floor = np.minimum(self.rate[sym, onset:end], 0.5 * float(ex.max(initial=0.0)))
        below = np.nonzero((ex < floor) & (np.arange(len(ex)) >= rise))[0]
        return max(int(below[0]) if len(below) else len(ex), 1)

    def minute_of(self, day: int, hour: float) -> int | None:
        """Stream minute of local `hour` on local day number `day`, or None outside the stream."""
        base = np.datetime64(self.start.replace(tzinfo=None), "m").astype(np.int64)
        for off in (self.clock.offset[0], self.clock.offset[-1]):
            m = int(day * 1440 + round(hour * 60) + off * 60 - base)
            if 0 <= m < self.n_min and self.clock.day[m] == day and abs(self.clock.hour[m] - hour) < 1e-6 + 1 / 60:
                return m
        return None

    def trading_days(self) -> list[int]:
        """Local weekdays (not holidays) whose 08:00-20:00 lies in the evaluated part of the stream."""
        out = []
        for d in np.unique(self.clock.day):
            a, b = self.minute_of(int(d), 8.0), self.minute_of(int(d), 20.0)
            if a is None or b is None or a < self.eval_start:
                continue
            if self.clock.weekday[a] < 5 and not self.clock.holiday[a]:
                out.append(int(d))
        return out


# ----------------------------------------------------------------------------------------------
# model simulation


def _confusions(n_sym: int, base: np.ndarray, neg_bias: np.ndarray) -> np.ndarray:
    c = np.broadcast_to(base, (n_sym, 3, 3)).copy()
    c[:, :, NEG] *= neg_bias[:, None]
    return c / c.sum(axis=2, keepdims=True)


def _label(rng: np.random.Generator, true: np.ndarray, conf: np.ndarray, cw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """true (n,), conf (n, 3) confusion rows, cw (n,) confidently-wrong rate -> (pred, probs (n,3))."""
    n = len(true)
    u = rng.random(n)
    cum = np.cumsum(conf, axis=1)
    pred = ((u > cum[:, 0]).astype(np.int8) + (u > cum[:, 1]).astype(np.int8)).astype(np.int64)
    correct = pred == true
    c = np.where(
        correct,
        0.42 + 0.56 * rng.beta(5.0, 2.0, n),
        np.where(rng.random(n) < cw, rng.uniform(0.72, 0.96, n), rng.uniform(0.40, 0.66, n)),
    )
    rem = 1.0 - c
    o1 = (pred + 1) % 3
    o2 = (pred + 2) % 3
    s_true = rng.beta(5.0, 2.0, n)
    s = np.where(correct, rng.random(n), np.where(o1 == true, s_true, 1.0 - s_true))
    lo = np.clip(1.0 - (c - 0.012) / rem, 0.0, 1.0)
    hi = np.clip((c - 0.012) / rem, 0.0, 1.0)
    s = np.clip(s, lo, hi)
    p = np.empty((n, 3))
    ar = np.arange(n)
    p[ar, pred] = c
    p[ar, o1] = rem * s
    p[ar, o2] = rem * (1.0 - s)
    p = np.round(p, 4)
    p[:, NEU] = np.round(1.0 - p[:, NEG] - p[:, POS], 4)
    return pred.astype(np.int8), p


# ----------------------------------------------------------------------------------------------
# the rule, on arrays


@dataclass
class _Units:
    """Per ticker, the story units (see the rule) sorted by publication second."""

    pub: list[np.ndarray]
    arr: list[np.ndarray]
    neg: list[np.ndarray]


def _rule(u: _Units, sym: int, onset: int, minutes: int) -> bool:
    pub, arr, neg = u.pub[sym], u.arr[sym], u.neg[sym]
    o = onset * 60
    lo, hi = np.searchsorted(pub, [o, o + RULE_WINDOW_MIN * 60])
    m = arr[lo:hi] <= o + (RULE_WINDOW_MIN + RULE_ARRIVAL_GRACE_MIN) * 60
    s10 = int(m.sum())
    n10 = int(neg[lo:hi][m].sum())
    nb = negb = 0
    b = int(np.searchsorted(pub, o - RULE_BASELINE_GAP_MIN * 60))
    for look in RULE_BASELINE_LOOKBACKS_MIN:
        a = int(np.searchsorted(pub, o - look * 60))
        mm = arr[a:b] < o
        nb, negb = int(mm.sum()), int(neg[a:b][mm].sum())
        if nb >= RULE_BASELINE_MIN_UNITS:
            break
    return (
        minutes >= RULE_WINDOW_MIN
        and n10 >= RULE_MIN_NEGATIVES
        and n10 * (nb + 1) >= (2 * negb + 1) * s10
        and 25 * n10 >= s10
    )


# ----------------------------------------------------------------------------------------------
# families

_DST_2024 = datetime(2024, 3, 10, 7, 0, tzinfo=UTC)


def _new_gen(family: str, seed: int, start: datetime, days: int, n_sym: int, offset_of: Callable[[np.ndarray], np.ndarray],
             holidays: tuple[str, ...], prefix: str, reserved_names: tuple[str, ...] = ()) -> _Gen:
    fam_salt = {name: i + 1 for i, name in enumerate(OUTSIDE_FAMILIES)}[family]
    rng = np.random.default_rng([seed, fam_salt, 20250101])
    n_min = days * 1440
    clock = _clock(start, n_min, offset_of, holidays)
    symbols = _tickers(rng, n_sym, reserved_names)
    return _Gen(family=family, seed=seed, rng=rng, start=start, n_min=n_min, eval_start=2 * 1440, symbols=symbols, thin=[],
                clock=clock, rate=np.zeros((n_sym, n_min)), mix=np.zeros((n_sym, n_min, 3), dtype=np.float32), prefix=prefix)


def _day_factor(g: _Gen, sigma: float) -> np.ndarray:
    """(n_sym, n_min) log-normal day-to-day volume factor per local day."""
    days, inv = np.unique(g.clock.day, return_inverse=True)
    f = np.exp(g.rng.normal(-sigma * sigma / 2, sigma, (len(g.symbols), len(days))))
    return f[:, inv]


def _smooth_walk(rng: np.random.Generator, n_min: int, step_min: int, sigma: float, revert: float, size: int) -> np.ndarray:
    """(size, n_min) mean-reverting random walk (AR(1) on knots every step_min, linearly joined)."""
    k = n_min // step_min + 2
    x = np.zeros((size, k))
    for i in range(1, k):
        x[:, i] = x[:, i - 1] * (1 - revert) + rng.normal(0, sigma, size)
    xs = np.arange(k) * step_min
    t = np.arange(n_min)
    return np.stack([np.interp(t, xs, row) for row in x])


def _equity_setup(g: _Gen, base_rate: np.ndarray, weekend_scale: float, holiday_scale: float, evening: float = 0.0,
                  day_sigma: float = 0.25) -> np.ndarray:
    c = g.clock
    wk = _knots(c.hour, _WEEKDAY_KNOTS)
    if evening:
        wk = wk + evening * np.exp(-0.5 * ((c.hour - 21.0) / 1.6) ** 2)
    we = _knots(c.hour, _WEEKEND_KNOTS) * weekend_scale
    prof = np.where(c.holiday, _knots(c.hour, _WEEKEND_KNOTS) * holiday_scale, np.where(c.weekday >= 5, we, wk))
    g.rate = base_rate[:, None] * prof[None, :] * _day_factor(g, day_sigma)
    return prof


def _fill_mix(g: _Gen, neg: np.ndarray, pos: np.ndarray) -> None:
    """neg, pos: (n_sym, n_min) or (n_sym, 1) true shares."""
    neg = np.clip(np.broadcast_to(neg, g.rate.shape), 0.005, 0.8)
    pos = np.clip(np.broadcast_to(pos, g.rate.shape), 0.01, 0.95 - neg)
    g.mix[:, :, 0] = neg
    g.mix[:, :, 2] = pos
    g.mix[:, :, 1] = 1.0 - neg - pos


def _background(g: _Gen, branch: float = 0.0) -> None:
    for s in range(len(g.symbols)):
        g.add_rate(s, 0, g.rate[s] * (1.0 - branch), None, branch=branch)


def _trading_minute(g: _Gen, day: int, lo_h: float, hi_h: float) -> int | None:
    h = float(g.rng.uniform(lo_h, hi_h))
    return g.minute_of(day, round(h * 60) / 60)


def _place(g: _Gen, sym: int, days: list[int], lo_h: float, hi_h: float, before: int, after: int, tries: int = 8) -> int | None:
    """A free local-time minute on one of `days` for an event on `sym`, reserved; None if none found."""
    for _ in range(tries if days else 0):
        t = _trading_minute(g, int(g.rng.choice(days)), lo_h, hi_h)
        if t is not None and t >= g.eval_start and t + RULE_WINDOW_MIN < g.n_min and g.reserve(sym, t - before, t + after):
            return t
    return None


# ---- earnings ---------------------------------------------------------------------------------


def _fam_earnings(g: _Gen) -> None:
    rng = g.rng
    n = len(g.symbols)
    thin = rng.choice(n, 7, replace=False)
    g.thin = sorted(int(i) for i in thin)
    base = np.clip(np.exp(rng.normal(math.log(0.75), 0.85, n)), 0.08, 9.0)
    base[thin] = rng.uniform(0.004, 0.014, len(thin))
    prof = _equity_setup(g, base, weekend_scale=0.7, holiday_scale=0.9)
    # tone: ticker base plus a smooth market mood (mostly a daily swing)
    neg0 = rng.uniform(0.06, 0.16, n)
    pos0 = rng.uniform(0.22, 0.38, n)
    mood = _smooth_walk(rng, g.n_min, 240, 0.12, 0.15, 1) + 0.6 * _smooth_walk(rng, g.n_min, 120, 0.1, 0.2, n)
    _fill_mix(g, neg0[:, None] * np.exp(mood), pos0[:, None] * np.exp(-0.5 * mood))
    g.news_frac, g.syndicate_p = 0.12, 0.55
    g.late_frac, g.hours_late_frac, g.dup_frac = 0.02, 0.004, 0.008
    cmat = np.array([[0.80, 0.13, 0.07], [0.06, 0.82, 0.12], [0.05, 0.15, 0.80]])
    g.versions = [_ModelVersion("finsent-2024.11", _confusions(n, cmat, np.exp(rng.normal(0, 0.25, n))), 0.3)]
    _background(g)

    sectors = rng.integers(0, 6, n)
    days = g.trading_days()
    if not days:
        return
    # regular opens, for the second wave after a release
    all_days = np.unique(g.clock.day)
    opens = []
    for d in all_days:
        m0 = g.minute_of(int(d), 9.5)
        if m0 is not None and g.clock.weekday[m0] < 5 and not g.clock.holiday[m0]:
            opens.append(m0)

    def next_open(after: int) -> int | None:
        for m0 in opens:
            if m0 > after + 30:
                return m0
        return None

    misses: list[tuple[int, int]] = []
    for s in rng.permutation(n):
        s = int(s)
        if rng.random() > 0.95:
            continue
        day = int(rng.choice(days))
        pre = rng.random() < 0.5
        rel = g.minute_of(day, float(rng.choice([6.75, 7.0, 7.0, 7.5])) if pre else float(rng.choice([16.0833, 16.0833, 16.1667, 16.25])))
        if rel is None or rel < g.eval_start + 200:
            continue
        nxt = next_open(rel)
        end = (nxt + 240) if nxt is not None else rel + 600
        if not g.reserve(s, rel - 200, end):
            continue
        r_here = base[s] * max(prof[rel], 0.35)
        # build-up: 1-3 h, extra volume ramping to 0.5-2x the normal level, tone barely moved
        up = int(rng.integers(60, 181))
        build = np.linspace(0.0, rng.uniform(0.5, 2.0) * r_here, up)
        bmix = g.mix[s, rel - up:rel].astype(float) * np.array([1.1, 1.0, 0.95])
        bmix /= bmix.sum(axis=1, keepdims=True)
        g.add_rate(s, rel - up, build, bmix, tag=_T_EARN, news_frac=0.05)
        outcome = rng.choice(["beat", "inline", "miss", "guide-down"], p=[0.34, 0.2, 0.31, 0.15])
        m = _logu(rng, 10, 50)
        hl = float(rng.uniform(10, 60))
        if outcome == "inline":
            shape = _shape_exp(_logu(rng, 5, 15) * r_here, hl)
            g.event(s, "earnings-inline", rel, shape, None, tag=_T_EARN, news_frac=0.3)
            continue
        neg_mix = _mix(rng.uniform(0.55, 0.85), rng.uniform(0.04, 0.1))
        pos_mix = _mix(rng.uniform(0.03, 0.08), rng.uniform(0.55, 0.8))
        if outcome == "beat":
            g.event(s, "earnings-beat", rel, _shape_exp(m * r_here, hl), pos_mix, tag=_T_EARN, news_frac=0.3)
            tone, kind = pos_mix, "earnings-beat"
        elif outcome == "miss":
            g.event(s, "negative-spike", rel, _shape_exp(m * r_here, hl), neg_mix, tag=_T_EARN, news_frac=0.3, note="miss")
            tone, kind = neg_mix, "negative-spike"
            misses.append((s, rel))
        else:  # beat, then the call guides down
            call = rel + (int(rng.integers(50, 100)) if pre else int(rng.integers(25, 60)))
            g.event(s, "earnings-beat", rel, _shape_exp(m * r_here, hl)[: call - rel], pos_mix, tag=_T_EARN, news_frac=0.3)
            r_call = base[s] * max(prof[call], 0.35)
            g.event(s, "negative-spike", call, _shape_exp(_logu(rng, 0.4, 1.0) * m * r_call, float(rng.uniform(15, 50))),
                    _mix(rng.uniform(0.5, 0.75), 0.1), tag=_T_EARN, news_frac=0.25, note="call-guides-down")
            tone, kind = _mix(0.55, 0.12), "negative-spike"
            misses.append((s, call))
        if nxt is not None and nxt + 10 < g.n_min:
            wave = _shape_exp(rng.uniform(0.2, 0.5) * m * r_here, float(rng.uniform(20, 45)), rise=3)
            g.event(s, kind, nxt, wave, tone, rise=3, tag=_T_EARN, news_frac=0.15, note="open-wave")
            if kind == "negative-spike" and rng.random() < 0.5:
                # analyst downgrades before the next open
                dg = nxt - int(rng.integers(45, 140))
                if dg > rel + 240:
                    g.event(s, "negative-spike", dg, _shape_exp(_logu(rng, 3, 10) * base[s], float(rng.uniform(20, 60))),
                            _mix(0.6, 0.08), tag=_T_NEWS, news_frac=0.4, note="downgrade")
    # sector sympathy after a miss: peers' tone turns mildly negative with some volume
    big = base >= np.quantile(base, 0.6)
    for s, t in misses:
        if not big[s]:
            continue
        for p in np.nonzero(sectors == sectors[s])[0]:
            p = int(p)
            if p == s or rng.random() > 0.5 or not g.reserve(p, t - 30, t + 240):
                continue
            lag = t + int(rng.integers(2, 15))
            shape = _shape_exp(rng.uniform(1, 3) * base[p] * max(prof[lag], 0.35), float(rng.uniform(30, 90)))
            mx = g.mix[p, lag].astype(float) * np.array([rng.uniform(1.4, 2.0), 1.0, 0.8])
            g.event(p, "negative-spike", lag, shape, mx / mx.sum(), note="sympathy")
    # ordinary news, either way, in trading hours
    for s in range(n):
        for _ in range(rng.poisson(0.8)):
            t = _place(g, s, days, 8.0, 15.5, 180, 240)
            if t is None:
                continue
            rh = base[s] * prof[t]
            neg = rng.random() < 0.55
            rise = int(rng.integers(0, 3))
            shape = _shape_exp(_logu(rng, 4, 25) * rh, float(rng.uniform(10, 50)), rise=rise)
            if neg:
                g.event(s, "negative-spike", t, shape, _mix(rng.uniform(0.5, 0.8), 0.08), rise=rise, tag=_T_NEWS, news_frac=0.35,
                        note="news")
            else:
                g.event(s, "positive-spike", t, shape, _mix(0.05, rng.uniform(0.5, 0.8)), rise=rise, tag=_T_NEWS, news_frac=0.35)


# ---- crowd ------------------------------------------------------------------------------------


def _fam_crowd(g: _Gen) -> None:
    rng = g.rng
    n = len(g.symbols)
    order = rng.permutation(n)
    thin = order[:12]
    sarcastic = order[12:18]
    cheer = order[18:26]
    g.thin = sorted(int(i) for i in thin)
    base = np.clip(0.3 * rng.random(n) ** (-1 / 1.16), 0.1, 20.0)
    base[thin] = rng.uniform(0.003, 0.012, len(thin))
    prof = _equity_setup(g, base, weekend_scale=3.0, holiday_scale=3.0, evening=0.35, day_sigma=0.35)
    neg0 = rng.uniform(0.08, 0.2, n)
    pos0 = rng.uniform(0.25, 0.45, n)
    neg0[sarcastic] = rng.uniform(0.35, 0.45, len(sarcastic))
    pos0[sarcastic] = rng.uniform(0.3, 0.4, len(sarcastic))
    neg0[cheer] = rng.uniform(0.02, 0.04, len(cheer))
    mood = 0.5 * _smooth_walk(rng, g.n_min, 180, 0.12, 0.1, n)
    _fill_mix(g, neg0[:, None] * np.exp(mood), pos0[:, None] * np.exp(-0.3 * mood))
    g.news_frac, g.syndicate_p = 0.04, 0.3
    g.late_frac, g.hours_late_frac, g.dup_frac = 0.03, 0.006, 0.015
    cmat = np.array([[0.72, 0.18, 0.10], [0.08, 0.76, 0.16], [0.09, 0.17, 0.74]])
    bias = np.exp(rng.normal(0, 0.3, n))
    bias[cheer] = rng.uniform(0.45, 0.6, len(cheer))
    conf = _confusions(n, cmat, bias)
    for s in sarcastic:  # sarcasm: praise read as scorn
        conf[s, POS] = [0.32, 0.14, 0.54]
        conf[s, NEU] = [0.2, 0.66, 0.14]
    g.versions = [_ModelVersion("social-sent-v7", conf, 0.4)]
    bg_branch = 0.35
    _background(g, branch=bg_branch)
    evs = np.arange(g.eval_start + 60, g.n_min - 120)
    mean_delay = 4.0

    def hawkes_intensity(imm: np.ndarray, br: float) -> np.ndarray:
        k = np.arange(1, len(imm) + 240, dtype=float)
        kern = br / mean_delay * np.exp(-(1 - br) * k / mean_delay)
        full = np.concatenate([imm, np.zeros(240)])
        return full + np.convolve(full, np.concatenate([[0.0], kern]))[: len(full)]

    def pick(s: int, span: tuple[int, int], busy_pad: tuple[int, int] = (180, 300)) -> int | None:
        for _ in range(20):
            # attention follows the crowd's rhythm: pick minutes weighted by activity
            t = int(rng.choice(evs, p=prof[evs] / prof[evs].sum()))
            if span[0] <= t < span[1] and g.reserve(s, t - busy_pad[0], t + busy_pad[1]):
                return t
        return None

    span = (g.eval_start + 60, g.n_min - 120)
    n_eval_days = (g.n_min - g.eval_start) / 1440
    for s in range(n):
        k_pile = rng.poisson((0.5 if s in thin else 1.2 + 0.3 * math.log1p(base[s])) * n_eval_days / 7)
        for _ in range(k_pile):
            t = pick(s, span)
            if t is None:
                continue
            rh = max(base[s] * prof[t], 0.02)
            k_imm = _logu(rng, 12, 100) * max(rh / 0.4, 0.3) ** 0.55
            hl = float(rng.uniform(3, 10))
            imm = _shape_exp(1.0, hl)
            imm *= k_imm / imm.sum()
            br = float(rng.uniform(0.55, 0.72))
            g.event(s, "negative-spike", t, imm, _mix(rng.uniform(0.6, 0.85), 0.05), branch=br, news_frac=0.02,
                    intensity=hawkes_intensity(imm, br), note="pile-on")
        # decoys
        if s in thin:
            continue
        for _ in range(rng.poisson(0.25 * n_eval_days / 7)):
            t = pick(s, span)
            if t is None:
                continue
            # bot brigade: near-identical negative posts; ingest clustered most under a few story_ids
            n_posts = int(rng.integers(60, 260))
            n_story = int(rng.integers(2, 5))
            dur = int(rng.integers(5, 16))
            sec = t * 60 + rng.integers(0, dur * 60, n_posts)
            stories = g.new_stories(n_story)
            st = stories[rng.integers(0, n_story, n_posts)]
            # a few reworded ones escaped the clustering: at most 5, so the brigade stays < 10 stories
            st[rng.choice(n_posts, int(rng.integers(1, 6)), replace=False)] = -1
            true = g.sample_true(_mix(0.85, 0.0), n_posts)
            comp = len(g.plans)
            g.add(np.sort(sec), s, true, comp=comp, tag=_T_BRIGADE, story=st)
            g.plans.append(_Plan(s, "bot-brigade", t, dur))
        for _ in range(rng.poisson(0.3 * n_eval_days / 7)):
            t = pick(s, span)
            if t is None:
                continue
            kind = rng.choice(["bot-pump", "viral", "meme-rally"])
            rh = max(base[s] * prof[t], 0.05)
            if kind == "bot-pump":
                shape = _shape_plateau(_logu(rng, 5, 20) * rh, 2, int(rng.integers(10, 40)), 8.0)
                g.event(s, "bot-pump", t, shape, _mix(0.04, 0.85), rise=2, tag=_T_PUMP, news_frac=0.0)
            elif kind == "viral":
                up = int(rng.integers(30, 90))
                shape = _shape_ramp(_logu(rng, 4, 15) * rh, up, int(rng.integers(30, 120)), int(rng.integers(30, 90)))
                g.event(s, "viral", t, shape, g.mix[s, t].astype(float), rise=up)
            else:
                shape = _shape_exp(_logu(rng, 8, 30) * rh, float(rng.uniform(20, 60)), rise=5)
                # a squeeze: euphoric, while bears keep up their usual complaining
                g.event(s, "meme-rally", t, shape, _mix(float(g.mix[s, t, 0]) * 0.9, 0.7), rise=5, branch=0.3)
    _cascade(g, mean_delay=mean_delay, inherit=0.65, inherit_event=0.85)


def _cascade(g: _Gen, mean_delay: float, inherit: float, inherit_event: float) -> None:
    """Hawkes offspring, generation by generation, for every post with branch > 0.

    A reply echoes its parent's stance with probability `inherit` (`inherit_event` inside an
    event: a pile-on is an echo chamber), else it takes the ticker's background mix."""
    rng = g.rng
    sec = np.concatenate(g.chunks["sec"])
    branch = np.concatenate(g.chunks["branch"]).astype(float)
    sym = np.concatenate(g.chunks["sym"])
    true = np.concatenate(g.chunks["true"])
    comp = np.concatenate(g.chunks["comp"])
    par = np.nonzero(branch > 0)[0]
    p_sec, p_sym, p_true, p_comp, p_br = sec[par], sym[par], true[par], comp[par], branch[par]
    for _ in range(40):
        k = rng.poisson(p_br)
        if k.sum() == 0:
            break
        idx = np.repeat(np.arange(len(k)), k)
        c_sec = p_sec[idx] + np.ceil(rng.exponential(mean_delay * 60, len(idx))).astype(np.int64)
        keep = c_sec < g.n_min * 60
        idx, c_sec = idx[keep], c_sec[keep]
        c_sym = p_sym[idx]
        minute = c_sec // 60
        fresh = g.sample_true(g.mix[c_sym, minute].astype(float), len(idx))
        c_comp, c_br = p_comp[idx], p_br[idx]
        echo = rng.random(len(idx)) < np.where(c_comp >= 0, inherit_event, inherit)
        c_true = np.where(echo, p_true[idx], fresh).astype(np.int8)
        src = np.where(rng.random(len(idx)) < 0.3, _SRC_FORUM, _SRC_SOCIAL)
        g.add(c_sec, c_sym, c_true, comp=c_comp, src=src, tag=_T_CHAT, branch=0.0)
        p_sec, p_sym, p_true, p_comp, p_br = c_sec, c_sym, c_true, c_comp, c_br


# ---- drift ------------------------------------------------------------------------------------


def _fam_drift(g: _Gen) -> None:
    rng = g.rng
    n = len(g.symbols)
    order = rng.permutation(n)
    thin = order[:5]
    defensive = order[5:9]
    g.thin = sorted(int(i) for i in thin)
    base = np.clip(np.exp(rng.normal(math.log(0.8), 0.8, n)), 0.1, 9.0)
    base[thin] = rng.uniform(0.004, 0.014, len(thin))
    prof = _equity_setup(g, base, weekend_scale=1.0, holiday_scale=1.0)
    neg0 = rng.uniform(0.07, 0.18, n)
    pos0 = rng.uniform(0.2, 0.35, n)
    market = _smooth_walk(rng, g.n_min, 60, 0.08, 0.03, 1)  # slow: days
    own = _smooth_walk(rng, g.n_min, 60, 0.08, 0.05, n)
    lg = market + own
    neg = neg0[:, None] * np.exp(lg)
    pos = pos0[:, None] * np.exp(-0.5 * lg)
    # slow bleeds: hours of rising negativity without a volume burst (decoys)
    bleeds: list[tuple[int, int, int]] = []
    days = g.trading_days()
    for s in rng.choice(np.setdiff1d(np.arange(n), thin), 14, replace=False):
        s = int(s)
        if not days:
            break
        t = _trading_minute(g, int(rng.choice(days)), 9.6, 13.0)
        up, hold, down = int(rng.integers(150, 300)), int(rng.integers(30, 120)), int(rng.integers(90, 200))
        if t is None or t + up + hold + down >= g.n_min or not g.reserve(int(s), t - 120, t + up + hold + down + 60):
            continue
        f = rng.uniform(1.5, 2.2)
        ramp = 1.0 + (f - 1.0) * _shape_ramp(1.0, up, hold, down)
        neg[s, t:t + len(ramp)] *= ramp
        g.rate[s, t:t + len(ramp)] *= 1.0 + 0.25 * (ramp - 1.0)
        bleeds.append((s, t, len(ramp)))
    _fill_mix(g, neg, pos)
    g.news_frac, g.syndicate_p = 0.2, 0.5
    g.late_frac, g.hours_late_frac, g.dup_frac = 0.04, 0.008, 0.01
    # the model, and its update mid-stream
    c1 = np.array([[0.80, 0.13, 0.07], [0.06, 0.82, 0.12], [0.05, 0.15, 0.80]])
    c2 = np.array([[0.85, 0.10, 0.05], [0.08, 0.80, 0.12], [0.045, 0.145, 0.81]])
    b1 = np.exp(rng.normal(0, 0.25, n))
    b2 = b1 * rng.uniform(0.75, 1.25, n)
    g.versions = [_ModelVersion("finsent-3.1", _confusions(n, c1, b1), 0.3), _ModelVersion("finsent-3.2", _confusions(n, c2, b2), 0.25)]
    upd_day = days[min(1, len(days) - 1)] if days else None
    canary = g.minute_of(upd_day, 10.5) if upd_day is not None else None
    if canary is None:
        canary = g.n_min + 1
    rollout = canary + 120

    def version_of(arr_sec: np.ndarray, r: np.random.Generator) -> np.ndarray:
        mins = arr_sec // 60
        v = (mins >= rollout).astype(np.int64)
        in_canary = (mins >= canary) & (mins < rollout)
        return np.where(in_canary & (r.random(len(arr_sec)) < 0.1), 1, v)

    g.version_of = version_of
    _background(g)
    for s, t, length in bleeds:
        g.plans.append(_Plan(s, "slow-bleed", t, length))
    if rollout < g.n_min:
        for s in range(n):
            g.plans.append(_Plan(s, "model-update", rollout, 60))
    # market-wide sell-offs: one intraday, one a gap down at the open (the latest eligible day)
    sell_times: list[int] = []
    if days:
        a = g.minute_of(days[0], float(rng.uniform(13.5, 14.5)))
        if a is not None:
            sell_times.append(a)
        if len(days) >= 3:
            b = g.minute_of(days[-min(len(days) - 2, 3)], 9.5)
            if b is not None:
                sell_times.append(b)
    for k, t in enumerate(sell_times):
        rank = np.argsort(-base * np.exp(rng.normal(0, 0.5, n)))
        participants: list[tuple[int, int]] = []
        for pos_rank, s in enumerate(rank):
            s = int(s)
            if s in defensive:
                lag = t + int(rng.integers(5, 40))
                if g.reserve(s, lag - 60, lag + 300):
                    shape = _shape_plateau(_logu(rng, 2, 6) * base[s] * prof[lag], 3, int(rng.integers(20, 60)), 45.0)
                    g.event(s, "flight-to-safety", lag, shape, _mix(0.05, 0.7), rise=3, tag=_T_SELLOFF)
                continue
            if rng.random() > (0.5 if s in thin else 0.9):
                continue
            lag = t + int(min(rng.exponential(3 + 0.25 * pos_rank), 25))
            if not g.reserve(s, lag - 60, lag + 360):
                continue
            rh = base[s] * max(prof[lag], 0.35)
            rise = int(rng.integers(1, 4))
            shape = _shape_plateau(_logu(rng, 3, 12) * rh, rise, int(rng.integers(20, 60)), float(rng.uniform(30, 90)))
            g.event(s, "negative-spike", lag, shape, _mix(rng.uniform(0.55, 0.8), 0.06), rise=rise, selloff=k + 1,
                    tag=_T_SELLOFF, news_frac=0.1, note="sell-off")
            participants.append((s, lag))
        # "everything is red" posts naming two or three of the falling tickers
        if len(participants) >= 3:
            n_multi = int(rng.integers(40, 120))
            ps = np.array([p[0] for p in participants])
            lags = np.array([p[1] for p in participants])
            pick = rng.integers(0, len(ps), (n_multi, 3))
            sec = (lags.max() + rng.integers(0, 40 * 60, n_multi).astype(np.int64) // 60) * 60 + rng.integers(0, 60, n_multi)
            s1, s2, s3 = ps[pick[:, 0]], ps[pick[:, 1]], ps[pick[:, 2]]
            s2 = np.where(s2 == s1, -1, s2)
            s3 = np.where((s3 == s1) | (s3 == s2) | (rng.random(n_multi) < 0.5), -1, s3)
            mixm = _mix(0.75, 0.05)
            g.add(sec, s1, g.sample_true(mixm, n_multi), tag=_T_SELLOFF, s2=s2, t2=np.where(s2 >= 0, g.sample_true(mixm, n_multi), -1),
                  s3=s3, t3=np.where(s3 >= 0, g.sample_true(mixm, n_multi), -1))
    # single-name halts / short reports (plateau shape) and upgrades
    for s in range(n):
        for neg_kind in (True, False):
            for _ in range(rng.poisson(0.5 if neg_kind else 0.35)):
                t = _place(g, s, days, 9.6, 15.6, 180, 300)
                if t is None:
                    continue
                rh = base[s] * prof[t]
                rise = int(rng.integers(1, 5))
                shape = _shape_plateau(_logu(rng, 4, 25) * rh, rise, int(rng.integers(15, 45)), float(rng.uniform(20, 60)))
                if neg_kind:
                    g.event(s, "negative-spike", t, shape, _mix(rng.uniform(0.55, 0.85), 0.06), rise=rise, tag=_T_NEWS, news_frac=0.3,
                            note="halt")
                else:
                    g.event(s, "positive-spike", t, shape, _mix(0.05, rng.uniform(0.55, 0.8)), rise=rise, tag=_T_NEWS, news_frac=0.3)
    # options expiry / index rebalance: neutral volume into the Friday close
    for d in days:
        m0 = g.minute_of(d, 15.5)
        if m0 is None or g.clock.weekday[m0] != 4:
            continue
        for s in rng.choice(n, n // 3, replace=False):
            s = int(s)
            if s in thin or not g.reserve(s, m0 - 30, m0 + 60):
                continue
            shape = _shape_ramp(_logu(rng, 2, 5) * base[s] * prof[m0], 15, 10, 10)
            g.event(s, "volume-burst", m0, shape, _mix(float(g.mix[s, m0, 0]), float(g.mix[s, m0, 2]) * 0.8), rise=15)
    # pair trades: long one name, short another
    n_pairs = int(0.012 * g.rate.sum())
    if n_pairs:
        sec = rng.integers(0, g.n_min * 60, n_pairs)
        w = g.rate.sum(axis=1) / g.rate.sum()
        a = rng.choice(n, n_pairs, p=w)
        b = rng.choice(n, n_pairs, p=w)
        ok = a != b
        g.add(sec[ok], a[ok], np.full(ok.sum(), POS, np.int8), tag=_T_PAIR, s2=b[ok], t2=np.full(ok.sum(), NEG, np.int8))
    # a newswire outage: an hour of headlines delivered hours late in one batch; a consumer restart
    span = g.n_min - g.eval_start
    oa = g.eval_start + int(rng.integers(0, max(span - 600, 1)))
    ob = oa + int(rng.integers(40, 91))
    deliver = ob + int(rng.integers(120, 241))
    if deliver < g.n_min:
        g.outages.append((_SRC_NEWS, oa * 60, ob * 60, deliver * 60))
    for d in range(g.eval_start // 1440, g.n_min // 1440):
        ra = (d * 1440 + int(rng.integers(0, 1440))) * 60
        g.redeliveries.append((ra, ra + int(rng.integers(3, 9)) * 60, int(rng.integers(10, 31)) * 60))


# ---- tokens -----------------------------------------------------------------------------------


def _fam_tokens(g: _Gen) -> None:
    rng = g.rng
    n = len(g.symbols)
    words_neg = [i for i, s in enumerate(g.symbols) if s in ("BURN", "DUMP", "REKT")]
    words_pos = [i for i, s in enumerate(g.symbols) if s in ("MOON", "PUMP", "GAIN")]
    order = [i for i in rng.permutation(n) if i not in words_neg + words_pos]
    thin = order[:6]
    g.thin = sorted(int(i) for i in thin)
    base = np.clip(0.2 * rng.random(n) ** (-1 / 1.3), 0.06, 12.0)
    base[thin] = rng.uniform(0.002, 0.008, len(thin))
    c = g.clock
    prof = _knots(c.hour, _TOKEN_KNOTS) * np.where(c.weekday >= 5, 0.8, 1.0)
    g.rate = base[:, None] * prof[None, :] * _day_factor(g, 0.3)
    neg0 = rng.uniform(0.08, 0.2, n)
    pos0 = rng.uniform(0.25, 0.42, n)
    mood = _smooth_walk(rng, g.n_min, 120, 0.1, 0.08, 1) + 0.5 * _smooth_walk(rng, g.n_min, 120, 0.1, 0.1, n)
    _fill_mix(g, neg0[:, None] * np.exp(mood), pos0[:, None] * np.exp(-0.5 * mood))
    g.news_frac, g.syndicate_p = 0.05, 0.4
    g.late_frac, g.hours_late_frac, g.dup_frac = 0.03, 0.005, 0.02
    cmat = np.array([[0.62, 0.28, 0.10], [0.06, 0.80, 0.14], [0.10, 0.22, 0.68]])
    bias = np.exp(rng.normal(0, 0.3, n))
    bias[words_neg] = 1.8
    bias[words_pos] = 0.6
    g.versions = [_ModelVersion("cryptobert-ft2", _confusions(n, cmat, bias), 0.45)]
    _background(g)
    lo, hi = g.eval_start + 60, g.n_min - 180
    n_eval_days = (g.n_min - g.eval_start) / 1440

    def when(s: int, pad: tuple[int, int]) -> int | None:
        for _ in range(20):
            t = int(rng.integers(lo, hi))
            if g.reserve(s, t - pad[0], t + pad[1]):
                return t
        return None

    # liquidation cascades: most tokens within minutes, fast decay; relief bounces later
    n_casc = max(1, int(round(n_eval_days / 2.2)))
    for k in range(n_casc):
        t = int(rng.integers(lo, hi))
        for s in np.argsort(-base * np.exp(rng.normal(0, 0.4, n))):
            s = int(s)
            if rng.random() > (0.5 if s in thin else 0.85):
                continue
            lag = t + int(min(rng.exponential(2.0), 12))
            if not g.reserve(s, lag - 60, lag + 240):
                continue
            rh = base[s] * prof[lag]
            g.event(s, "negative-spike", lag, _shape_exp(_logu(rng, 5, 25) * rh, float(rng.uniform(5, 15)), rise=1),
                    _mix(rng.uniform(0.6, 0.85), 0.05), rise=1, selloff=k + 1, tag=_T_CRYPTO, news_frac=0.03, note="liquidation")
            if rng.random() < 0.3 and s not in thin:
                rb = lag + int(rng.integers(40, 120))
                g.event(s, "relief-bounce", rb, _shape_exp(_logu(rng, 2, 6) * base[s] * prof[min(rb, g.n_min - 1)], 20.0, rise=5),
                        _mix(0.07, 0.7), rise=5, tag=_T_CRYPTO)
    for s in range(n):
        # exploits: long very negative plateaus
        for _ in range(rng.poisson(0.25 * n_eval_days / 6)):
            t = when(s, (180, 420))
            if t is None:
                continue
            shape = _shape_plateau(_logu(rng, 4, 15) * base[s] * prof[t], 5, int(rng.integers(60, 240)), 60.0)
            g.event(s, "negative-spike", t, shape, _mix(rng.uniform(0.75, 0.9), 0.03), rise=5, tag=_T_CRYPTO, news_frac=0.1,
                    note="exploit")
        # pump and dump
        for _ in range(rng.poisson(0.45 * n_eval_days / 6)):
            t = when(s, (180, 360))
            if t is None:
                continue
            m = _logu(rng, 8, 30)
            rh = base[s] * prof[t]
            pump = _shape_plateau(m * rh, 3, int(rng.integers(10, 40)), 10.0)
            p = g.event(s, "pump", t, pump, _mix(0.04, 0.85), rise=3, tag=_T_PUMP, news_frac=0.0)
            d = t + p.minutes + int(rng.integers(0, 31))
            if d + 10 < g.n_min:
                g.event(s, "negative-spike", d, _shape_exp(rng.uniform(0.3, 0.8) * m * rh, float(rng.uniform(10, 30)), rise=2),
                        _mix(rng.uniform(0.55, 0.8), 0.08), rise=2, tag=_T_CRYPTO, news_frac=0.0, note="dump")
        if s in thin:
            continue
        # unlocks: slow negative drift with volume (a real change, usually below the rule)
        for _ in range(rng.poisson(0.2 * n_eval_days / 6)):
            t = when(s, (120, 400))
            if t is None:
                continue
            shape = _shape_ramp(rng.uniform(1, 3) * base[s] * prof[t], 120, 60, 120)
            mx = g.mix[s, t].astype(float) * np.array([rng.uniform(1.4, 2.2), 1.0, 0.8])
            g.event(s, "negative-spike", t, shape, mx / mx.sum(), rise=120, tag=_T_NEWS, news_frac=0.2, note="unlock")
        for _ in range(rng.poisson(0.2 * n_eval_days / 6)):
            t = when(s, (120, 240))
            if t is None:
                continue
            g.event(s, "listing", t, _shape_exp(_logu(rng, 5, 20) * base[s] * prof[t], float(rng.uniform(15, 45)), rise=2),
                    _mix(0.06, 0.7), rise=2, tag=_T_NEWS, news_frac=0.3)
        for _ in range(rng.poisson(0.25 * n_eval_days / 6)):
            t = when(s, (60, 120))
            if t is None:
                continue
            n_posts = int(rng.integers(50, 300))
            dur = int(rng.integers(5, 20))
            st = g.new_stories(int(rng.integers(2, 6)))
            story = st[rng.integers(0, len(st), n_posts)]
            comp = len(g.plans)
            g.add(np.sort(t * 60 + rng.integers(0, dur * 60, n_posts)), s, g.sample_true(_mix(0.05, 0.25), n_posts), comp=comp,
                  tag=_T_SPAM, story=story)
            g.plans.append(_Plan(s, "airdrop-spam", t, dur))


_FAMILY_SETUP: dict[str, tuple[datetime, int, int, Callable[[_Gen], None], tuple[str, ...], str]] = {
    # start (minute 0, UTC), default days, tickers, builder, holidays (local dates), id prefix
    # (equity families start at New York midnight, so stream days are local days)
    "earnings": (datetime(2025, 1, 14, 5, tzinfo=UTC), 9, 52, _fam_earnings, ("2025-01-20",), "earn"),
    "crowd": (datetime(2024, 3, 5, 5, tzinfo=UTC), 9, 50, _fam_crowd, (), "crowd"),
    "drift": (datetime(2024, 7, 30, 4, tzinfo=UTC), 9, 40, _fam_drift, (), "drift"),
    "tokens": (datetime(2024, 11, 6, tzinfo=UTC), 8, 30, _fam_tokens, (), "tok"),
}


def _offset_fn(family: str, start: datetime) -> Callable[[np.ndarray], np.ndarray]:
    if family == "tokens":
        return lambda t: np.zeros(len(t), dtype=np.int64)
    if family == "crowd":
        dst = int((_DST_2024 - start).total_seconds() // 60)
        return lambda t: np.where(t < dst, 5, 4).astype(np.int64)
    if family == "earnings":
        return lambda t: np.full(len(t), 5, dtype=np.int64)
    return lambda t: np.full(len(t), 4, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# finishing: syndication, delivery, labels, duplicates, the rule, the lines


@dataclass
class _Diag:
    organic: int = 0
    by_note: dict[str, int] = field(default_factory=dict)
    qualifying_by_note: dict[str, int] = field(default_factory=dict)
    decoy_conflicts: list[tuple[str, str, int]] = field(default_factory=list)


def _finish(g: _Gen) -> tuple[OutsideStream, _Diag]:
    rng = g.rng
    a = {k: np.concatenate(v) if v else np.zeros(0, _DTYPES[k]) for k, v in g.chunks.items()}
    n0 = len(a["sec"])
    # syndication of headlines: copies by other outlets, one story
    news = np.nonzero((a["src"] == _SRC_NEWS) & (a["story"] < 0) & (rng.random(n0) < g.syndicate_p))[0]
    a["story"][news] = g.new_stories(len(news))
    n_copies = 1 + rng.poisson(1.5, len(news))
    orig = np.repeat(news, n_copies)
    copies = {k: v[orig].copy() for k, v in a.items()}
    copies["sec"] = copies["sec"] + rng.integers(20, 900, len(orig))
    copies["src"] = rng.choice(_OUTLETS, len(orig)).astype(np.int8)
    label_of = np.concatenate([np.arange(n0), orig])
    a = {k: np.concatenate([a[k], copies[k]]) for k in a}
    keep = (a["sec"] >= 0) & (a["sec"] < g.n_min * 60)
    a = {k: v[keep] for k, v in a.items()}
    label_of = label_of[keep]
    remap = np.full(len(keep), -1, np.int64)
    remap[np.nonzero(keep)[0]] = np.arange(int(keep.sum()))
    label_of = remap[label_of]
    # a copy whose original fell off the end of the stream labels itself
    label_of = np.where(label_of < 0, np.arange(len(label_of)), label_of)
    n = len(a["sec"])
    # delivery
    pub = a["sec"]
    delay = np.ceil(np.exp(rng.normal(math.log(3.0), 0.8, n))).astype(np.int64)
    u = rng.random(n)
    delay = np.where(u < g.late_frac, rng.integers(60, 1800, n), delay)
    delay = np.where(u > 1 - g.hours_late_frac, rng.integers(3600, 6 * 3600, n), delay)
    arr = pub + delay
    for src, pa, pb, deliver in g.outages:
        hit = (a["src"] == src) & (pub >= pa) & (pub < pb)
        arr = np.where(hit, np.maximum(arr, deliver + rng.integers(0, 180, n)), arr)
        # where the backlog is large, a ticker sees a burst of (old) arrivals: a decoy for any
        # detector that counts posts by arrival rather than by publication
        per_sym = np.bincount(a["sym"][hit], minlength=len(g.symbols))
        for s in np.nonzero(per_sym >= 8)[0]:
            g.plans.append(_Plan(int(s), "late-batch", deliver // 60, 5, note="late-batch"))
    # labels (a syndicated copy carries its original's text, hence its labels)
    vidx = g.version_of(arr, rng) if g.version_of else np.zeros(n, np.int64)
    vidx = vidx[label_of]
    preds: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for slot, (sk, tk) in enumerate((("sym", "true"), ("s2", "t2"), ("s3", "t3"))):
        s = a[sk]
        has = s >= 0
        pred = np.full(n, -1, np.int8)
        pr = np.zeros((n, 3))
        idx = np.nonzero(has)[0]
        if len(idx):
            conf = np.empty((len(idx), 3, 3))
            cw = np.empty(len(idx))
            for vi, ver in enumerate(g.versions):
                m = vidx[idx] == vi
                conf[m] = ver.confusion[s[idx[m]]]
                cw[m] = ver.confident_wrong
            t = a[tk][idx].astype(np.int64)
            conf_rows = conf[np.arange(len(idx)), t]
            pred[idx], pr[idx] = _label(rng, t, conf_rows, cw)
        pred = pred[label_of]
        pr = pr[label_of]
        preds.append(pred)
        probs.append(pr)
    emo_u = rng.random(n)
    id_of = np.arange(n)
    # duplicate deliveries: random ones, and consumer restarts replaying a block of arrivals
    dup = np.nonzero(rng.random(n) < g.dup_frac)[0]
    dup_arr = arr[dup] + rng.integers(1, 900, len(dup))
    for ra, rb, replay in g.redeliveries:
        blk = np.nonzero((arr >= ra) & (arr < rb))[0]
        dup = np.concatenate([dup, blk])
        dup_arr = np.concatenate([dup_arr, arr[blk] + replay])
    rows = np.concatenate([np.arange(n), dup])
    arr_all = np.concatenate([arr, dup_arr])
    order = np.lexsort((rows, pub[rows], arr_all))
    rows, arr_all = rows[order], arr_all[order]

    # --- the rule -----------------------------------------------------------------------------
    units = _story_units(rows, arr_all, id_of, a["story"], pub, [a["sym"], a["s2"], a["s3"]], preds, len(g.symbols))
    diag = _Diag()
    for p in g.plans:
        p.qualifies = p.kind == "negative-spike" and _rule(units, p.sym, p.onset, p.minutes)
        # A decoy that meets the rule at its onset is, on labels, a negative spike: by definition it
        # cannot be a decoy, so it is listed as an organic flurry (counts neither way).
        if p.kind != "negative-spike" and p.onset >= g.eval_start and _rule(units, p.sym, p.onset, max(p.minutes, RULE_WINDOW_MIN)):
            diag.decoy_conflicts.append((g.symbols[p.sym], p.kind, p.onset))
            p.kind, p.note = "organic-flurry", f"decoy {p.kind}"
    _scan_organic(g, units, diag)

    for p in g.plans:
        if p.kind == "negative-spike" and g.eval_start <= p.onset < g.n_min:
            diag.by_note[p.note] = diag.by_note.get(p.note, 0) + 1
            diag.qualifying_by_note[p.note] = diag.qualifying_by_note.get(p.note, 0) + int(p.qualifies)

    # --- lines ------------------------------------------------------------------------------
    base = np.datetime64(g.start.replace(tzinfo=None), "s")
    pub_s = np.datetime_as_string(base + pub, unit="s")
    arr_s = np.datetime_as_string(base + arr_all, unit="s")
    lines = _lines(g, rows, arr_s, pub_s, a, preds, probs, vidx, emo_u[label_of], label_of)
    events = [
        OutsideEvent(g.symbols[p.sym], p.kind, int(p.onset), int(p.minutes), bool(p.qualifies), p.selloff)
        for p in sorted(g.plans, key=lambda p: (p.onset, p.sym, p.kind))
        if p.onset >= g.eval_start and p.onset < g.n_min
    ]
    stream = OutsideStream(
        family=g.family, seed=g.seed, start=g.start, posts=lines, events=events, symbols=list(g.symbols),
        thin=[g.symbols[i] for i in g.thin], evaluation_start=g.eval_start,
        evaluated_symbol_days=len(g.symbols) * (g.n_min - g.eval_start) / 1440,
    )
    return stream, diag


def _story_units(rows: np.ndarray, arr: np.ndarray, id_of: np.ndarray, story: np.ndarray, pub: np.ndarray,
                 syms: list[np.ndarray], preds: list[np.ndarray], n_sym: int) -> _Units:
    """Arrival-ordered rows -> per ticker story units (first arrival of an id, then of a story)."""
    ids = id_of[rows]
    keep = np.zeros(len(rows), bool)
    keep[np.unique(ids, return_index=True)[1]] = True
    st = story[rows]
    cand = np.nonzero(keep & (st >= 0))[0]
    first = np.zeros(len(cand), bool)
    first[np.unique(st[cand], return_index=True)[1]] = True
    keep[cand[~first]] = False
    kr, ka = rows[keep], arr[keep]
    s_all, p_all, a_all, n_all = [], [], [], []
    for s, pr in zip(syms, preds):
        has = s[kr] >= 0
        s_all.append(s[kr][has])
        p_all.append(pub[kr][has])
        a_all.append(ka[has])
        n_all.append(pr[kr][has] == NEG)
    S, P, A, N = (np.concatenate(x) for x in (s_all, p_all, a_all, n_all))
    o = np.lexsort((P, S))
    S, P, A, N = S[o], P[o], A[o], N[o]
    cuts = np.searchsorted(S, np.arange(n_sym + 1))
    return _Units(
        pub=[P[cuts[i]:cuts[i + 1]] for i in range(n_sym)],
        arr=[A[cuts[i]:cuts[i + 1]] for i in range(n_sym)],
        neg=[N[cuts[i]:cuts[i + 1]] for i in range(n_sym)],
    )


def _scan_organic(g: _Gen, units: _Units, diag: _Diag) -> None:
    """Windows meeting the rule outside every planned negative spike become (qualifying) events."""
    n_min = g.n_min
    planned = [p for p in g.plans if p.kind in ("negative-spike", "organic-flurry")]
    for s in range(len(g.symbols)):
        pub, arr, neg = units.pub[s], units.arr[s], units.neg[s]
        if len(pub) < RULE_MIN_NEGATIVES:
            continue
        timely = arr - pub <= RULE_ARRIVAL_GRACE_MIN * 60
        m = pub // 60
        tot = np.bincount(m[timely], minlength=n_min)[:n_min]
        ng = np.bincount(m[timely & neg], minlength=n_min)[:n_min]
        ct, cn = np.concatenate([[0], np.cumsum(tot)]), np.concatenate([[0], np.cumsum(ng)])
        o = np.arange(g.eval_start, n_min - RULE_WINDOW_MIN)
        s10 = ct[o + 10] - ct[o]
        n10 = cn[o + 10] - cn[o]
        bl = np.clip(o - 120, 0, None)
        nb = ct[o - 5] - ct[bl]
        negb = cn[o - 5] - cn[bl]
        loose = (n10 >= RULE_MIN_NEGATIVES) & ((nb < RULE_BASELINE_MIN_UNITS) | (n10 * (nb + 1) * 1.3 >= (2 * negb + 1) * s10))
        cands = o[loose]
        spans = [(p.onset - 30, p.onset + max(p.minutes, RULE_WINDOW_MIN) + 30) for p in planned if p.sym == s]
        hits = [int(c) for c in cands if not any(x <= c < y for x, y in spans) and _rule(units, s, int(c), RULE_WINDOW_MIN)]
        i = 0
        while i < len(hits):
            j = i
            while j + 1 < len(hits) and hits[j + 1] - hits[j] <= 2:
                j += 1
            g.plans.append(_Plan(s, "organic-flurry", hits[i], hits[j] - hits[i] + RULE_WINDOW_MIN, None, False, "organic"))
            diag.organic += 1
            i = j + 1


_FMT4 = [f"{k / 10000:.4f}" for k in range(10001)]
_FMT4_SIGNED = [f"{k / 10000:.4f}" for k in range(-10000, 10001)]


def _lines(g: _Gen, rows: np.ndarray, arr_s: np.ndarray, pub_s: np.ndarray, a: dict[str, np.ndarray],
           preds: list[np.ndarray], probs: list[np.ndarray], vidx: np.ndarray, emo_u: np.ndarray,
           text_key: np.ndarray) -> list[str]:
    """One JSON line per arrival; a post's line is built once (a duplicate differs only in scored_at)."""
    syms = g.symbols
    n = len(a["sym"])
    vnames = [v.name for v in g.versions]
    # emotions from the predicted polarity
    emotion = np.empty(n, dtype=object)
    for lab, opts in enumerate(_EMO):
        m = preds[0] == lab
        cum = np.cumsum([o[1] for o in opts])
        pick = np.minimum(np.searchsorted(cum, emo_u[m]), len(opts) - 1)
        emotion[m] = np.array([o[0] for o in opts], dtype=object)[pick]
    emotion_l = emotion.tolist()
    # per slot: the target's JSON (None where the post has no such target); the first slot's
    # polarity fields are also the post's own
    pol_json: list[list[str]] = []
    slot_json: list[dict[int, str] | list[str]] = []
    for slot, key in enumerate(("sym", "s2", "s3")):
        idx = np.nonzero(a[key] >= 0)[0]
        sl = a[key][idx].tolist()
        pl = preds[slot][idx].tolist()
        k = np.rint(probs[slot][idx] * 10000).astype(np.int64).clip(0, 10000)
        kn, ku, kp = k[:, 0].tolist(), k[:, 1].tolist(), k[:, 2].tolist()
        pols = [
            f'"polarity":"{_LABELS[p_]}","polarity_score":{_FMT4_SIGNED[c - a_ + 10000]},'
            f'"polarity_probs":{{"negative":{_FMT4[a_]},"neutral":{_FMT4[b_]},"positive":{_FMT4[c]}}}'
            for p_, a_, b_, c in zip(pl, kn, ku, kp)
        ]
        tj = [f'{{"symbol":"{syms[x]}",{pj},"basis":"mention"}}' for x, pj in zip(sl, pols)]
        if slot == 0:  # every post has a first target: these lists line up with the rows
            pol_json.append(pols)
            slot_json.append(tj)
        else:
            slot_json.append(dict(zip(idx.tolist(), tj)))
    first_pol, first_t = pol_json[0], slot_json[0]
    extra2, extra3 = slot_json[1], slot_json[2]
    sym, s2, s3 = a["sym"].tolist(), a["s2"].tolist(), a["s3"].tolist()
    t1 = a["true"].tolist()
    tag, src, story = a["tag"].tolist(), a["src"].tolist(), a["story"].tolist()
    pub_l, arr_l = pub_s.tolist(), arr_s.tolist()
    vid = vidx.tolist()
    text_pick = g.rng.integers(0, 1 << 30, n)[text_key].tolist()
    prefix = f"{g.prefix}:{g.seed}:"
    heads: list[str] = []
    tails: list[str] = []
    for r in range(n):
        tg = tag[r]
        opts = _TEXTS[tg][t1[r]]
        sid = story[r]
        pick = (sid if tg in (_T_BRIGADE, _T_SPAM) and sid >= 0 else text_pick[r]) % len(opts)
        name = syms[sym[r]]
        text = opts[pick].format(s="$" + name)
        if s2[r] < 0:
            names = f'"{name}"'
            targets = first_t[r]
        else:
            more = [syms[x] for x in (s2[r], s3[r]) if x >= 0]
            text += " " + " ".join("$" + x for x in more)
            names = ",".join(f'"{x}"' for x in [name, *more])
            targets = ",".join(t for t in (first_t[r], extra2.get(r), extra3.get(r)) if t is not None)  # type: ignore[union-attr]
        story_part = f',"story_id":"{g.prefix}-story-{sid}"' if sid >= 0 else ""
        heads.append(f'{{"id":"{prefix}{r}","source":"{_SOURCES[src[r]]}","published_at":"{pub_l[r]}Z","scored_at":"')
        tails.append(
            f'Z","kind":"{"headline" if tg == _T_NEWS else "post"}","symbols":[{names}],{first_pol[r]},'
            f'"emotion":"{emotion_l[r]}","model_version":"{vnames[vid[r]]}","text":"{text}"{story_part},"targets":[{targets}]}}'
        )
    return [heads[r] + t + tails[r] for r, t in zip(rows.tolist(), arr_l)]


# ----------------------------------------------------------------------------------------------
# public entry points


def _generate(family: str, seed: int, days: int | None = None) -> tuple[OutsideStream, _Diag]:
    if family not in _FAMILY_SETUP:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(OUTSIDE_FAMILIES)}")
    start, default_days, n_sym, build, holidays, prefix = _FAMILY_SETUP[family]
    days = default_days if days is None else int(days)
    if days < 3:
        raise ValueError("days must be at least 3 (two days of warm-up and one evaluated)")
    reserved = ("BURN", "MOON") if family == "tokens" else ()
    g = _new_gen(family, seed, start, days, n_sym, _offset_fn(family, start), holidays, prefix, reserved)
    build(g)
    return _finish(g)


def generate(family: str, seed: int, days: int | None = None) -> OutsideStream:
    """The stream of `family` for `seed` (deterministic); `days` shortens (or lengthens) it."""
    return _generate(family, seed, days)[0]


if __name__ == "__main__":
    from collections import Counter

    for fam in OUTSIDE_FAMILIES:
        t0 = time.perf_counter()
        st, dg = _generate(fam, 1)
        took = time.perf_counter() - t0
        kinds = Counter(e.kind for e in st.events)
        neg = [e for e in st.events if e.kind == "negative-spike"]
        q = sum(e.qualifies for e in neg)
        print(
            f"{fam}: {len(st.posts):,} posts, {len(st.symbols)} tickers ({len(st.thin)} thin), "
            f"{st.evaluated_symbol_days:.0f} evaluated symbol-days, {q} qualifying of {len(neg)} negative spikes "
            f"({sum(e.qualifies and e.selloff is not None for e in neg)} in sell-offs), generated in {took:.1f} s"
        )
        print("    events by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        print("    negative spikes by cause (qualifying/all): " + ", ".join(
            f"{k} {dg.qualifying_by_note[k]}/{v}" for k, v in sorted(dg.by_note.items())))
        print(f"    organic flurries (label-level spikes nobody planted, count neither way): {dg.organic}")
        if dg.decoy_conflicts:
            print(f"    decoys that met the rule at onset, listed as organic-flurry instead: {dg.decoy_conflicts}")
