"""Stage 02: the Structured Streaming query from Kafka into PostgreSQL, exactly once: the query, its micro-batches as
Arrow, the sink that applies each in one transaction, the sink's SQL, and Spark's progress figures."""

__all__ = ["microbatch", "progress", "query", "sink", "sql"]
