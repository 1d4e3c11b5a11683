"""A streaming micro-batch as Arrow, summarised and split before it reaches PostgreSQL. Pure functions.

The sink receives every message of a batch, parsed, with `error` (null for a usable row) and `kept` (the
filters' verdict). The ledger's figures come from here (per partition: first offset, end offset, messages; errors,
filtered rows, the newest event time), and PostgreSQL is sent only what it applies: the usable kept rows, and the
error rows for `stream_errors`. A row whose `kept` is null counts as neither kept nor filtered (as SQL's
``WHERE kept`` and ``WHERE NOT kept`` would treat it).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tootpipe.spark.transforms import POST_COLUMNS

__all__ = ["BatchSummary", "summarise", "posts_part", "errors_part", "latencies_ms", "without_null_items",
           "newest_versions", "ERROR_COLUMNS"]

ERROR_COLUMNS = ["topic", "kafka_partition", "kafka_offset", "raw", "error"]


@dataclass
class BatchSummary:
    """What a micro-batch holds: per partition (as strings, the ledger's JSON keys) its first offset and end offset
    (last + 1), and totals."""
    starts: dict[str, int]
    ends: dict[str, int]
    rows: int
    errors: int
    filtered: int
    max_event_time: datetime | None


def _usable(rows: pa.Table) -> pa.ChunkedArray:
    return pc.is_null(rows["error"])


def _applied(rows: pa.Table) -> pa.ChunkedArray:
    return pc.and_(_usable(rows), rows["kept"])  # null where kept is null: a filter drops it


def summarise(rows: pa.Table) -> BatchSummary:
    """The batch's ledger figures; the newest event time is that of the usable kept toots (deletes have none)."""
    per = rows.select(["kafka_partition", "kafka_offset"]).group_by("kafka_partition").aggregate(
        [("kafka_offset", "min"), ("kafka_offset", "max")]).to_pydict()
    usable = _usable(rows)
    events = pc.and_(_applied(rows), pc.not_equal(rows["event"], "delete"))
    newest = pc.max(pc.filter(rows["created_at"], events)).as_py() if rows.num_rows else None
    return BatchSummary(
        starts={str(p): int(o) for p, o in zip(per["kafka_partition"], per["kafka_offset_min"])},
        ends={str(p): int(o) + 1 for p, o in zip(per["kafka_partition"], per["kafka_offset_max"])},
        rows=rows.num_rows, errors=rows.num_rows - int(pc.sum(usable).as_py() or 0),
        filtered=int(pc.sum(pc.and_(usable, pc.invert(rows["kept"]))).as_py() or 0),
        max_event_time=newest)


def posts_part(rows: pa.Table) -> pa.Table:
    """The rows PostgreSQL applies (usable and kept): `event`, `newest` (:func:`newest_versions`) and the columns
    of `mastodon_posts`; the arrays without null items (a record from another producer may hold some)."""
    applied = _applied(rows)
    if applied.null_count or not pc.all(applied).as_py():  # else every row: no copy of the table
        rows = rows.filter(applied)
    part = rows.select(["event", *POST_COLUMNS])
    for i, field in enumerate(part.schema):
        if pa.types.is_list(field.type):  # hashtags, mentions, urls: text[] in PostgreSQL
            part = part.set_column(i, field.name, without_null_items(part.column(i)))
    return part.add_column(1, "newest", newest_versions(part))


def newest_versions(part: pa.Table) -> pa.Array:
    """Per row, whether it is the version of its `uri` the batch stores: among the rows that are not deletes, the
    first of its uri in the order uri, coalesce(edited_at, created_at) descending (nulls first, as PostgreSQL's
    DESC: `no_t`), kafka_partition, kafka_offset descending, so `WHERE newest` picks what `SELECT DISTINCT ON (uri) ...
    ORDER BY` that order would, without PostgreSQL sorting the wide rows (a sort that spilled to disk). Pure."""
    newest = np.zeros(part.num_rows, dtype=bool)
    statuses = np.flatnonzero(pc.fill_null(pc.not_equal(part["event"], "delete"), False).to_numpy())
    if statuses.size:
        t = pc.coalesce(part["edited_at"].cast(part["created_at"].type), part["created_at"])
        keys = pa.table({"uri": part["uri"], "no_t": pc.is_null(t), "t": t, "p": part["kafka_partition"],
                         "o": part["kafka_offset"]}).take(statuses)
        order = pc.sort_indices(keys, [("uri", "ascending"), ("no_t", "descending"), ("t", "descending"),
                                       ("p", "ascending"), ("o", "descending")]).to_numpy()
        uris = keys["uri"].take(order).combine_chunks()
        this, before = uris.slice(1), uris.slice(0, len(uris) - 1)
        same = pc.or_kleene(pc.equal(this, before), pc.and_(pc.is_null(this), pc.is_null(before)))  # nulls: one uri
        first = np.ones(len(order), dtype=bool)  # the first row of each uri in that order
        first[1:] = ~pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        newest[statuses[order[first]]] = True
    return pa.array(newest)


def without_null_items(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """A list column with the null items of its lists removed (a null list stays null). Pure."""
    if pc.list_flatten(lists).null_count == 0:
        return lists
    return pa.chunked_array([pa.array([None if v is None else [x for x in v if x is not None] for v in c.to_pylist()],
                                      type=c.type) for c in lists.chunks], type=lists.type)


def errors_part(rows: pa.Table) -> pa.Table:
    """The rows that could not be used, with their Kafka coordinates, message and reason."""
    return rows.filter(pc.invert(_usable(rows))).select(ERROR_COLUMNS)


def latencies_ms(rows: pa.Table, now_s: float) -> np.ndarray:
    """Per row with a Kafka timestamp: milliseconds from it to `now_s` (seconds since the epoch)."""
    stamps = rows["kafka_timestamp"].drop_null()
    micros = pc.cast(stamps, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return now_s * 1000 - micros / 1000
