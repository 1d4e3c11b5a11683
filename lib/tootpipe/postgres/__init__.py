"""PostgreSQL: connections, COPY-based bulk writes, atomic table replacement and reads, and the one schema module with
every table, index and advisory lock id of the pipeline."""

__all__ = ["db", "schema"]
