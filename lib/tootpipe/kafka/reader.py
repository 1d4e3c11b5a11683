"""Reading Kafka: an offset range of one partition (what the backfill and the resume read) and the export of a
topic as dicts.

Guarantees: a range is read whole or the call raises (:class:`KafkaUnavailable`), never a silent short read.
"""
from __future__ import annotations

import json
import time
from typing import Iterator

from confluent_kafka import KafkaError, TopicPartition as CTP

from tootpipe.core.errors import KafkaUnavailable
from tootpipe.kafka.admin import end_offsets, range_consumer, start_offsets

__all__ = ["read_range", "export"]


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int, *, timeout: float = 60.0,
               consumer=None) -> Iterator:
    """Every message of one partition with start <= offset < end, in order, as confluent-kafka messages
    (`offset()`, `key()`, `value()`, `timestamp()`). A reused `consumer` is re-assigned, not closed.

    Raises KafkaUnavailable when the range cannot be read completely within `timeout` (never returns short).
    """
    if end <= start:
        return
    own = consumer is None
    c = consumer or range_consumer(bootstrap)
    try:
        c.assign([CTP(topic, partition, start)])
        pos, deadline = start, time.monotonic() + timeout
        while pos < end:
            msgs = c.consume(num_messages=min(10000, end - pos), timeout=0.2)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaUnavailable(f"{topic}[{partition}]: {err.str()}")
                if m.offset() >= end:
                    return
                pos = m.offset() + 1
                yield m
            if msgs:
                deadline = time.monotonic() + timeout
            else:
                at = c.position([CTP(topic, partition)])[0].offset
                if at >= end:  # only control records (transaction markers) were left
                    return
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"{topic}[{partition}] stopped at offset {pos} before {end} "
                                           f"(range {start}..{end}); refusing to return a short range")
    finally:
        if own:
            c.close()
        else:
            c.unassign()


def _as_dict(msg) -> dict:
    raw = msg.value()
    value = raw.decode("utf-8", "replace") if raw is not None else None
    try:
        value = json.loads(value) if value is not None else None
    except json.JSONDecodeError:
        pass
    return {"partition": msg.partition(), "offset": msg.offset(), "timestamp": msg.timestamp()[1],
            "key": msg.key().decode("utf-8", "replace") if msg.key() else None, "value": value}


def export(bootstrap: str, topic: str, max_messages: int | None = None, from_beginning: bool = True,
           timeout: float = 30.0) -> Iterator[dict]:
    """Messages of a topic as dicts (partition, offset, timestamp, key, value decoded as JSON when it is JSON), up to
    the end offsets seen when the export starts.

    from_beginning: the oldest messages first, partition by partition (up to `max_messages`); otherwise the newest
    `max_messages` (default 10) across partitions, oldest of them first.
    """
    ends = end_offsets(bootstrap, topic)
    earliest = start_offsets(bootstrap, topic, list(ends))
    if not from_beginning:
        n = max_messages or 10
        tail = [msg for p in sorted(ends) for msg in read_range(bootstrap, topic, p, max(earliest[p], ends[p] - n),
                                                                 ends[p], timeout=timeout)]
        tail.sort(key=lambda m: (m.timestamp()[1], m.partition(), m.offset()))
        yield from (_as_dict(m) for m in tail[-n:])
        return
    count = 0
    for p in sorted(ends):
        for msg in read_range(bootstrap, topic, p, earliest[p], ends[p], timeout=timeout):
            yield _as_dict(msg)
            count += 1
            if max_messages is not None and count >= max_messages:
                return
