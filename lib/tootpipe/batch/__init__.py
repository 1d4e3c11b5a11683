"""Stages 03 and 04: the backfill from Kafka offsets, the clean and de-duplication, the analytics tables with the
stream/batch reconciliation, and the reuse of a step whose inputs, parameters and code have not changed."""

__all__ = ["analytics", "backfill", "reuse"]
