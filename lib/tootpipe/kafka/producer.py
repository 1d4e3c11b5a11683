"""The record producer: toots into their topic, payloads that cannot be records into the dead-letter topic.

Guarantees: records go to Kafka at-least-once (acks=all, idempotent producer). A record is never given up on
quietly: librdkafka retries it until the broker takes it (no delivery timeout), the local queue is bounded and a
full one blocks the caller (backpressure: a live feed pauses instead of dropping), and a send the broker refuses
for good stops the next send (and :meth:`Publisher.flush`) with :class:`KafkaUnavailable` naming it. A `tracker`
(:class:`tootpipe.ingest.resume.AckedThrough`) learns which status ids are acknowledged, for a safe restart.
"""
from __future__ import annotations

import json
import time
from functools import partial

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from tootpipe.core.errors import BadPayload, KafkaUnavailable, RecordTooLarge
from tootpipe.core.schema import safe_text
from tootpipe.kafka.admin import check_reachable

__all__ = ["Publisher", "RecordTooLarge"]


class Publisher:
    """Toot records to the topic (key = uri) and dead letters to the DLQ topic, through librdkafka
    (confluent-kafka): acks=all, idempotent, murmur2 partitioning like the Java client.

    At-least-once: :meth:`flush` raises when any send failed, so a caller never believes lost records were stored.

    >>> pub = Publisher("127.0.0.1:9092", "mastodon_stream", "mastodon_stream_dlq")  # doctest: +SKIP
    >>> pub.send_record(record); pub.flush(); pub.close()                             # doctest: +SKIP
    """

    DLQ_RAW_LIMIT = 1024 * 1024  # bytes of raw payload a dead letter keeps

    def __init__(self, bootstrap: str, topic: str, dlq_topic: str, tracker=None, **producer_options) -> None:
        options = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 10,
                   "batch.size": 1024 * 1024, "message.max.bytes": 8 * 1024 * 1024, "compression.type": "none",
                   "partitioner": "murmur2_random", "client.id": "tootpipe-producer",
                   "queue.buffering.max.messages": 200000, "queue.buffering.max.kbytes": 256 * 1024,
                   "message.timeout.ms": 0}  # 0: never expire a record (it was 300 s: an outage dropped them)
        options.update(producer_options)
        self.max_bytes = int(options["message.max.bytes"]) - 1024  # room for the record batch's own headers
        check_reachable(bootstrap)
        self._producer = Producer(options)
        self.topic, self.dlq_topic = topic, dlq_topic
        self.sent = self.dead = 0
        self._errors: list = []
        self._dumps = _json_dumps()
        self.tracker = tracker

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(err)

    def _on_tracked(self, host: str, sid: str, err, msg) -> None:
        self._on_delivery(err, msg)
        if err is None:
            self.tracker.acked(host, sid)

    def _raise_failures(self) -> None:
        if self._errors:
            errs, self._errors = self._errors, []
            raise KafkaUnavailable(f"{len(errs)} sends failed, first: {errs[0]}; stopped at once: a restart resumes "
                                   "before every record that was not acknowledged")

    def _produce(self, topic: str, key: bytes | None, value: bytes, on_delivery=None) -> None:
        self._raise_failures()
        if len(value) + len(key or b"") > self.max_bytes:
            raise RecordTooLarge(f"record of {len(value):,} bytes is over the producer's limit of "
                                 f"{self.max_bytes:,} bytes")
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery or self._on_delivery)
                break
            except BufferError:  # the local queue is full: let librdkafka drain it
                self._producer.poll(0.05)
            except Exception as exc:  # rare: resolve librdkafka's error types only here, off the hot path
                if isinstance(exc, KafkaException) and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLarge(f"record of {len(value):,} bytes refused as too large") from None
                raise
        if (self.sent + self.dead) % 1000 == 0:
            self._producer.poll(0)

    def send_record(self, record: dict) -> None:
        """Raises RecordTooLarge (a BadPayload: the caller dead-letters it) for a record the broker would refuse."""
        key = record.get("uri") or f"{record.get('instance')}/{record.get('id')}"
        try:
            value = self._dumps(record)
        except (TypeError, ValueError) as exc:  # orjson's JSONEncodeError: a string that is not valid UTF-8
            raise BadPayload(f"record cannot be encoded: {exc}") from None
        track = self.tracker is not None and record.get("event") != "delete" and isinstance(record.get("id"), str)
        if not track:
            self._produce(self.topic, key.encode("utf-8", "replace"), value)
        else:
            host, sid = str(record.get("instance")), record["id"]
            self.tracker.sent(host, sid)
            try:
                self._produce(self.topic, key.encode("utf-8", "replace"), value, partial(self._on_tracked, host, sid))
            except BaseException:
                self.tracker.failed(host, sid)
                raise
        self.sent += 1

    def send_dead_letter(self, raw, error: str, source: str) -> None:
        """A payload that could not become a record: kept with the error and where it came from. Any payload can
        be dead-lettered: invalid text is replaced, and one too large for the broker is cut to
        :attr:`DLQ_RAW_LIMIT` characters with ``"truncated": true`` and its original size."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if not isinstance(raw, str):
            try:
                raw = json.dumps(raw, ensure_ascii=False, default=str)
            except (ValueError, RecursionError):
                raw = repr(raw)
        raw = safe_text(raw)
        doc = {"raw": raw, "error": safe_text(error), "source": safe_text(str(source)),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if len(raw.encode("utf-8")) > self.DLQ_RAW_LIMIT:
            doc.update(raw=raw[:self.DLQ_RAW_LIMIT // 4], truncated=True, raw_chars=len(raw))
        self._produce(self.dlq_topic, None, json.dumps(doc, ensure_ascii=False).encode("utf-8"))
        self.dead += 1

    def flush(self, timeout: float = 60) -> None:
        """Wait for every send; raise if any failed or is still unacknowledged after `timeout` seconds."""
        left = self._producer.flush(timeout)
        if self.tracker is not None:
            self.tracker.save()  # what was acknowledged so far, whatever comes next
        if left:
            raise KafkaUnavailable(f"{left} records not acknowledged after {timeout:.0f} s")
        self._raise_failures()

    def close(self) -> None:
        self.flush()


def _json_dumps():
    """Compact UTF-8 JSON bytes: orjson when installed (5-10x faster), else the standard library."""
    try:
        return orjson.dumps
    except ImportError:  # pragma: no cover - orjson is a dependency
        return lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
