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


def test_committed_records_are_compacted_and_offsets_keep_counting(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path, compact_after=10)
    producer = bus.producer()
    for i in range(30):
        producer.send("posts", f"m{i}".encode(), headers=[("n", str(i).encode())])
    producer.flush()
    fast, slow = bus.consumer("fast", ["posts"]), bus.consumer("slow", ["posts"])
    fast.commit(next_offsets(fast.poll(25, timeout_s=0.1)))
    first_slow = slow.poll(5, timeout_s=0.1)
    slow.commit(next_offsets(first_slow))
    # The slowest group has committed only 5 records: nothing may be dropped yet.
    assert (tmp_path / "posts.log").read_bytes()[:5] != b"MWLOG"
    slow.commit(next_offsets(slow.poll(15, timeout_s=0.1)))  # both groups now past offset 20
    size_after = (tmp_path / "posts.log").stat().st_size
    assert bus.size("posts") == 30

    producer.send("posts", b"m30")
    producer.flush()
    rest = fast.poll(100, timeout_s=0.1)
    assert [(m.offset, m.value) for m in rest] == [(i, f"m{i}".encode()) for i in range(25, 31)]
    assert rest[0].headers == (("n", b"25"),)
    bus.close()

    reopened = LocalBus(tmp_path, compact_after=10)
    assert reopened.size("posts") == 31
    again = reopened.consumer("slow", ["posts"]).poll(100, timeout_s=0.1)
    assert [(m.offset, m.value) for m in again] == [(i, f"m{i}".encode()) for i in range(20, 31)]
    # A group that never committed starts at the oldest record kept.
    newcomer = reopened.consumer("new", ["posts"]).poll(100, timeout_s=0.1)
    assert newcomer[0].offset == 20 and len(newcomer) == 11
    assert size_after < 30 * 20


_CRASH_DURING_COMPACTION = """
import os, signal, sys
from pathlib import Path
from moodwire import bus as bus_module
from moodwire.bus import LocalBus

directory = Path(sys.argv[1])
real_replace = os.replace

def die_before_the_rename(src, dst):
    # The compacted copy is written and fsynced; the process dies before it replaces the log.
    if str(src).endswith(".compacting"):
        assert Path(src).stat().st_size > 0
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

bus_module.os.replace = die_before_the_rename
bus = LocalBus(directory, compact_after=10)
producer = bus.producer()
for i in range(30):
    producer.send("posts", f"m{i}".encode())
producer.flush()
consumer = bus.consumer("g", ["posts"])
consumer.poll(100, timeout_s=0.1)
consumer.commit({("posts", 0): 25})  # 25 committed records > 10: this commit compacts
print("compaction did not run", flush=True)
"""


def test_a_crash_during_compaction_leaves_the_old_log_intact(tmp_path: Path) -> None:
    """A process killed in the middle of a real compaction (after writing the replacement, before
    renaming it over the log) loses nothing: the reopened log holds every record, offsets and the
    group's commit as they were, and the next compaction succeeds."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _CRASH_DURING_COMPACTION, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, f"the child was not killed mid-compaction: {done.stdout}{done.stderr}"
    assert (tmp_path / "posts.compacting").exists(), "the crash should leave the half-done replacement behind"
    reopened = LocalBus(tmp_path, compact_after=10)
    everything = reopened.consumer("fresh", ["posts"]).poll(100, timeout_s=0.1)
    assert [(m.offset, m.value) for m in everything] == [(i, f"m{i}".encode()) for i in range(30)]
    assert reopened.committed("g", "posts") == 25
    # The next commit compacts for real, and the records after the commit keep their offsets.
    consumer = reopened.consumer("g", ["posts"])
    assert [m.offset for m in consumer.poll(100, timeout_s=0.1)] == list(range(25, 30))
    consumer.commit({("posts", 0): 26})
    reopened.consumer("fresh", ["posts"]).commit({("posts", 0): 30})
    reopened.close()
    again = LocalBus(tmp_path, compact_after=10)
    assert [m.offset for m in again.consumer("late", ["posts"]).poll(100, timeout_s=0.1)] == list(range(26, 30))