"""One function per pipeline step, shared by the CLI and the notebooks (which only call and narrate).

Each returns a plain dict of what it did, suitable for printing and for the report index.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

from tootpipe.batch.reuse import run_once, step_key
from tootpipe.core.config import Params, load
from tootpipe.core.errors import WriterBusy
from tootpipe.core.paths import state_dir
from tootpipe.ingest.published import already_published, record_published, source_key
from tootpipe.ingest.resume import AckedThrough, resume_points
from tootpipe.ingest.source import ingest, source_events
from tootpipe.kafka import Publisher, end_offsets, ensure_topics, start_offsets
from tootpipe.postgres.locks import holder, writer_lock
from tootpipe.sentiment.cache import cache_key, find_cached
from tootpipe.services.embedded import Endpoints, cluster_of, up
from tootpipe.spark.session import get_spark

__all__ = ["context", "ingest_step", "stream_step", "backfill_step", "clean_step", "analytics_step",
           "batch_writer", "train_step", "train_variants_step", "baselines_step", "score_step", "problems_step", "dumps"]



def context(params_file: str | Path | None = "params/default.yaml",
            overrides: dict | None = None) -> tuple[Params, Endpoints]:
    """Validated parameters and the service endpoints (embedded services are started when needed)."""
    params = load(params_file, overrides)
    return params, up(params)


def ingest_step(params: Params, endpoints: Endpoints, *, max_toots: int | None = None,
                duration_s: float | None = None, while_live: str = "report") -> dict:
    """Publish the source into the topic. The bundled sample or a replay already published there (same source,
    filters and topic, and the topic still holds it) is not sent again: the recorded figures come back with
    `"reused": true` (`source.republish: true` sends it anyway; see :mod:`tootpipe.ingest.published`). One producer
    per topic: while another process ingests into it (`make live`), nothing is published and the result names that
    process (`"live"`) with the topic's offsets; `while_live="refuse"` (the CLI) raises WriterBusy instead."""
    lock = f"{cluster_of(endpoints)}/{params.kafka.topic}"
    try:
        with writer_lock(endpoints.database_url, "ingest", lock):
            out = _ingest(params, endpoints, max_toots or params.source.max_toots, duration_s)
    except WriterBusy:
        if while_live != "report":
            raise
        out = {"live": holder(endpoints.database_url, "ingest", lock) or "a producer that has just stopped",
               "topic_end_offsets": end_offsets(endpoints.bootstrap_servers, params.kafka.topic)}
    out["dlq_end_offsets"] = end_offsets(endpoints.bootstrap_servers, params.kafka.dlq_topic)
    return out


def _ingest(params: Params, endpoints: Endpoints, limit: int | None, duration_s: float | None) -> dict:
    bootstrap, topic = endpoints.bootstrap_servers, params.kafka.topic
    ensure_topics(bootstrap, [topic, params.kafka.dlq_topic], params.kafka.partitions,
                  params.kafka.replication_factor)
    key = None if params.source.republish else source_key(params, cluster_of(endpoints), limit)
    before = end_offsets(bootstrap, topic)
    out = already_published(key, start_offsets(bootstrap, topic), before) if key else None
    if out is None:
        out = _publish(params, endpoints, limit, duration_s)
    out["topic_end_offsets"] = end_offsets(bootstrap, topic)
    if key and not out.get("reused"):
        record_published(key, {k: v for k, v in out.items() if k != "topic_end_offsets"}, before,
                         out["topic_end_offsets"])
    return out


def _publish(params: Params, endpoints: Endpoints, max_toots: int | None, duration_s: float | None) -> dict:
    live = params.source.kind in ("poll", "stream")
    acked = state_dir() / "ingest" / f"acked-{cluster_of(endpoints)}-{params.kafka.topic}.json"
    resume = None
    if live and params.source.resume:
        hosts = [urlsplit(u).hostname or u for u in params.source.instances]
        resume = resume_points(endpoints.bootstrap_servers, params.kafka.topic, hosts, acked)
    tracker = AckedThrough(acked, start=resume) if live else None
    pub = Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic, tracker=tracker)
    try:
        stats = ingest(source_events(params, resume, holds=tracker), pub, params, max_toots=max_toots,
                       duration_s=duration_s or params.source.duration_s, source=params.source.kind)
    finally:
        pub.close()
    return stats.as_dict()


