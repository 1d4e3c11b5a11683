"""Every record the pipeline could not use, in one table: dead letters of ingest, the stream's errors, the batch's
rejects, each with the kind of its reason (what notebook 06 charts)."""
from __future__ import annotations

import re

import pandas as pd

from tootpipe.core.config import Params
from tootpipe.kafka import KafkaUnavailable, export, partitions_for
from tootpipe.postgres.db import query_df, table_counts
from tootpipe.services.embedded import Endpoints

__all__ = ["problems", "reason_class"]


def problems(params: Params, endpoints: Endpoints, limit: int = 20000):
    """Every record the pipeline could not use, as a DataFrame (stage, reason, reason_class): dead letters from the
    DLQ topic, the stream's `stream_errors`, the batch's `toots_rejects`."""
    rows = []
    try:
        partitions_for(endpoints.bootstrap_servers, params.kafka.dlq_topic, timeout=2)
        rows += [("dead letter (ingest)", m["value"].get("error") if isinstance(m["value"], dict) else "unreadable")
                 for m in export(endpoints.bootstrap_servers, params.kafka.dlq_topic, limit, from_beginning=True)]
    except KafkaUnavailable:  # no DLQ topic yet: nothing was dead-lettered
        pass
    present = table_counts(endpoints.database_url, ["stream_errors", "toots_rejects"])
    for stage, table, col in (("stream error", "stream_errors", "error"), ("batch reject", "toots_rejects", "reason")):
        if present.get(table):
            reasons = query_df(endpoints.database_url, f"SELECT {col} AS reason FROM {table}").reason
            rows += [(stage, r) for r in reasons]
    out = pd.DataFrame(rows, columns=["stage", "reason"])
    return out.assign(reason_class=out["reason"].map(reason_class))


def reason_class(reason) -> str:
    """The kind of a problem without its particulars: "malformed JSON: Expecting value ..." -> "malformed JSON",
    "uri longer than 2048 characters (3021)" -> "uri longer than 2048 characters"."""
    text = str(reason or "unknown")
    return re.split(r":|\s\(|\s'|\s\"", text, maxsplit=1)[0].strip()[:80] or "unknown"
