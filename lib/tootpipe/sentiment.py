"""Sentiment with Spark MLlib: train on real labelled tweets, select by time-ordered cross-validation, save, score.

Selection never looks at the evaluation sets: candidates are compared on the newest time fold of the training pool
(older folds train, :func:`cross_validate`); SemEval-2017 dev and TweetEval val are scored once per trained model
and reported. Variants sharing a featurisation share its fit when trained together (:func:`fit_variants`).
Models are saved under `models/sentiment/<version>/` (the Spark pipeline in `model/` and `metrics.json`); the
newest version is the default. Scoring writes `mastodon_sentiments` idempotently (upsert on `uri`); toots in a
language without a model are marked `unsupported`, never guessed.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .sentiment_data import (LABELS, XLMT_LANGUAGES, read_labelled, read_xlmt, time_folds, to_frame,
                             with_class_weights, without_overlap)
from .sentiment_eval import BASELINES, evaluate, evaluate_baseline, evaluate_sets, metrics_from_predictions
from .sentiment_models import DEFAULT_VARIANT, VARIANTS, VaderFeatures, build_pipeline, classifier, featuriser

__all__ = ["LABELS", "load_labelled", "load_xlmt", "build_pipeline", "fit_variants", "cross_validate", "train",
           "tune_reg_param", "evaluate", "evaluate_sets", "evaluate_baseline", "metrics_from_predictions", "save_model",
           "stage_model", "publish_model",
           "latest_model", "model_version", "load_model", "load_models", "remember_models", "fit_language_models",
           "train_language_models", "predict",
           "score_posts", "pending_posts", "VaderFeatures", "VARIANTS", "DEFAULT_VARIANT", "BASELINES",
           "XLMT_LANGUAGES", "REG_STEPS"]

REG_STEPS = (0.25, 0.5, 1.0, 2.0, 4.0)
Candidate = tuple  # (variant name, reg_param or None for the variant's own)


def load_labelled(spark: SparkSession, path: str | Path, limit: int | None = None,
                  held_out: tuple = ()) -> DataFrame:
    """A labelled TSV as a DataFrame (text, label_name, label, tweet_id), without the tweets of the `held_out`
    files (see :mod:`tootpipe.sentiment_data`)."""
    rows = read_labelled(path, limit)
    if held_out:
        rows = without_overlap(rows, *[read_labelled(p) for p in held_out])
    return to_frame(spark, rows)


def load_xlmt(spark: SparkSession, folder: str | Path, split: str) -> DataFrame:
    """An XLM-T split; the train split never holds a tweet of the val or test split."""
    rows = read_xlmt(folder, split)
    if split == "train":
        rows = without_overlap(rows, *[read_xlmt(folder, s) for s in ("val", "test")
                                       if (Path(folder) / f"{s}_text.txt").exists()])
    return to_frame(spark, rows)


def _weighted(df: DataFrame) -> DataFrame:
    return df if "weight" in df.columns else with_class_weights(df)


def _featurise(pipeline: Pipeline, df: DataFrame) -> tuple[PipelineModel, DataFrame]:
    """Fit the featuriser `pipeline` on `df`; returns (its model, `df` featurised for the classifier). The output
    of the leading transformers (text cleaning, tokens, n-grams) is cached: every estimator after them (the
    vocabularies, IDF) and the featurised output read it instead of tokenising the texts again. The featurised
    output (features without their ML attribute metadata, label, weight) is a local checkpoint in one partition:
    see :func:`fit_variants`."""
    stages = pipeline.getStages()
    first = next((i for i, st in enumerate(stages) if isinstance(st, Estimator)), len(stages))
    prefix = PipelineModel(stages=stages[:first])
    tokens = prefix.transform(df).cache()
    try:
        tail = Pipeline(stages=stages[first:]).fit(tokens)
        x = (tail.transform(tokens).select(F.col("features").alias("features", metadata={}), "label", "weight")
             .localCheckpoint().coalesce(1))
    finally:
        tokens.unpersist()
    return PipelineModel(stages=[*prefix.stages, *tail.stages]), x


def fit_variants(df: DataFrame, candidates: list[Candidate]) -> dict[Candidate, tuple[PipelineModel, float]]:
    """Fit each (variant, reg_param) on `df`; candidates with the same featurisation share one featuriser fit and
    its featurised output. Returns {candidate: (PipelineModel, seconds)}, seconds = its share of the featuriser fit
    plus its classifier fit.

    The classifier reads the features without their ML attribute metadata (one name per feature: 1.9 MB for the
    default variant), from a local checkpoint (no lineage back to the featuriser's vocabularies), as one partition:
    MLlib's logistic regression runs a Spark job per iteration, and each task deserialises its input's plan, so
    with the metadata and the lineage each iteration cost about 1 s here whatever the rows (measured on 48,641
    tweets: 20.1 s per fit before, 4.2 s after; the coefficients are the same)."""
    df = _weighted(df)
    out = {}
    groups: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(VARIANTS[c[0]].feature_key, []).append(c)
    for members in groups.values():
        t0 = time.monotonic()
        feats, x = _featurise(featuriser(members[0][0]), df)
        shared = time.monotonic() - t0
        for name, reg in members:
            t1 = time.monotonic()
            lr = classifier(name, reg).fit(x)
            out[(name, reg)] = (PipelineModel(stages=[*feats.stages, lr]),
                                shared / len(members) + time.monotonic() - t1)
    return out


def cross_validate(df: DataFrame, candidates: list[Candidate], n_folds: int = 5, scored: int = 1) -> dict:
    """Forward-chaining cross-validation in time order: the pool is cut into `n_folds` slices by tweet id; each of
    the newest `scored` slices is scored by the candidates fitted on all older slices. Returns {candidate:
    {"folds": [metrics...], "macro_recall": newest fold's, "macro_recall_ci": its bootstrap interval,
    "mean_macro_recall": over the scored folds}}."""
    df = time_folds(df, n_folds).cache()
    results: dict[Candidate, list] = {c: [] for c in candidates}
    for k in range(n_folds - scored, n_folds):
        test = df.where(F.col("fold") == k).cache()
        for c, (model, _) in fit_variants(df.where(F.col("fold") < k), candidates).items():
            results[c].append({"fold": k, **evaluate(model, test)})
        test.unpersist()
    df.unpersist()
    return {c: {"folds": folds, "macro_recall": folds[-1]["macro_recall"],
                "macro_recall_ci": folds[-1]["macro_recall_ci"],
                "mean_macro_recall": round(sum(f["macro_recall"] for f in folds) / len(folds), 4)}
            for c, folds in results.items()}


def train(spark: SparkSession, train_path: str | Path, variant: str = DEFAULT_VARIANT,
          limit: int | None = None, reg_param: float | None = None) -> tuple[PipelineModel, float]:
    """Fit a variant on the training file only; returns (model, seconds)."""
    return fit_variants(load_labelled(spark, train_path, limit), [(variant, reg_param)])[(variant, reg_param)]


def tune_reg_param(spark: SparkSession, train_path: str | Path, variant: str = DEFAULT_VARIANT,
                   grid: tuple | None = None, limit: int | None = None) -> dict:
    """Choose regParam on the training data only, by :func:`cross_validate` (newest fold), among `grid` (default:
    the variant's own value times 1/4, 1/2, 1, 2 and 4). Returns {"best": value, "scores": {value: macro_recall}}."""
    grid = grid or tuple(VARIANTS[variant].reg_param * f for f in REG_STEPS)
    cv = cross_validate(load_labelled(spark, train_path, limit), [(variant, reg) for reg in grid])
    scores = {reg: cv[(variant, reg)]["macro_recall"] for reg in grid}
    return {"best": max(scores, key=scores.get), "scores": scores, "selection": "newest time fold"}


def stage_model(model: PipelineModel, model_dir: str | Path, folder: str | Path | None = None) -> Path:
    """Write a pipeline into `folder` (default: a new one) under `<model_dir>/.staging/`, where no reader looks
    (:func:`latest_model` and the model cache see versions only); :func:`publish_model` makes it a version."""
    import uuid
    folder = Path(folder) if folder else Path(model_dir) / ".staging" / uuid.uuid4().hex
    model.write().overwrite().save(str(folder / "model"))
    return folder


def publish_model(staged: str | Path, model_dir: str | Path, metrics: dict) -> Path:
    """A staged model set becomes the newest version: metrics.json is written into it, then the folder is renamed
    to `<model_dir>/<UTC version>/` in one step (a crash leaves no half-written version)."""
    version = base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    n = 1
    while (Path(model_dir) / version).exists():  # two saves in one second: later ones sort after
        n += 1
        version = f"{base}-{n}"
    (Path(staged) / "metrics.json").write_text(json.dumps({"version": version, **metrics}, indent=2))
    out = Path(model_dir) / version
    Path(staged).rename(out)
    return out


def save_model(model: PipelineModel, model_dir: str | Path, metrics: dict) -> Path:
    """Save under `<model_dir>/<UTC version>/` with metrics.json (staged, then published); returns the folder."""
    return publish_model(stage_model(model, model_dir), model_dir, metrics)


def latest_model(model_dir: str | Path) -> Path:
    versions = sorted(p for p in Path(model_dir).glob("*/model") if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"no trained model under {model_dir}: run `tootpipe sentiment train`")
    return versions[-1].parent


def fit_language_models(spark: SparkSession, xlmt_dir: str | Path, languages: list[str], min_recall: float = 0.45,
                        threads: int = 2, save_to: str | Path | None = None) -> dict:
    """One `balanced_ngrams` model per XLM-T language (trained on its train split, measured on its val split); a
    model whose macro-recall stays below `min_recall` (chance is 0.33) is no better than a guess and is not kept
    (None: that language's toots are marked unsupported). English keeps the SemEval model. The languages are
    fitted `threads` at a time (Spark runs the jobs of several threads at once; these small fits are mostly
    per-job latency); with `save_to`, each kept model is written to `<save_to>/languages/<code>/model` as soon as
    it is fitted. Returns {code: (model or None, metrics)}."""
    from concurrent.futures import ThreadPoolExecutor
    codes = [code for code in languages if code != "en" and code in XLMT_LANGUAGES
             and (Path(xlmt_dir) / XLMT_LANGUAGES[code] / "train_text.txt").exists()]

    def one(code: str) -> tuple:
        folder = Path(xlmt_dir) / XLMT_LANGUAGES[code]
        candidate = ("balanced_ngrams", None)
        model, seconds = fit_variants(load_xlmt(spark, folder, "train"), [candidate])[candidate]
        m = evaluate(model, load_xlmt(spark, folder, "val"))
        kept = m["macro_recall"] >= min_recall
        if kept and save_to is not None:
            model.write().overwrite().save(str(Path(save_to) / "languages" / code / "model"))
        return (model if kept else None), {"xlmt_val": m, "train_s": round(seconds, 1), "kept": kept}

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(codes, pool.map(one, codes)))


def train_language_models(spark: SparkSession, xlmt_dir: str | Path, version_dir: str | Path,
                          languages: list[str], min_recall: float = 0.45) -> dict:
    """:func:`fit_language_models`, each kept model saved under `<version_dir>/languages/<code>/model`; returns
    their metrics per code."""
    fitted = fit_language_models(spark, xlmt_dir, languages, min_recall, save_to=version_dir)
    return {code: metrics for code, (_, metrics) in fitted.items()}


_SAVED_SETS: dict[str, dict] = {}  # model sets this process saved, by folder: what it wrote, kept in memory


def remember_models(path: str | Path, models: dict[str, PipelineModel]) -> None:
    """Keep a model set this process has just saved under `path`, so that :func:`load_models` of that folder in
    the same process (notebook 05 scores right after training) does not read back from disk what it wrote
    (loading eight pipelines takes 12-20 s here: each stage is read by small Spark jobs)."""
    _SAVED_SETS[str(Path(path).resolve())] = dict(models)


def load_models(path: str | Path) -> tuple[dict[str, PipelineModel], str]:
    """The model set of a version: {"en": SemEval model, code: XLM-T model, ...} and the version (the language
    models are read in parallel)."""
    from concurrent.futures import ThreadPoolExecutor
    saved = _SAVED_SETS.get(str(Path(path).resolve()))
    if saved is not None:
        return dict(saved), model_version(path)
    subs = sorted(Path(path).glob("languages/*/model"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        english = pool.submit(load_model, path)
        others = pool.map(lambda sub: PipelineModel.load(str(sub)), subs)
        models = {sub.parent.name: m for sub, m in zip(subs, others)}
        model, version = english.result()
    return {"en": model, **models}, version


def model_version(path: str | Path) -> str:
    """The version of a model set folder (`<version>/`) or of its pipeline folder (`<version>/model`)."""
    p = Path(path)
    return p.name if (p / "model").is_dir() else p.parent.name


def load_model(path: str | Path) -> tuple[PipelineModel, str]:
    p = Path(path)
    return PipelineModel.load(str(p / "model" if (p / "model").is_dir() else p)), model_version(p)


def predict(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Adds `sentiment_label` (name), `sentiment` (-1/0/1) and `probability_max`; works on empty, emoji-only and
    very long texts (they get the model's prior)."""
    from pyspark.ml.functions import vector_to_array
    out = model.transform(df.withColumn("text", F.coalesce(F.col("text"), F.lit(""))))
    probs = vector_to_array("probability")
    labels = F.array(*[F.lit(l) for l in LABELS])
    return (out.withColumn("probabilities", probs)
            .withColumn("sentiment", F.col("prediction").cast("int") - 1)
            .withColumn("sentiment_label", labels[F.col("prediction").cast("int")])
            .withColumn("probability_max", F.array_max("probabilities")))


_PENDING = """
SELECT p.uri, p.language, p.content AS text, md5(coalesce(p.content, '')) AS text_md5
FROM mastodon_posts p LEFT JOIN mastodon_sentiments s USING (uri)
WHERE s.uri IS NULL OR s.model_version IS DISTINCT FROM %(version)s
   OR s.text_md5 IS DISTINCT FROM md5(coalesce(p.content, '')) OR s.language IS DISTINCT FROM p.language"""


def pending_posts(url: str, version: str):
    """The posts `mastodon_sentiments` does not hold as scored by `version` on their current text and language
    (new, edited, or scored by another model), as a pandas DataFrame (uri, language, text, text_md5)."""
    from .db import ensure_schema, query_df
    ensure_schema(url)
    return query_df(url, _PENDING, {"version": version})


def score_posts(spark: SparkSession | None, models: dict[str, PipelineModel], version: str, url: str,
                languages: list[str], posts=None) -> dict:
    """Score the `pending_posts` (or the given ones) into `mastodon_sentiments` (upsert on uri), each language
    with its own model; a toot whose language has no model (or is not in `languages`) is marked unsupported.
    Sentiments of posts that are gone are deleted. Posts already scored by `version` on the same text are left
    as they are (`unchanged` in the result). `spark` is needed only when there are posts to score."""
    import pyarrow.compute as pc
    from .db import scalar, transaction
    posts = pending_posts(url, version) if posts is None else posts
    unchanged = int(scalar(url, "SELECT count(*) FROM mastodon_posts")) - len(posts)
    if posts.empty:
        with transaction(url) as conn, conn.cursor() as cur:
            cur.execute(_DELETE_GONE)
        return {"scored": 0, "unsupported": 0, "unchanged": unchanged}
    arrow = _predict_posts(spark, models, languages, posts).withColumn("model_version", F.lit(version)).toArrow()
    _upsert_sentiments(url, arrow)
    n_unsup = pc.sum(pc.equal(arrow["sentiment_name"], "unsupported")).as_py() or 0
    return {"scored": arrow.num_rows - n_unsup, "unsupported": n_unsup, "unchanged": unchanged}


_DELETE_GONE = "DELETE FROM mastodon_sentiments s WHERE NOT EXISTS (SELECT 1 FROM mastodon_posts p WHERE p.uri = s.uri)"


def _predict_posts(spark: SparkSession, models: dict, languages: list[str], posts) -> DataFrame:
    df = spark.createDataFrame(posts, "uri string, language string, text string, text_md5 string")
    usable = [lang for lang in languages if lang in models]
    lang = F.coalesce(F.col("language"), F.lit(""))
    supported = lang.isin(*usable) if usable else F.lit(False)
    scored = None
    for code in usable:
        part = predict(models[code], df.where(lang == code)).select(
            "uri", "language", "sentiment", F.col("sentiment_label").alias("sentiment_name"),
            F.col("probability_max").alias("probability"), "text_md5")
        scored = part if scored is None else scored.unionByName(part)
    unsupported = df.where(~supported).select(
        "uri", "language", F.lit(None).cast("int").alias("sentiment"), F.lit("unsupported").alias("sentiment_name"),
        F.lit(None).cast("double").alias("probability"), "text_md5")
    return unsupported if scored is None else scored.unionByName(unsupported)


def _upsert_sentiments(url: str, arrow) -> None:
    from .db import copy_arrow, transaction
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE stage_sent (uri text, language text, sentiment int, sentiment_name text, "
                    "probability double precision, text_md5 text, model_version text) ON COMMIT DROP")
        copy_arrow(cur, "stage_sent", arrow.select(["uri", "language", "sentiment", "sentiment_name", "probability",
                                                    "text_md5", "model_version"]))
        cur.execute("""INSERT INTO mastodon_sentiments (uri, language, sentiment, sentiment_name, probability,
                       text_md5, model_version) SELECT uri, language, sentiment, sentiment_name, probability,
                       text_md5, model_version FROM stage_sent ON CONFLICT (uri) DO UPDATE SET
                       language = EXCLUDED.language, sentiment = EXCLUDED.sentiment,
                       sentiment_name = EXCLUDED.sentiment_name, probability = EXCLUDED.probability,
                       text_md5 = EXCLUDED.text_md5, model_version = EXCLUDED.model_version, scored_at = now()""")
        cur.execute(_DELETE_GONE)