def stream_step(params: Params, endpoints: Endpoints) -> dict:
    """Stream what the topic holds into PostgreSQL and stop (an availableNow query). When the query has already
    committed every offset the topic holds, Spark is not started: the result says `"nothing_new": true`. When
    another process runs this query now (`make live`), none is started: the result is that query's progress and
    lag, with `"live"` naming it."""
    from tootpipe.stream.query import live_progress, nothing_new, run_available_now, running_elsewhere  # lazy: pyspark
    if who := running_elsewhere(params, endpoints):
        return live_progress(params, endpoints, who)
    return nothing_new(params, endpoints) or run_available_now(get_spark(params), params, endpoints)


def batch_writer(params: Params, endpoints: Endpoints):
    """The database's one batch writer (backfill, clean, analytics, scoring): waits `run.lock_wait_s` for another
    to finish, then refuses naming it (:mod:`tootpipe.postgres.locks`)."""
    return writer_lock(endpoints.database_url, "batch", wait_s=params.run.lock_wait_s)


def backfill_step(params: Params, endpoints: Endpoints, ranges: dict | None = None) -> dict:
    from tootpipe.batch.backfill import backfill  # lazy: pyspark
    with batch_writer(params, endpoints):
        return backfill(None, params, endpoints, ranges)  # Spark is started only when there is something to load


# the library modules each reusable batch step runs (a change to one of them runs the step again: step_runs)
_CLEAN_CODE = ("batch/backfill.py", "spark/transforms.py", "core/filters.py", "core/schema.py", "spark/postgres.py")
_ANALYTICS_CODE = ("batch/analytics.py", "spark/postgres.py", "spark/transforms.py")


def clean_step(params: Params, endpoints: Endpoints, *, force: bool = False) -> dict:
    """`toots_raw` -> `toots_clean`, `toots_rejects`; reused (`"reused": true`, nothing computed) when the raw
    rows, the filters and the code are those of the last complete run and its tables are intact (`force` runs it
    anyway; see :mod:`tootpipe.batch.reuse`)."""
    from tootpipe.batch.backfill import clean, load_raw, write_table  # lazy: pyspark
    url = endpoints.database_url

    def compute() -> dict:
        t0 = time.monotonic()
        cleaned, rejects = clean(load_raw(get_spark(params), url), params.filters)
        out = {name: write_table(url, name, df) for name, df in (("toots_clean", cleaned), ("toots_rejects", rejects))}
        return {**out, "seconds": round(time.monotonic() - t0, 2), "outputs": out}

    with batch_writer(params, endpoints):
        key = step_key(url, params.filters.model_dump(), _CLEAN_CODE,
                       "SELECT count(*) AS n, max(loaded_at) AS newest FROM toots_raw")
        return run_once(url, "clean", key, compute, force)


def analytics_step(params: Params, endpoints: Endpoints, *, force: bool = False) -> dict:
    """The analytics tables from `toots_clean`, then the stream/batch reconciliation; the tables are reused when
    `toots_clean` is the one the last complete run read (same `clean` run, same rows) and the parameters and code
    are unchanged (the reconciliation, plain SQL over the stream's tables too, is always recomputed)."""
    from tootpipe.batch.analytics import RECONCILIATION, analytics, load_clean, reconcile  # lazy: pyspark
    from tootpipe.spark.postgres import write_table  # lazy: pyspark
    url = endpoints.database_url

    def compute() -> dict:
        t0 = time.monotonic()
        clean_df = load_clean(get_spark(params), url).cache()  # read by all seven tables
        timings, counts = {}, {}
        for name, df in analytics(clean_df, params.analytics).items():
            t = time.monotonic()
            counts[name] = write_table(url, name, df)
            timings[name] = round(time.monotonic() - t, 2)
        clean_df.unpersist()
        return {"rows": counts, "seconds_per_table": timings, "seconds": round(time.monotonic() - t0, 2),
                "outputs": dict(counts)}

    with batch_writer(params, endpoints):
        key = step_key(url, params.analytics.model_dump(), _ANALYTICS_CODE,
                       "SELECT (SELECT fingerprint || finished_at::text FROM step_runs WHERE step = 'clean') AS "
                       "clean_run, (SELECT count(*) FROM toots_clean) AS n")
        out = run_once(url, "analytics", key, compute, force)
        t = time.monotonic()
        out["rows"][RECONCILIATION] = reconcile(url)
        out["seconds_per_table"][RECONCILIATION] = round(time.monotonic() - t, 2)
    return out


