#!/usr/bin/env python3
"""Build the bundled sample stream from the hand-written posts in data/sample/texts.jsonl.

`moodwire run` with no inputs replays ingest/data/sample_stream.jsonl as if it were live (the
timestamps are shifted so the last post lands at "now"; the spacing is kept). This script only
decides *when* each hand-written post is published and gives it an id (and rss items a link);
the texts themselves are taken as written.

Timeline (6 hours from 2026-11-02T13:00:00Z):
* background   spread over all 6 hours with a mild intraday U-shape (busier first and last hour),
               placed on quantiles of that shape with random jitter;
* baseline:BA  ordinary Boeing chatter, evenly at random over the first 5 hours (one random
               moment in each of n equal slots, items in shuffled order);
* spike:BA     the negative burst, packed into 12 minutes from 5h10m, densest at the start and
               thinning out; the items keep their file order, so the story unfolds as written
               (first reports, grounding, stock drop, downgrades, cancellations).

Deterministic: the same input and seed give the same output byte for byte. Standard library only.

    python3 scripts/build_sample.py [--seed N] [--input PATH] [--output PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT / "data" / "sample" / "texts.jsonl"
DEFAULT_OUTPUT = ROOT / "ingest" / "data" / "sample_stream.jsonl"
DEFAULT_SEED = 20261102

START = datetime(2026, 11, 2, 13, 0, 0, tzinfo=UTC)
DURATION_S = 6 * 3600
BASELINE_END_S = 5 * 3600
SPIKE_START_S = 5 * 3600 + 10 * 60
SPIKE_LENGTH_S = 12 * 60

# Relative posting rate of background items per hour of the window: a mild U-shape.
BACKGROUND_HOUR_WEIGHTS = (1.35, 1.0, 0.9, 0.9, 1.0, 1.35)
# Spike shape: rate falls linearly from the start of the burst to the end, plus a floor so the
# last minutes still see a trickle. Relative to the peak: 1 + floor at t=0, floor at the end.
SPIKE_FLOOR = 0.15

GROUPS = ("background", "baseline:BA", "spike:BA")
SOURCES = ("rss", "reddit", "stocktwits", "mastodon")
KINDS = ("post", "headline")


def load_items(path: Path) -> list[dict]:
    items: list[dict] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                sys.exit(f"{path}:{number}: not JSON: {exc}")
            problem = _check_item(item)
            if problem:
                sys.exit(f"{path}:{number}: {problem}")
            items.append(item)
    return items


def _check_item(item: object) -> str | None:
    if not isinstance(item, dict):
        return "expected a JSON object"
    if not isinstance(item.get("text"), str) or not item["text"].strip():
        return "missing text"
    if item.get("group") not in GROUPS:
        return f"group must be one of {GROUPS}"
    if item.get("source") not in SOURCES:
        return f"source must be one of {SOURCES}"
    if item.get("kind") not in KINDS:
        return f"kind must be one of {KINDS}"
    if item["kind"] == "headline" and item["source"] != "rss":
        return "headlines come from rss"
    if "author" in item and not (isinstance(item["author"], str) and item["author"].strip()):
        return "author, when given, must be a non-empty string"
    symbols = item.get("symbols")
    if symbols is not None and not (
        isinstance(symbols, list) and symbols and all(isinstance(s, str) and s for s in symbols)
    ):
        return "symbols, when given, must be a non-empty list of tickers"
    return None


def inverse_cdf(density, lo: float, hi: float, u: float, steps: int = 60) -> float:
    """The point x in [lo, hi] where the integral of density from lo reaches u (0..1) of the total.

    `density` is given as its cumulative function (x -> mass from lo to x); found by bisection.
    """
    total = density(hi)
    target = u * total
    a, b = lo, hi
    for _ in range(steps):
        mid = (a + b) / 2
        if density(mid) < target:
            a = mid
        else:
            b = mid
    return (a + b) / 2


def background_mass(x: float) -> float:
    """Cumulative background rate from the start of the window to x seconds."""
    hour = 3600.0
    mass = 0.0
    for i, weight in enumerate(BACKGROUND_HOUR_WEIGHTS):
        lo = i * hour
        if x <= lo:
            break
        mass += weight * (min(x, lo + hour) - lo)
    return mass


def spike_mass(x: float) -> float:
    """Cumulative spike rate from the start of the burst to x seconds (linear decay plus floor)."""
    w = float(SPIKE_LENGTH_S)
    x = min(max(x, 0.0), w)
    return x - x * x / (2 * w) + SPIKE_FLOOR * x


def place_background(n: int, rng: random.Random) -> list[float]:
    """n moments on the quantiles of the intraday shape, each jittered within its own quantile."""
    times = []
    for i in range(n):
        u = (i + rng.random()) / n
        times.append(inverse_cdf(background_mass, 0.0, DURATION_S, u))
    return times


def place_baseline(n: int, rng: random.Random) -> list[float]:
    slot = BASELINE_END_S / n
    return [i * slot + rng.random() * slot for i in range(n)]


def place_spike(n: int, rng: random.Random) -> list[float]:
    times = []
    for i in range(n):
        u = (i + 0.15 + 0.7 * rng.random()) / n  # jittered, but stays inside its own quantile
        times.append(SPIKE_START_S + inverse_cdf(spike_mass, 0.0, SPIKE_LENGTH_S, u))
    return times


def slugify(text: str, max_words: int = 9) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))
    if words and words[0] == "breaking":
        words = words[1:]
    return "-".join(words[:max_words]) or "story"


def article_url(item: dict, stamp: datetime, rng: random.Random) -> str:
    section = "markets"
    if item.get("symbols"):
        section = "aerospace" if "BA" in item["symbols"] else "companies"
    short = hashlib.sha1(item["text"].encode("utf-8")).hexdigest()[:4] + f"{rng.getrandbits(16):04x}"
    return f"https://news.example/{section}/{stamp:%Y/%m/%d}/{slugify(item['text'])}-{short}"


def rfc3339(seconds: int) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(items: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    by_group: dict[str, list[tuple[int, dict]]] = {g: [] for g in GROUPS}
    for index, item in enumerate(items):
        by_group[item["group"]].append((index, item))

    placed: list[tuple[int, int, int, dict]] = []  # (seconds, group rank, input index, item)

    background = by_group["background"][:]
    rng.shuffle(background)
    for (index, item), t in zip(background, place_background(len(background), rng)):
        placed.append((int(t), 0, index, item))

    baseline = by_group["baseline:BA"][:]
    rng.shuffle(baseline)
    for (index, item), t in zip(baseline, place_baseline(len(baseline), rng)):
        placed.append((int(t), 1, index, item))

    spike = by_group["spike:BA"]  # file order: the story unfolds as written
    for (index, item), t in zip(spike, place_spike(len(spike), rng)):
        placed.append((int(t), 2, index, item))

    placed.sort(key=lambda p: (p[0], p[1], p[2]))
    width = max(4, len(str(len(placed))))
    posts = []
    for number, (seconds, _, _, item) in enumerate(placed, 1):
        post: dict = {
            "id": f"sample:{number:0{width}d}",
            "source": item["source"],
            "text": item["text"].strip(),
            "published_at": rfc3339(seconds),
            "kind": item["kind"],
        }
        if item.get("author"):
            post["author"] = item["author"]
        if item["source"] == "rss":
            post["url"] = article_url(item, START + timedelta(seconds=seconds), rng)
        if item.get("symbols"):
            post["symbols"] = list(item["symbols"])
        posts.append((item["group"], post))
    return posts


def summarize(posts: list[tuple[str, dict]], output: Path) -> None:
    groups = Counter(group for group, _ in posts)
    print(f"wrote {len(posts)} posts to {output}")
    for group in GROUPS:
        print(f"  {group:<12} {groups[group]:>4}")
    print("per hour (all / background / baseline:BA / spike:BA):")
    hours: dict[int, Counter] = {}
    for group, post in posts:
        stamp = datetime.fromisoformat(post["published_at"].replace("Z", "+00:00"))
        hour = int((stamp - START).total_seconds() // 3600)
        hours.setdefault(hour, Counter())[group] += 1
    for hour in sorted(hours):
        c = hours[hour]
        label = (START + timedelta(hours=hour)).strftime("%H:%M")
        print(
            f"  {label}Z  {sum(c.values()):>4} / {c['background']:>4} / {c['baseline:BA']:>4} / {c['spike:BA']:>4}"
        )
    spike = [p["published_at"] for g, p in posts if g == "spike:BA"]
    if spike:
        print(
            f"spike window: {rfc3339(SPIKE_START_S)} .. {rfc3339(SPIKE_START_S + SPIKE_LENGTH_S)} "
            f"(first spike post {min(spike)}, last {max(spike)})"
        )
        per_minute = Counter(s[:16] for s in spike)
        print("  spike posts per minute: " + " ".join(str(per_minute[m]) for m in sorted(per_minute)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    items = load_items(args.input)
    texts = Counter(" ".join(item["text"].lower().split()) for item in items)
    repeated = [t for t, n in texts.items() if n > 1]
    if repeated:
        sys.exit(f"{args.input}: repeated texts (ingest would drop them as duplicates): {repeated[:3]}")

    posts = build(items, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8", newline="\n") as handle:
        for _, post in posts:
            handle.write(json.dumps(post, ensure_ascii=False) + "\n")
    summarize(posts, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
