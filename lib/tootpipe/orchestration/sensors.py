"""When the pipeline runs by itself: a sensor that asks Kafka and PostgreSQL, never Spark, whether the topic holds
offsets that the stream's ledger or the backfill has not taken yet, and a schedule from the parameters.

Guarantees: a run is requested only for new data, and its run key is the topic's end offsets, so the same data
never starts a second run; with the services down, a batch writer running (its lock held: `make run`, the CLI, a
run of its own) or nothing new, the sensor skips and says why.
"""
from __future__ import annotations

import json
import os

import dagster as dg

from tootpipe.batch.backfill import ensure_batch_schema, pending_ranges
from tootpipe.core.config import Params, load
from tootpipe.core.errors import KafkaUnavailable, ServiceError
from tootpipe.kafka import check_reachable, end_offsets
from tootpipe.postgres.locks import holder
from tootpipe.services.embedded import cluster_of, endpoints
from tootpipe.stream.query import nothing_new

__all__ = ["params_file", "new_data", "new_toots_sensor", "refresh_schedule"]


def params_file() -> str:
    """The parameter file of the orchestrated pipeline: `$TOOTPIPE_PARAMS` (set by `tootpipe orchestrate`)."""
    return os.environ.get("TOOTPIPE_PARAMS", "params/default.yaml")


def new_data(params: Params) -> tuple[dict | None, str]:
    """(the topic's end offsets when some are neither streamed nor backfilled, else None; why)."""
    try:
        where = endpoints(params)  # starts nothing
        check_reachable(where.bootstrap_servers)
    except (ServiceError, KafkaUnavailable) as exc:
        return None, f"the services are not reachable: {exc}"
    try:
        ends = end_offsets(where.bootstrap_servers, params.kafka.topic, timeout=10)
    except KafkaUnavailable as exc:
        return None, f"nothing to read in {params.kafka.topic} yet: {exc}"
    if not any(ends.values()):
        return None, f"nothing to read in {params.kafka.topic} yet: it is empty"
    if busy := holder(where.database_url, "batch"):
        return None, f"a batch writer is running ({busy}): the next tick looks again"
    ensure_batch_schema(where.database_url)
    unstreamed = nothing_new(params, where) is None
    unloaded = pending_ranges(where.database_url, cluster_of(where), params.kafka.topic, ends)
    if not unstreamed and not unloaded:
        return None, f"nothing new: every offset of {params.kafka.topic} ({ends}) is streamed and backfilled"
    return ends, (f"new offsets in {params.kafka.topic}: {ends}" + (" (not streamed yet)" if unstreamed else "")
                  + (f" (not backfilled: {unloaded})" if unloaded else ""))


def new_toots_sensor(target) -> dg.SensorDefinition:
    @dg.sensor(name="new_toots", target=target, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="requests a run when the topic holds offsets not yet streamed or backfilled")
    def new_toots(context):
        ends, why = new_data(load(params_file()))
        if ends is None:
            return dg.SkipReason(why)
        key = json.dumps({str(p): o for p, o in sorted(ends.items())})
        return dg.RunRequest(run_key=f"offsets {key}", tags={"tootpipe/reason": why[:200]})
    return new_toots


def refresh_schedule(target, params: Params) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(name="refresh", target=target, cron_schedule=params.orchestration.cron,
                                 default_status=dg.DefaultScheduleStatus.RUNNING if params.orchestration.schedule
                                 else dg.DefaultScheduleStatus.STOPPED,
                                 description="the whole pipeline on a clock (orchestration.cron); reuse keeps "
                                             "unchanged steps cheap")
