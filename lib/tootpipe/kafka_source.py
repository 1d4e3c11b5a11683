"""Kafka for Spark without the JVM connector: a Spark 4 Python Data Source named ``tootkafka``.

Yields the columns of Spark's built-in Kafka source (key, value, topic, partition, offset, timestamp,
timestampType), one Spark input partition per Kafka partition, except that a small batch is read by fewer tasks
(one per ``minRowsPerTask`` messages, default 2,000) and ``minPartitions`` cuts big ranges into more. Streaming
offsets are per-partition positions tagged with the broker's cluster id; batch reads take explicit
starting/ending offsets. ``maxOffsetsPerTrigger``
bounds every micro-batch, with Trigger.availableNow too (which then stops at the ends found when it started).

Guarantees: ``read()`` returns every message of its range or raises (a short read would checkpoint lost data
as read). When the broker is a different cluster than the checkpoint's, or a partition's end moved below the
checkpoint (topic recreated), the source reads that partition again from its earliest offset and logs a warning:
Spark's ``failOnDataLoss=false`` behaviour; downstream upserts keep the sink free of duplicates.

    spark.read.format("tootkafka").option("kafka.bootstrap.servers", bs).option("subscribe", "mastodon_stream")
"""
from __future__ import annotations

import json
import logging
from typing import Iterator

from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow

__all__ = ["KafkaDataSource", "KAFKA_COLUMNS", "split_limit", "split_ranges", "pack_ranges", "register"]

log = logging.getLogger(__name__)

KAFKA_COLUMNS = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                 "timestampType int")
_ARROW_CHUNK = 5000


class KafkaRange(InputPartition):
    """One Spark task's share of a batch: (partition, start, end) ranges of one topic, read one after the other."""

    def __init__(self, bootstrap: str, topic: str, ranges: list[tuple[int, int, int]], timeout: float):
        super().__init__((topic, tuple(ranges)))
        self.bootstrap, self.topic, self.ranges, self.timeout = bootstrap, topic, list(ranges), timeout


