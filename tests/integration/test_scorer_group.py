"""Several `moodwire score` processes in one consumer group on the real broker (tansu).

Three scorers share a six-partition topic while posts flow; one is SIGKILLed mid-stream and a
fourth joins later. Every post is stored and counted exactly once, the lag drains on every
partition, and each rebalance is in the scorers' logs and on their /metrics.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from moodwire.bus import KafkaBus
from moodwire.config import Settings
from moodwire.store import ServerStore
from tests import services
from tests.integration.fault_helpers import (
    Stream,
    assert_counted_once,
    committed_offsets,
    distinct_ids,
    scorer_env,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6


class ScorerProcess:
    """One `moodwire score` process with its own /metrics port and log file."""

    def __init__(self, settings: Settings, name: str, workdir: Path) -> None:
        self.name = name
        self.metrics_port = services.free_port()
        self.log_file = workdir / f"{name}.log"
        env = scorer_env(settings, metrics_port=self.metrics_port, log_level="INFO")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moodwire.cli", "score"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_file.open("wb"),
        )

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of its /metrics ({} while it is not serving yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode("utf-8")
        except OSError:
            return {}
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def assigned(self) -> int:
        return int(self.metric("moodwire_consumer_assigned_partitions"))

    def lag(self) -> dict[int, float]:
        """Its consumer lag gauge per partition it owns."""
        return {
            int(dict(labels)["partition"]): value
            for (name, labels), value in self.samples().items()
            if name == "moodwire_consumer_lag_messages"
        }

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def owns_every_partition(scorers: list[ScorerProcess]) -> bool:
    """The group settled: the live scorers each own some partitions, all of them together."""
    counts = [s.assigned() for s in scorers]
    return all(counts) and sum(counts) == PARTITIONS


def test_three_scorers_one_killed_one_added_count_every_post_once(server_settings: Settings, tmp_path: Path) -> None:
    settings = server_settings.model_copy(update={"topic_partitions": PARTITIONS, "batch_max_size": 32, "batch_max_wait_ms": 100})
    store = ServerStore(settings)
    store.migrate()
    KafkaBus(settings).ensure_topics([settings.posts_topic, settings.dead_letter_topic])
    # Keyed by id, so every partition gets posts.
    stream = Stream(settings, rate=40, key=lambda post: post["id"].encode()).start()
    scorers = [ScorerProcess(settings, name, tmp_path) for name in ("a", "b", "c")]
    everyone = list(scorers)
    try:
        wait_for(lambda: owns_every_partition(scorers), 120, "three scorers to share the six partitions")
        victim = scorers[1]
        wait_for(lambda: victim.metric("moodwire_posts_scored_total", model_version=_model_version(victim)) > 0, 60, "b to store posts")
        stored_before_kill = distinct_ids(store)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=30)
        survivors = [scorers[0], scorers[2]]
        wait_for(lambda: owns_every_partition(survivors), 120, "a and c to take over b's partitions")
        rebalances_after_kill = {s.name: s.metric("moodwire_consumer_rebalances_total", event="assigned") for s in survivors}

        late = ScorerProcess(settings, "d", tmp_path)
        everyone.append(late)
        live = [*survivors, late]
        wait_for(lambda: owns_every_partition(live), 120, "d to get partitions of its own")
        wait_for(lambda: late.metric("moodwire_posts_scored_total", model_version=_model_version(late)) > 0, 60, "d to store posts")
        posts = stream.stop()

        wait_for(lambda: distinct_ids(store) >= len(posts), 120, f"all {len(posts)} posts to be stored")
        # The group's committed offsets reach the end of every partition: one offset per message sent.
        wait_for(lambda: sum(committed_offsets(settings).values()) == len(posts), 60, "the offsets to be committed")
        wait_for(
            lambda: all(s.assigned() for s in live)
            and sorted(p for s in live for p, lag in s.lag().items() if lag == 0) == list(range(PARTITIONS)),
            60,
            "every partition's lag to read 0 on its owner",
        )
        assert stored_before_kill < len(posts)
        for scorer in live:
            rebalances = scorer.metric("moodwire_consumer_rebalances_total", event="assigned")
            assert rebalances >= 1, scorer.name
            assert f"group {settings.consumer_group} rebalance: partitions assigned" in scorer.log(), scorer.name
        for scorer in survivors:  # each took part in the rebalance that let d in
            assert scorer.metric("moodwire_consumer_rebalances_total", event="assigned") > rebalances_after_kill[scorer.name]
            assert scorer.metric("moodwire_consumer_rebalances_total", event="revoked") >= 2
        codes = [services.stop_process(s.process, signal.SIGTERM, timeout_s=60) for s in live]
        assert codes == [0, 0, 0], [s.log()[-2000:] for s in live]
    finally:
        stream.stop()
        for scorer in everyone:
            if scorer.alive():
                scorer.process.kill()
                scorer.process.wait()

    counts = assert_counted_once(store, posts)
    assert counts["posts"] == len(posts)
    store.close()


def _model_version(scorer: ScorerProcess) -> str:
    """The model_version label of its scored-posts counter (from its execution provider info)."""
    for (name, labels), _value in scorer.samples().items():
        if name == "moodwire_model_execution_provider_info":
            return dict(labels)["model_version"]
    return ""
