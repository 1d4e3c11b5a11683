"""One function per pipeline step, shared by the CLI and the notebooks (which only call and narrate).

Each returns a plain dict of what it did, suitable for printing and for the report index.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .batch import ANALYTICS_TABLES
from .config import Params, load
from .services import Endpoints, up

__all__ = ["context", "ingest_step", "stream_step", "backfill_step", "clean_step", "analytics_step",
           "train_step", "score_step", "TABLES"]

TABLES = ["mastodon_posts", "streamed_toot_counts", "avg_toot_length_by_user", "stream_errors", "toots_raw",
          "toots_clean", "toots_rejects", *ANALYTICS_TABLES, "stream_batch_reconciliation", "mastodon_sentiments"]


def context(params_file: str | Path | None = "params/default.yaml", overrides: dict | None = None) -> tuple[Params, Endpoints]:
    """Validated parameters and the service endpoints (embedded services are started when needed)."""
    params = load(params_file, overrides)
    return params, up(params)


def ingest_step(params: Params, ep: Endpoints, *, max_toots: int | None = None, duration_s: float | None = None) -> dict:
    from .kafka_io import Publisher, end_offsets, ensure_topics
    from .mastodon_source import ingest, source_events
    ensure_topics(ep.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic], params.kafka.partitions,
                  params.kafka.replication_factor)
    pub = Publisher(ep.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
    try:
        stats = ingest(source_events(params), pub, params, max_toots=max_toots or params.source.max_toots,
                       duration_s=duration_s or params.source.duration_s, source=params.source.kind)
    finally:
        pub.close()
    out = stats.as_dict()
    out["topic_end_offsets"] = end_offsets(ep.bootstrap_servers, params.kafka.topic)
    out["dlq_end_offsets"] = end_offsets(ep.bootstrap_servers, params.kafka.dlq_topic)
    return out


def stream_step(params: Params, ep: Endpoints) -> dict:
    from .spark_session import get_spark
    from .streaming import run_available_now
    return run_available_now(get_spark(params), params, ep)


def backfill_step(params: Params, ep: Endpoints) -> dict:
    from .batch import backfill
    from .spark_session import get_spark
    return backfill(get_spark(params), params, ep)


def clean_step(params: Params, ep: Endpoints) -> dict:
    from .batch import clean, load_raw, write_table
    from .spark_session import get_spark
    spark = get_spark(params)
    t0 = time.monotonic()
    cleaned, rejects = clean(load_raw(spark, ep.database_url), params.filters)
    out = {"toots_clean": write_table(ep.database_url, "toots_clean", cleaned),
           "toots_rejects": write_table(ep.database_url, "toots_rejects", rejects)}
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def analytics_step(params: Params, ep: Endpoints) -> dict:
    from .batch import analytics, load_clean, reconcile, write_table
    from .spark_session import get_spark
    spark = get_spark(params)
    t0 = time.monotonic()
    clean_df = load_clean(spark, ep.database_url).cache()  # read by all seven tables
    timings, counts = {}, {}
    for name, df in analytics(clean_df, params.batch.active_min).items():
        t = time.monotonic()
        counts[name] = write_table(ep.database_url, name, df)
        timings[name] = round(time.monotonic() - t, 2)
    clean_df.unpersist()
    counts["stream_batch_reconciliation"] = reconcile(ep.database_url)
    return {"rows": counts, "seconds_per_table": timings, "seconds": round(time.monotonic() - t0, 2)}


def train_step(params: Params, variant: str = "balanced_ngrams") -> dict:
    from .sentiment import evaluate, load_labelled, save_model, train
    from .spark_session import get_spark
    spark = get_spark(params)
    model, seconds = train(spark, params.path(params.sentiment.train_path), variant, params.sentiment.train_limit)
    metrics = {"variant": variant, "train_s": round(seconds, 1),
               "semeval2017_dev": evaluate(model, load_labelled(spark, params.path(params.sentiment.dev_path))),
               "tweeteval_val": evaluate(model, load_labelled(spark, params.path(params.sentiment.val_path)))}
    path = save_model(model, params.path(params.sentiment.model_dir), metrics)
    return {"model": str(path), **metrics}


def score_step(params: Params, ep: Endpoints, model_path: str | None = None) -> dict:
    from .sentiment import latest_model, load_model, score_posts
    from .spark_session import get_spark
    spark = get_spark(params)
    model, version = load_model(model_path or latest_model(params.path(params.sentiment.model_dir)))
    t0 = time.monotonic()
    out = score_posts(spark, model, version, ep.database_url, params.sentiment.languages)
    out.update(model_version=version, seconds=round(time.monotonic() - t0, 2))
    return out


def dumps(d: dict) -> str:
    return json.dumps(d, indent=2, default=str)
