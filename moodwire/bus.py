"""The message bus: Kafka (kafka-python) in production, a durable in-process log for the embedded default.

Both give the same small interface: a Producer that sends and flushes, and a Consumer that
polls batches and commits offsets only when told to (after the sink has written durably).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moodwire import metrics
from moodwire.config import Settings
from moodwire.limits import CONSUMER_MAX_PARTITION_FETCH_BYTES, MAX_MESSAGE_BYTES, PRODUCER_MAX_REQUEST_BYTES

log = logging.getLogger(__name__)

REASON_HEADER = "moodwire-reason"
ORIGIN_HEADER = "moodwire-origin"
# Set by ingest on the posts it normalized (cleaned text, linked tickers, story id): the scorer
# skips its own HTML pass only for those.
NORMALIZED_HEADER = "moodwire-normalized"



@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


TopicPartition = tuple[str, int]


def next_offsets(messages: Iterable[Message]) -> dict[TopicPartition, int]:
    """The offsets to commit after processing `messages`: last offset + 1 per partition."""
    offsets: dict[TopicPartition, int] = {}
    for message in messages:
        key = (message.topic, message.partition)
        offsets[key] = max(offsets.get(key, 0), message.offset + 1)
    return offsets


class Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...

    def connected(self) -> bool: ...

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Message]: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def lag(self) -> dict[TopicPartition, int]: ...

    def uncommitted(self) -> int | None:
        """Messages on this consumer's partitions not yet committed by its group (None: not known yet)."""
        ...

    def connected(self) -> bool: ...

    def close(self) -> None: ...


class Bus(Protocol):
    def ensure_topics(self, topics: Sequence[str]) -> None: ...

    def reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether a broker answers now (readiness probes); never raises."""
        ...

    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Kafka


class KafkaBus:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._servers = settings.kafka_bootstrap_servers.split(",")

    def ensure_topics(self, topics: Sequence[str]) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self._servers, client_id="moodwire-admin")
        try:
            existing = set(admin.list_topics())
            for topic in topics:
                if topic in existing:
                    continue
                try:
                    admin.create_topics(
                        [NewTopic(topic, self._settings.topic_partitions, replication_factor=1)]
                    )
                    log.info("created topic %s with %d partitions", topic, self._settings.topic_partitions)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def reachable(self, timeout_s: float = 2.0) -> bool:
        """A TCP connection to one of the bootstrap servers opens (cheap enough for /readyz)."""
        for server in self._servers:
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port or 9092)), timeout=timeout_s):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def producer(self) -> Producer:
        return KafkaProducerAdapter(self._servers, self._settings.kafka_compression, self._settings.kafka_delivery_timeout_ms)

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return KafkaConsumerAdapter(self._servers, group, topics, self._settings)

    def close(self) -> None:
        pass


class KafkaProducerAdapter:
    def __init__(self, servers: list[str], compression: str, delivery_timeout_ms: int = 30_000) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            compression_type=None if compression == "none" else compression,
            retries=10,
            linger_ms=5,
            max_in_flight_requests_per_connection=1,
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            delivery_timeout_ms=delivery_timeout_ms,
            # A send must not wait longer for a full buffer or for metadata than a delivery takes.
            max_block_ms=delivery_timeout_ms,
            request_timeout_ms=min(30_000, delivery_timeout_ms // 2),
        )
        self._pending: list[object] = []

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self._pending.append(self._producer.send(topic, value=value, key=key, headers=list(headers)))

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every send so far is acknowledged; raise if any failed."""
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)  # type: ignore[attr-defined]

    def connected(self) -> bool:
        return bool(self._producer.bootstrap_connected())

    def close(self) -> None:
        self._producer.close()


