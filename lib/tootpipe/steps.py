"""One function per pipeline step, shared by the CLI and the notebooks (which only call and narrate).

Each returns a plain dict of what it did, suitable for printing and for the report index.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import Params, load
from .services import Endpoints, cluster_of, up

__all__ = ["context", "ingest_step", "stream_step", "backfill_step", "clean_step", "analytics_step",
           "train_step", "train_variants_step", "baselines_step", "score_step", "problems", "reason_class",
           "bench_result", "bench_variants", "dumps"]



def context(params_file: str | Path | None = "params/default.yaml",
            overrides: dict | None = None) -> tuple[Params, Endpoints]:
    """Validated parameters and the service endpoints (embedded services are started when needed)."""
    params = load(params_file, overrides)
    return params, up(params)


def ingest_step(params: Params, endpoints: Endpoints, *, max_toots: int | None = None,
                duration_s: float | None = None) -> dict:
    """Publish the source into the topic. The bundled sample or a replay already published there (same source,
    filters and topic, and the topic still holds it) is not sent again: the recorded figures come back with
    `"reused": true` (`source.republish: true` sends it anyway; see :mod:`tootpipe.published`)."""
    from .kafka_io import end_offsets, ensure_topics, start_offsets
    from .published import already_published, record_published, source_key
    bootstrap, topic, limit = endpoints.bootstrap_servers, params.kafka.topic, max_toots or params.source.max_toots
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
    out["dlq_end_offsets"] = end_offsets(bootstrap, params.kafka.dlq_topic)
    return out


def _publish(params: Params, endpoints: Endpoints, max_toots: int | None, duration_s: float | None) -> dict:
    from .kafka_io import Publisher
    from .mastodon_source import ingest, source_events
    pub = Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
    resume = None
    if params.source.kind in ("poll", "stream") and params.source.resume:
        from urllib.parse import urlsplit
        from .kafka_io import newest_status_ids
        hosts = [urlsplit(u).hostname or u for u in params.source.instances]
        resume = newest_status_ids(endpoints.bootstrap_servers, params.kafka.topic, hosts)
    try:
        stats = ingest(source_events(params, resume), pub, params, max_toots=max_toots,
                       duration_s=duration_s or params.source.duration_s, source=params.source.kind)
    finally:
        pub.close()
    return stats.as_dict()


def stream_step(params: Params, endpoints: Endpoints) -> dict:
    """Stream what the topic holds into PostgreSQL and stop (an availableNow query). When the query has already
    committed every offset the topic holds, Spark is not started: the result says `"nothing_new": true`."""
    from .spark_session import get_spark
    from .stream_query import nothing_new, run_available_now
    return nothing_new(params, endpoints) or run_available_now(get_spark(params), params, endpoints)


def backfill_step(params: Params, endpoints: Endpoints, ranges: dict | None = None) -> dict:
    from .batch import backfill
    return backfill(None, params, endpoints, ranges)  # Spark is started only when there is something to load


# the library modules each reusable batch step runs (a change to one of them runs the step again: step_runs)
_CLEAN_CODE = ("batch.py", "transforms.py", "filters.py", "schema.py", "spark_pg.py")
_ANALYTICS_CODE = ("analytics.py", "spark_pg.py", "transforms.py")


def clean_step(params: Params, endpoints: Endpoints, *, force: bool = False) -> dict:
    """`toots_raw` -> `toots_clean`, `toots_rejects`; reused (`"reused": true`, nothing computed) when the raw
    rows, the filters and the code are those of the last complete run and its tables are intact (`force` runs it
    anyway; see :mod:`tootpipe.step_runs`)."""
    from .batch import clean, load_raw, write_table
    from .spark_session import get_spark
    from .step_runs import fingerprint, run_once
    url = endpoints.database_url

    def compute() -> dict:
        t0 = time.monotonic()
        cleaned, rejects = clean(load_raw(get_spark(params), url), params.filters)
        out = {name: write_table(url, name, df) for name, df in (("toots_clean", cleaned), ("toots_rejects", rejects))}
        return {**out, "seconds": round(time.monotonic() - t0, 2), "outputs": out}

    key = fingerprint(url, params.filters.model_dump(), _CLEAN_CODE,
                      "SELECT count(*) AS n, max(loaded_at) AS newest FROM toots_raw")
    return run_once(url, "clean", key, compute, force)


def analytics_step(params: Params, endpoints: Endpoints, *, force: bool = False) -> dict:
    """The analytics tables from `toots_clean`, then the stream/batch reconciliation; the tables are reused when
    `toots_clean` is the one the last complete run read (same `clean` run, same rows) and the parameters and code
    are unchanged (the reconciliation, plain SQL over the stream's tables too, is always recomputed)."""
    from .analytics import RECONCILIATION, analytics, load_clean, reconcile
    from .spark_pg import write_table
    from .spark_session import get_spark
    from .step_runs import fingerprint, run_once
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

    key = fingerprint(url, params.analytics.model_dump(), _ANALYTICS_CODE,
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
    from .model_cache import cache_key, find_cached
    from .sentiment import tune_reg_param
    from .spark_session import get_spark
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
        out.update(_train_missing(params, missing, regs))
    return {v: out[v] for v in variants}


def _train_missing(params: Params, variants: list[str], regs: dict) -> dict:
    """Three independent jobs run in three threads at once (each fit's classifier is one Spark task, so a 2-core
    machine runs two at a time): the cross-validation; the final fits, each then scored on both evaluation sets and
    written to a staging folder; the language models, each written into the default's staging folder once fitted.
    Each model set is then published as a version (default last: the newest is the one `tootpipe sentiment score`
    picks). `train_s` and `cv_s` are thus measured on a shared machine (bench/sentiment.py times each alone)."""
    import shutil
    import uuid
    from concurrent.futures import ThreadPoolExecutor
    from .sentiment import cross_validate, evaluate_sets, fit_language_models, fit_variants, load_labelled, stage_model
    from .spark_session import get_spark
    s = params.sentiment
    spark = get_spark(params)
    model_dir = params.path(s.model_dir)
    held_out = (params.path(s.dev_path), params.path(s.val_path))
    pool = load_labelled(spark, params.path(s.train_path), s.train_limit, held_out=held_out).cache()
    candidates = [(v, regs[v]) for v in variants]
    sets = {name: load_labelled(spark, p).cache() for name, p in zip(("semeval2017_dev", "tweeteval_val"), held_out)}
    staged = {v: model_dir / ".staging" / uuid.uuid4().hex for v in variants}

    def final_fits() -> dict:
        out = {}
        for (v, _), (model, seconds) in fit_variants(pool, candidates).items():
            out[v] = model, seconds, evaluate_sets(model, sets)
            stage_model(model, model_dir, staged[v])
        return out

    def language_models() -> tuple:
        fitted = fit_language_models(spark, params.path(s.xlmt_dir), s.languages, s.min_language_recall,
                                     save_to=staged[s.variant])
        return ({code: m for code, (m, _) in fitted.items() if m is not None},
                {code: metrics for code, (_, metrics) in fitted.items()})

    try:
        with ThreadPoolExecutor(max_workers=3) as ex:
            t0 = time.monotonic()
            cv_job = ex.submit(cross_validate, pool, candidates, scored=s.cv_folds)
            fit_job = ex.submit(final_fits)
            lang_job = ex.submit(language_models) if s.variant in variants else None
            cv = cv_job.result()
            cv_s = (time.monotonic() - t0) / len(variants)
            fits = fit_job.result()
            kept, lang_metrics = lang_job.result() if lang_job else ({}, {})
        return _publish_trained(params, regs, staged, fits, {"cv": cv, "cv_s": cv_s}, (kept, lang_metrics))
    finally:
        pool.unpersist()
        for folder in staged.values():  # what a failed run staged and never published
            shutil.rmtree(folder, ignore_errors=True)


def _publish_trained(params: Params, regs: dict, staged: dict, fits: dict, cv: dict, languages: tuple) -> dict:
    """Each staged model set becomes a version, its metrics written (the default last: the newest)."""
    from .model_cache import cache_key
    from .sentiment import publish_model, remember_models
    s = params.sentiment
    kept, lang_metrics = languages
    out = {}
    for v in sorted(fits, key=lambda v: v == s.variant):
        model, seconds, scores = fits[v]
        metrics = {"variant": v, "reg_param": regs[v], "train_s": round(seconds, 1), "cv_s": round(cv["cv_s"], 1),
                   "cache_key": cache_key(params, v, regs[v]), "cv": cv["cv"][(v, regs[v])], **scores}
        if v == s.variant and lang_metrics:
            metrics["languages"] = lang_metrics
        path = publish_model(staged[v], params.path(s.model_dir), metrics)
        # notebook 05 scores with it next: not read back from disk
        remember_models(path, {"en": model, **(kept if v == s.variant else {})})
        out[v] = {"model": str(path), "cached": False, **metrics}
    return out


def baselines_step(params: Params) -> dict:
    """The rule baselines (the original assignment's keyword auto-labelling, VADER alone) on both evaluation sets
    (plain Python on the files: they need no Spark)."""
    from .sentiment import BASELINES, evaluate_baseline
    from .sentiment_data import read_labelled
    sets = {"semeval2017_dev": params.sentiment.dev_path, "tweeteval_val": params.sentiment.val_path}
    rows = {ds: read_labelled(params.path(p)) for ds, p in sets.items()}
    return {name: {ds: evaluate_baseline(name, rows[ds]) for ds in sets} for name in BASELINES}


def score_step(params: Params, endpoints: Endpoints, model_path: str | None = None) -> dict:
    """Score the posts that are new, edited or scored by another model (the others are kept: `unchanged`)."""
    from .sentiment import latest_model, load_models, model_version, pending_posts, score_posts
    from .spark_session import get_spark
    path = model_path or latest_model(params.path(params.sentiment.model_dir))
    version = model_version(path)
    t0 = time.monotonic()
    posts = pending_posts(endpoints.database_url, version)
    # the session first: loading a saved pipeline needs one, and a reused model set leaves none behind (loading
    # eight pipelines takes seconds: only when there is something to score)
    spark = get_spark(params) if not posts.empty else None
    models = load_models(path)[0] if spark is not None else {}
    out = score_posts(spark, models, version, endpoints.database_url, params.sentiment.languages, posts)
    out.update(model_version=version, seconds=round(time.monotonic() - t0, 2))
    return out


def problems(params: Params, endpoints: Endpoints, limit: int = 20000):
    """Every record the pipeline could not use, as a DataFrame (stage, reason, reason_class): dead letters from the
    DLQ topic, the stream's `stream_errors`, the batch's `toots_rejects`."""
    import pandas as pd
    from .db import query_df, table_counts
    from .kafka_io import KafkaUnavailable, export, partitions_for
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
    import re
    text = str(reason or "unknown")
    return re.split(r":|\s\(|\s'|\s\"", text, maxsplit=1)[0].strip()[:80] or "unknown"


def bench_result(name: str):
    """The last `bench/<name>.py` result (bench/results/<name>.json) as a one-column table, flat keys only; or a
    sentence saying how to produce it."""
    import pandas as pd
    from .config import project_root
    path = project_root() / "bench" / "results" / f"{name}.json"
    if not path.exists():
        return f"no benchmark result yet: run `python bench/{name}.py`"
    data = json.loads(path.read_text())
    return pd.Series({k: v for k, v in data.items() if not isinstance(v, (dict, list))}, dtype=object) \
        .to_frame(f"bench/{name}.py")


def bench_variants(name: str = "sentiment"):
    """The per-variant table of the last `bench/<name>.py` result (its "variants" entry), or a sentence."""
    import pandas as pd
    from .config import project_root
    path = project_root() / "bench" / "results" / f"{name}.json"
    variants = json.loads(path.read_text()).get("variants") if path.exists() else None
    if not variants:
        return f"no per-variant benchmark result yet: run `python bench/{name}.py`"
    return pd.DataFrame(variants).T


def dumps(d: dict) -> str:
    return json.dumps(d, indent=2, default=str)
