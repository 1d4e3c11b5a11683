"""Kafka through librdkafka (confluent-kafka): topics and offsets (`admin`), the record producer with its dead-letter
topic (`producer`), the reader of offset ranges and the export (`reader`). Any broker: the embedded one or a cluster
named in the parameters. The public names of the three are re-exported here."""
from tootpipe.kafka.admin import (KafkaUnavailable, check_reachable, cluster_id, delete_topics, end_offsets,
                                  ensure_topics, partitions_for, range_consumer, start_offsets)
from tootpipe.kafka.producer import Publisher, RecordTooLarge
from tootpipe.kafka.reader import export, read_range

__all__ = ["KafkaUnavailable", "check_reachable", "cluster_id", "delete_topics", "end_offsets", "ensure_topics",
           "partitions_for", "range_consumer", "start_offsets", "Publisher", "RecordTooLarge", "export", "read_range"]