def train_step(params: Params, variant: str | None = None, *, tune: bool = False, retrain: bool = False) -> dict:
    """Train one variant (default sentiment.variant): see :func:`train_variants_step`."""
    variant = variant or params.sentiment.variant
    return train_variants_step(params, [variant], tune=tune, retrain=retrain)[variant]


def train_variants_step(params: Params, variants: list[str], *, tune: bool = False, retrain: bool = False) -> dict:
    """Train English models on the SemEval training file (without any tweet of the evaluation sets), each with its
    time-ordered cross-validated figure (the newest `sentiment.cv_folds` folds of the training pool), then score
    each once on both evaluation sets; the default variant's model set gets the XLM-T language models. Variants
    sharing a featurisation are fitted together. {variant: result}.

    A model set trained before from the same inputs (data files, variant, its parameters, the modelling code) is
    reused instead of trained again (`"cached": true`); `retrain` (or sentiment.retrain) forces training."""
    from tootpipe.sentiment.training import tune_reg_param  # lazy: pyspark
    s = params.sentiment
    regs = {v: s.reg_param if v == s.variant else None for v in variants}
    out: dict[str, dict] = {}
    if tune:
        regs[s.variant] = tune_reg_param(get_spark(params), params.path(s.train_path), s.variant,
                                         limit=s.train_limit)["best"]
    for v in variants:
        reuse = not (tune or retrain or s.retrain)
        cached = find_cached(params.path(s.model_dir), cache_key(params, v, regs[v])) if reuse else None
        if cached is not None:
            out[v] = cached
    missing = [v for v in variants if v not in out]
    if missing:
        from tootpipe.sentiment.training import train_missing  # lazy: pyspark
        out.update(train_missing(params, missing, regs))
    return {v: out[v] for v in variants}


def baselines_step(params: Params) -> dict:
    """The rule baselines (the original assignment's keyword auto-labelling, VADER alone) on both evaluation sets
    (plain Python on the files: they need no Spark)."""
    from tootpipe.sentiment.data import read_labelled  # lazy: pyspark
    from tootpipe.sentiment.training import BASELINES, evaluate_baseline  # lazy: pyspark
    sets = {"semeval2017_dev": params.sentiment.dev_path, "tweeteval_val": params.sentiment.val_path}
    rows = {ds: read_labelled(params.path(p)) for ds, p in sets.items()}
    return {name: {ds: evaluate_baseline(name, rows[ds]) for ds in sets} for name in BASELINES}


def score_step(params: Params, endpoints: Endpoints, model_path: str | None = None) -> dict:
    """Score the posts that are new, edited or scored by another model (the others are kept: `unchanged`)."""
    from tootpipe.sentiment.scoring import pending_posts, score_posts  # lazy: pyspark
    from tootpipe.sentiment.store import latest_model, load_models, model_version  # lazy: pyspark
    t0 = time.monotonic()
    with batch_writer(params, endpoints):
        path = model_path or latest_model(params.path(params.sentiment.model_dir))
        version = model_version(path)
        posts = pending_posts(endpoints.database_url, version)
        # the session first: loading a saved pipeline needs one, and a reused model set leaves none behind (loading
        # eight pipelines takes seconds: only when there is something to score)
        spark = get_spark(params) if not posts.empty else None
        models = load_models(path)[0] if spark is not None else {}
        out = score_posts(spark, models, version, endpoints.database_url, params.sentiment.languages, posts)
    out.update(model_version=version, seconds=round(time.monotonic() - t0, 2))
    return out


def problems_step(params: Params, endpoints: Endpoints):
    """Every record the pipeline could not use (see :func:`tootpipe.report.problems.problems`)."""
    from tootpipe.report.problems import problems  # lazy: pandas
    return problems(params, endpoints)


def dumps(d: dict) -> str:
    return json.dumps(d, indent=2, default=str)