class KafkaConsumerAdapter:
    def __init__(self, servers: list[str], group: str, topics: Sequence[str], settings: Settings) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_interval_ms=max(300_000, int(settings.shutdown_timeout_s * 1000) * 4),
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=CONSUMER_MAX_PARTITION_FETCH_BYTES,
        )
        self._consumer.subscribe(list(topics), listener=_rebalance_listener(group))

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Message] = []
        for records in batches.values():
            for r in records:
                headers = tuple((k, v if v is not None else b"") for k, v in (r.headers or []))
                out.append(Message(r.topic, r.partition, r.offset, r.key, r.value, headers, r.timestamp))
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit; False when the group rebalanced away (the new owner re-reads, stores dedupe)."""
        from kafka import TopicPartition as KafkaTP
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        if not offsets:
            return True
        try:
            self._consumer.commit(
                {KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )
            return True
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset commit failed (%s); messages will be redelivered and deduplicated", exc)
            return False

    def pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    def lag(self) -> dict[TopicPartition, int]:
        """Per-partition lag from the fetch highwater (not end_offsets, which some brokers misreport)."""
        lag: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            position = self._consumer.position(tp)
            lag[(tp.topic, tp.partition)] = max(0, high - position)
        return lag

    def uncommitted(self) -> int | None:
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                return None
            committed = self._consumer.committed(tp) or 0
            total += max(0, high - committed)
        return total

    def connected(self) -> bool:
        return bool(self._consumer.bootstrap_connected())

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def _rebalance_listener(group: str) -> Any:
    """Logs and counts every change of this consumer's partitions (kafka-python's listener API)."""
    from kafka import ConsumerRebalanceListener

    class RebalanceLog(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            if revoked:
                log.info("group %s rebalance: partitions revoked %s", group, _names(revoked))
                metrics.CONSUMER_REBALANCES.labels("revoked").inc()

        def on_partitions_assigned(self, assigned: Any) -> None:
            log.info("group %s rebalance: partitions assigned %s", group, _names(assigned))
            metrics.CONSUMER_REBALANCES.labels("assigned").inc()
            metrics.ASSIGNED_PARTITIONS.set(len(assigned))

    return RebalanceLog()


def _names(partitions: Any) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "none"


# --------------------------------------------------------------------------------------------
# Durable in-process log (embedded default)

_RECORD_HEADER = struct.Struct(">III")  # key length, headers length, value length
# A compacted log starts with this header and the offset of its first record; a log without it
# starts at offset 0 (every log that was never compacted).
_LOG_MAGIC = b"MWLOG\x01"
_LOG_BASE = struct.Struct(">Q")
# Records every consumer group has committed are dropped (from memory and from the file) once
# there are more than this many of them, so a long embedded run holds a bounded log.
COMPACT_AFTER_RECORDS = 50_000


@dataclass
class _TopicLog:
    path: Path
    base: int = 0  # offset of records[0]
    records: list[Message] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.base + len(self.records)


class LocalBus:
    """A single-partition append-only log per topic under `directory`, shared by threads of one process.

    Records are appended and fsynced on flush, committed offsets are written atomically, so a
    crash loses nothing acknowledged and redelivers what was not committed: the same
    at-least-once contract as Kafka. Records that every consumer group of a topic has committed
    are compacted away once there are more than `compact_after` of them (a topic nobody consumes,
    such as the dead letters, keeps everything). Offsets keep counting up across compactions.
    """

    def __init__(self, directory: Path, compact_after: int = COMPACT_AFTER_RECORDS) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._compact_after = compact_after
        self._lock = threading.Condition()
        self._topics: dict[str, _TopicLog] = {}
        self._files: dict[str, object] = {}

    def ensure_topics(self, topics: Sequence[str]) -> None:
        with self._lock:
            for topic in topics:
                self._load(topic)

    def reachable(self, timeout_s: float = 2.0) -> bool:
        return True

    def _load(self, topic: str) -> _TopicLog:
        if topic in self._topics:
            return self._topics[topic]
        path = self._dir / f"{topic}.log"
        log_ = _TopicLog(path)
        if path.exists():
            data = path.read_bytes()
            position = 0
            if data.startswith(_LOG_MAGIC):
                (log_.base,) = _LOG_BASE.unpack_from(data, len(_LOG_MAGIC))
                position = len(_LOG_MAGIC) + _LOG_BASE.size
            while position + _RECORD_HEADER.size <= len(data):
                klen, hlen, vlen = _RECORD_HEADER.unpack_from(data, position)
                end = position + _RECORD_HEADER.size + klen + hlen + vlen
                if end > len(data):
                    break  # a torn final write: it was never acknowledged
                body = position + _RECORD_HEADER.size
                key = data[body : body + klen] if klen else None
                headers = _decode_headers(data[body + klen : body + klen + hlen])
                value = data[body + klen + hlen : end]
                log_.records.append(Message(topic, 0, log_.end, key, value, headers))
                position = end
            if position != len(data):
                with path.open("r+b") as handle:
                    handle.truncate(position)
        self._topics[topic] = log_
        self._files[topic] = path.open("ab")
        return log_

    def append(self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        encoded_headers = _encode_headers(headers)
        with self._lock:
            log_ = self._load(topic)
            handle = self._files[topic]
            handle.write(_encode_record(key, encoded_headers, value))  # type: ignore[attr-defined]
            log_.records.append(Message(topic, 0, log_.end, key, value, tuple(headers), int(time.time() * 1000)))
            self._lock.notify_all()

    def sync(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.flush()  # type: ignore[attr-defined]
                os.fsync(handle.fileno())  # type: ignore[attr-defined]

    def read(self, topic: str, start: int, max_records: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            log_ = self._load(topic)
            while log_.end <= start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._lock.wait(remaining)
            # Offsets below the base were compacted after every group committed them; a new group
            # starts at the oldest record kept, as Kafka's auto.offset.reset=earliest would.
            first = max(start, log_.base) - log_.base
            return log_.records[first : first + max_records]

    def size(self, topic: str) -> int:
        """The topic's end offset (the offset the next record will get)."""
        with self._lock:
            return self._load(topic).end

    def committed(self, group: str, topic: str) -> int:
        path = self._offsets_path(group, topic)
        return int(path.read_text()) if path.exists() else 0

    def register(self, group: str, topic: str) -> None:
        """Make a new group's position (0) known, so compaction keeps what it has yet to read."""
        path = self._offsets_path(group, topic)
        if not path.exists():
            _write_atomically(path, "0")

    def store_commit(self, group: str, topic: str, offset: int) -> None:
        _write_atomically(self._offsets_path(group, topic), str(offset))
        self._compact(topic)

    def _committed_by_every_group(self, topic: str) -> int:
        offsets = [int(p.read_text()) for p in self._dir.glob(f"*.{topic}.offset")]
        return min(offsets) if offsets else 0

    def _compact(self, topic: str) -> None:
        """Drop the records every group has committed, once there are enough of them.

        The kept records go to a new file (base offset in its header) that replaces the log in
        one rename, so a crash leaves either the old log or the new one, never a mix.
        """
        with self._lock:
            log_ = self._load(topic)
            if log_.end - log_.base <= self._compact_after:
                return  # too few records to bother: spares every commit a read of the offset files
            upto = min(self._committed_by_every_group(topic), log_.end)
            if upto - log_.base <= self._compact_after:
                return
            kept = log_.records[upto - log_.base :]
            temporary = log_.path.with_suffix(".compacting")
            with temporary.open("wb") as handle:
                handle.write(_LOG_MAGIC + _LOG_BASE.pack(upto))
                for record in kept:
                    handle.write(_encode_record(record.key, _encode_headers(record.headers), record.value))
                handle.flush()
                os.fsync(handle.fileno())
            self._files[topic].close()  # type: ignore[attr-defined]
            os.replace(temporary, log_.path)
            directory = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself must survive a power cut
            finally:
                os.close(directory)
            self._files[topic] = log_.path.open("ab")
            log.info("compacted the %s log: %d committed records dropped", topic, upto - log_.base)
            log_.records = kept
            log_.base = upto

    def _offsets_path(self, group: str, topic: str) -> Path:
        return self._dir / f"{group}.{topic}.offset"

    def producer(self) -> Producer:
        return LocalProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return LocalConsumer(self, group, topics)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()  # type: ignore[attr-defined]
            self._files.clear()
            self._topics.clear()


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _encode_record(key: bytes | None, encoded_headers: bytes, value: bytes) -> bytes:
    return _RECORD_HEADER.pack(len(key or b""), len(encoded_headers), len(value)) + (key or b"") + encoded_headers + value


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    parts = []
    for name, value in headers:
        raw_name = name.encode("utf-8")
        parts.append(struct.pack(">HI", len(raw_name), len(value)) + raw_name + value)
    return b"".join(parts)


