"""Stage 01: where toots come from (the bundled sample, a replay, a REST poll, the streaming API of an instance),
how a payload becomes a record, and the loop that publishes records into Kafka at least once."""

__all__ = ["instance", "live", "normalize", "published", "resume", "sample", "source", "sse"]
