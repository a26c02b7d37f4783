"""The embedded bus: a durable log with Kafka's at-least-once contract."""

from __future__ import annotations

from pathlib import Path

from moodwire.bus import LocalBus, next_offsets


def test_uncommitted_messages_are_redelivered_after_a_restart(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    producer = bus.producer()
    for i in range(10):
        producer.send("posts", f"m{i}".encode(), key=b"k", headers=[("moodwire-reason", b"why")])
    producer.flush()
    consumer = bus.consumer("g", ["posts"])
    first = consumer.poll(4, timeout_s=0.1)
    consumer.commit(next_offsets(first))
    consumer.poll(4, timeout_s=0.1)  # read but never committed: a crash here
    bus.close()

    reopened = LocalBus(tmp_path)
    again = reopened.consumer("g", ["posts"]).poll(100, timeout_s=0.1)
    assert [m.value for m in again] == [f"m{i}".encode() for i in range(4, 10)]
    assert again[0].headers == (("moodwire-reason", b"why"),) and again[0].key == b"k"


def test_a_torn_final_write_is_dropped_not_misread(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    producer = bus.producer()
    producer.send("posts", b"complete")
    producer.send("posts", b"torn-by-a-crash")
    producer.flush()
    bus.close()
    log_file = tmp_path / "posts.log"
    log_file.write_bytes(log_file.read_bytes()[:-5])

    reopened = LocalBus(tmp_path)
    assert [m.value for m in reopened.consumer("g", ["posts"]).poll(10, timeout_s=0.1)] == [b"complete"]
    reopened.producer().send("posts", b"next")
    assert [m.value for m in reopened.consumer("h", ["posts"]).poll(10, timeout_s=0.1)] == [b"complete", b"next"]