def _decode_headers(data: bytes) -> tuple[tuple[str, bytes], ...]:
    headers = []
    position = 0
    while position < len(data):
        nlen, vlen = struct.unpack_from(">HI", data, position)
        position += 6
        name = data[position : position + nlen].decode("utf-8")
        position += nlen
        headers.append((name, data[position : position + vlen]))
        position += vlen
    return tuple(headers)


class LocalProducer:
    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self._bus.append(topic, value, key, headers)

    def flush(self, timeout_s: float | None = None) -> None:
        self._bus.sync()

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        self.flush()


class LocalConsumer:
    def __init__(self, bus: LocalBus, group: str, topics: Sequence[str]) -> None:
        self._bus = bus
        self._group = group
        self._topics = list(topics)
        for topic in self._topics:
            bus.register(group, topic)
        self._positions = {t: bus.committed(group, t) for t in self._topics}
        self._paused = False

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        if self._paused:
            time.sleep(min(timeout_s, 0.05))
            return []
        per_topic = timeout_s / max(1, len(self._topics))
        out: list[Message] = []
        for topic in self._topics:
            records = self._bus.read(topic, self._positions[topic], max_records - len(out), per_topic)
            if records:
                self._positions[topic] = records[-1].offset + 1
                out.extend(records)
            if len(out) >= max_records:
                break
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        for (topic, _partition), offset in offsets.items():
            self._bus.store_commit(self._group, topic, offset)
        return True

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def lag(self) -> dict[TopicPartition, int]:
        return {(t, 0): max(0, self._bus.size(t) - self._positions[t]) for t in self._topics}

    def uncommitted(self) -> int | None:
        return sum(max(0, self._bus.size(t) - self._bus.committed(self._group, t)) for t in self._topics)

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


def open_bus(settings: Settings) -> Bus:
    if settings.bus == "kafka":
        return KafkaBus(settings)
    return LocalBus(settings.data_dir / "bus")