def _read_range(part: KafkaRange) -> Iterator:
    """All messages of a task's ranges as Arrow record batches (runs on a worker, with librdkafka)."""
    import pyarrow as pa
    from .kafka_io import read_range

    schema = pa.schema([("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()),
                        ("partition", pa.int32()), ("offset", pa.int64()),
                        ("timestamp", pa.timestamp("us", tz="UTC")), ("timestampType", pa.int32())])

    def batch(partition, keys, values, offsets, stamps, types):
        n = len(keys)
        return pa.RecordBatch.from_arrays([
            pa.array(keys, pa.binary()), pa.array(values, pa.binary()), pa.array([part.topic] * n, pa.string()),
            pa.array([partition] * n, pa.int32()), pa.array(offsets, pa.int64()),
            pa.array(stamps, pa.timestamp("us", tz="UTC")), pa.array(types, pa.int32())], schema=schema)

    consumer = _worker_consumer(part.bootstrap)
    try:
        for partition, start, end in part.ranges:
            keys, values, offsets, stamps, types = [], [], [], [], []
            for m in read_range(part.bootstrap, part.topic, partition, start, end, timeout=part.timeout,
                                consumer=consumer):
                kind, ts = m.timestamp()
                keys.append(m.key())
                values.append(m.value())
                offsets.append(m.offset())
                stamps.append(ts * 1000 if ts >= 0 else None)
                types.append(0 if kind == 1 else 1 if kind == 2 else -1)  # Spark: 0 CreateTime, 1 LogAppendTime
                if len(keys) >= _ARROW_CHUNK:
                    yield batch(partition, keys, values, offsets, stamps, types)
                    keys, values, offsets, stamps, types = [], [], [], [], []
            if keys:
                yield batch(partition, keys, values, offsets, stamps, types)
    except BaseException:
        _CONSUMERS.pop(part.bootstrap, None)
        consumer.close()
        raise


# One consumer per broker in each (reused) Python worker: a fresh one per micro-batch costs a connection and a
# metadata round trip for every partition, which dominated small live batches.
_CONSUMERS: dict = {}


def _worker_consumer(bootstrap: str):
    from .kafka_io import range_consumer
    c = _CONSUMERS.get(bootstrap)
    if c is None:
        c = _CONSUMERS[bootstrap] = range_consumer(bootstrap)
    return c


def split_limit(start: dict[str, int], available: dict[str, int], max_rows: int) -> dict[str, int]:
    """End offsets that take at most `max_rows` messages in all, shared in proportion to what each partition has
    waiting (as Spark's Kafka source does with maxOffsetsPerTrigger). Pure."""
    waiting = {p: max(0, available[p] - start.get(p, 0)) for p in available}
    total = sum(waiting.values())
    if total <= max_rows:
        return dict(available)
    take = {p: (w * max_rows) // total for p, w in waiting.items()}
    left = max_rows - sum(take.values())
    for p in sorted(waiting, key=lambda q: waiting[q] - take[q], reverse=True):
        if left <= 0:
            break
        if take[p] < waiting[p]:
            take[p] += 1
            left -= 1
    return {p: start.get(p, 0) + take[p] for p in available}


class _Options:
    def __init__(self, options) -> None:
        self.bootstrap = options.get("kafka.bootstrap.servers") or options.get("bootstrap.servers")
        self.topic = options.get("subscribe") or options.get("topic")
        if not self.bootstrap or not self.topic:
            raise ValueError("tootkafka needs options kafka.bootstrap.servers and subscribe")
        self.starting = options.get("startingOffsets", "earliest")
        self.ending = options.get("endingOffsets", "latest")
        self.max_per_trigger = int(options["maxOffsetsPerTrigger"]) if options.get("maxOffsetsPerTrigger") else None
        self.timeout = float(options.get("readTimeoutSeconds", "60"))
        self.cluster = options.get("clusterId") or ""
        self.min_partitions = int(options.get("minPartitions") or 0)
        self.min_rows_per_task = int(options.get("minRowsPerTask") or 2000)


class _Broker:
    """Driver-side view of the topic; opens its consumer lazily (the reader is pickled before use)."""

    def __init__(self, opts: _Options) -> None:
        self.opts = opts
        self._consumer = None
        self._partitions: list[int] | None = None

    def consumer(self):
        if self._consumer is None:
            from .kafka_io import _consumer
            self._consumer = _consumer(self.opts.bootstrap, max_partition_fetch_bytes=64 * 1024, max_poll_records=1)
        return self._consumer

    def partitions(self) -> list[int]:
        if self._partitions is None:
            from .kafka_io import partitions_for
            self._partitions = partitions_for(self.opts.bootstrap, self.opts.topic)
        return self._partitions

    def earliest(self) -> dict[str, int]:
        from kafka import TopicPartition
        tps = [TopicPartition(self.opts.topic, p) for p in self.partitions()]
        return {str(tp.partition): o for tp, o in self.consumer().beginning_offsets(tps).items()}

    def latest(self, hint: dict[str, int] | None = None) -> dict[str, int]:
        from .kafka_io import end_offsets
        marks = end_offsets(self.opts.bootstrap, self.opts.topic, self.partitions(), consumer=self.consumer(),
                            hint={int(p): o for p, o in (hint or {}).items()})
        return {str(p): o for p, o in marks.items()}

    def resolve(self, spec: str, default_end: bool) -> dict[str, int]:
        if spec == "earliest":
            return self.earliest()
        if spec == "latest":
            return self.latest()
        given = json.loads(spec)
        per = given.get(self.opts.topic, given)
        earliest = self.earliest()
        base = self.latest() if default_end else dict(earliest)
        for p, o in per.items():
            if int(o) == -1:
                continue  # -1 = latest, -2 = earliest, as in Spark's Kafka source
            base[str(p)] = earliest[str(p)] if int(o) == -2 else int(o)
        return base

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def split_ranges(ranges: list[tuple[int, int, int]], min_partitions: int) -> list[tuple[int, int, int]]:
    """(partition, start, end) ranges cut into pieces of equal size so that there are at least `min_partitions`
    (as Spark's Kafka source does with minPartitions); each offset stays in exactly one piece. Pure."""
    total = sum(e - s for _, s, e in ranges)
    if min_partitions <= len(ranges) or total == 0:
        return ranges
    size = max(1, -(-total // min_partitions))
    return [(p, a, min(a + size, e)) for p, s, e in ranges for a in range(s, e, size)]


def pack_ranges(ranges: list[tuple[int, int, int]], min_rows_per_task: int) -> list[list[tuple[int, int, int]]]:
    """Ranges grouped into tasks: as many tasks as there are ranges, but fewer when the batch is small, so that a
    task reads at least `min_rows_per_task` messages (every Python task has a fixed cost, which small live batches
    paid once per Kafka partition: ~40 ms of a 270 ms read of three partitions). Largest range first into the
    lightest task; each range stays whole and in exactly one task. Pure."""
    total = sum(e - s for _, s, e in ranges)
    n = max(1, min(len(ranges), -(-total // max(1, min_rows_per_task))))
    tasks: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
    load = [0] * n
    for r in sorted(ranges, key=lambda r: r[2] - r[1], reverse=True):
        i = load.index(min(load))
        tasks[i].append(r)
        load[i] += r[2] - r[1]
    return [sorted(t) for t in tasks if t]


def _ranges(opts: _Options, start: dict[str, int], end: dict[str, int]) -> list[KafkaRange]:
    ranges = [(int(p), start.get(p, 0), e) for p, e in sorted(end.items(), key=lambda kv: int(kv[0]))
              if e > start.get(p, 0)]
    if opts.min_partitions:  # asked for at least this many tasks: one per piece
        tasks = [[piece] for piece in split_ranges(ranges, opts.min_partitions)]
    else:
        tasks = pack_ranges(ranges, opts.min_rows_per_task)
    return [KafkaRange(opts.bootstrap, opts.topic, task, opts.timeout) for task in tasks]


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options) -> None:
        self.opts = _Options(options)
        self.broker = _Broker(self.opts)
        self._target: dict[str, int] | None = None
        self._latest: dict[str, int] | None = None

    def prepareForTriggerAvailableNow(self) -> None:
        """availableNow: the ends as they are now are the target; batches honour maxOffsetsPerTrigger up to it
        and nothing produced later is read."""
        self._target = self.broker.latest()

    def _wrap(self, offsets: dict[str, int]) -> dict:
        return {"cluster": self.opts.cluster, "topic": self.opts.topic, "offsets": offsets}

    def initialOffset(self) -> dict:
        return self._wrap(self.broker.resolve(self.opts.starting, default_end=False))

    def _begin(self, start: dict, ends: dict[str, int]) -> dict[str, int]:
        """Where to read from: the checkpointed positions, or earliest where they no longer describe this broker's
        topic (another cluster, or a partition whose end is below the checkpoint: the topic was recreated)."""
        if start.get("cluster", "") != self.opts.cluster:
            log.warning("tootkafka: checkpoint is for cluster %r, broker is %r: reading %s from earliest",
                        start.get("cluster"), self.opts.cluster, self.opts.topic)
            return self.broker.earliest()
        begin = dict(start.get("offsets", {}))
        behind = [p for p, e in ends.items() if e < begin.get(p, 0)]
        if behind:
            earliest = self.broker.earliest()
            for p in behind:
                log.warning("tootkafka: %s[%s] ends at %d, below the checkpoint %d: reading it from earliest",
                            self.opts.topic, p, ends[p], begin[p])
                begin[p] = earliest[p]
        return begin

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        if self._target is not None:
            available = dict(self._target)
        else:
            hint = start.get("offsets", {}) if start.get("cluster", "") == self.opts.cluster else None
            available = self.broker.latest(hint=hint)
        self._latest = available
        if isinstance(limit, ReadMaxRows):
            available = split_limit(self._begin(start, available), available, limit.max_rows)
        return self._wrap(available)

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.opts.max_per_trigger) if self.opts.max_per_trigger else ReadAllAvailable()

    def reportLatestOffset(self):
        """The topic's ends seen when the last batch was planned (before maxOffsetsPerTrigger): Spark shows them as
        the source's latestOffset, and the progress recorder derives the lag from them."""
        return self._wrap(self._latest) if self._latest is not None else None

    def partitions(self, start: dict, end: dict):
        ends = end.get("offsets", {})
        return _ranges(self.opts, self._begin(start, ends), ends)

    def read(self, partition: KafkaRange):
        return _read_range(partition)

    def commit(self, end: dict) -> None:
        pass  # offsets live in Spark's checkpoint (and the sink's ledger), not in consumer groups

    def stop(self) -> None:
        self.broker.close()


class KafkaBatchReader(DataSourceReader):
    def __init__(self, options) -> None:
        self.opts = _Options(options)

    def partitions(self):
        broker = _Broker(self.opts)
        try:
            start = broker.resolve(self.opts.starting, default_end=False)
            end = broker.resolve(self.opts.ending, default_end=True)
        finally:
            broker.close()
        return _ranges(self.opts, start, end)

    def read(self, partition: KafkaRange):
        return _read_range(partition)


class KafkaDataSource(DataSource):
    """``format("tootkafka")``: Kafka topics as Spark DataFrames, batch and streaming."""

    @classmethod
    def name(cls) -> str:
        return "tootkafka"

    def schema(self) -> str:
        return KAFKA_COLUMNS

    def reader(self, schema) -> DataSourceReader:
        return KafkaBatchReader(self.options)

    def streamReader(self, schema) -> DataSourceStreamReader:
        return KafkaStreamReader(self.options)


def register(spark) -> None:
    spark.dataSource.register(KafkaDataSource)
