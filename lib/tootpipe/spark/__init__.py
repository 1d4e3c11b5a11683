"""Spark: the one session of a process (local or any master), the shared driver JVM of a run, its class-data archive,
the Kafka source options, the transforms shared by the stream and the batch, and PostgreSQL I/O from executors."""

__all__ = ["archive", "java", "kafka_source", "pg_source", "postgres", "session", "transforms"]
