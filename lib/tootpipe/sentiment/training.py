"""Sentiment with Spark MLlib: train on real labelled tweets, select by time-ordered cross-validation, save, score.

Selection never looks at the evaluation sets: candidates are compared on the newest time fold of the training pool
(older folds train, :func:`cross_validate`); SemEval-2017 dev and TweetEval val are scored once per trained model
and reported. Variants sharing a featurisation share its fit when trained together (:func:`fit_variants`).
Models are saved by :mod:`tootpipe.sentiment.store`, and score toots through :mod:`tootpipe.sentiment.scoring`.
"""
from __future__ import annotations

import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.ml import Estimator, Pipeline, PipelineModel
from pyspark.sql import DataFrame, SparkSession, functions as F

from tootpipe.core.config import Params
from tootpipe.sentiment.cache import cache_key
from tootpipe.sentiment.data import (LABELS, XLMT_LANGUAGES, read_labelled, read_xlmt, time_folds, to_frame,
                                     with_class_weights, without_overlap)
from tootpipe.sentiment.evaluation import (BASELINES, evaluate, evaluate_baseline, evaluate_sets,
                                           metrics_from_predictions)
from tootpipe.sentiment.pipelines import (DEFAULT_VARIANT, VARIANTS, VaderFeatures, build_pipeline, classifier,
                                          featuriser)
from tootpipe.spark.session import get_spark

__all__ = ["LABELS", "load_labelled", "load_xlmt", "build_pipeline", "fit_variants", "cross_validate", "train",
           "tune_reg_param", "evaluate", "evaluate_sets", "evaluate_baseline", "metrics_from_predictions",
           "fit_language_models", "train_language_models", "VaderFeatures", "VARIANTS", "DEFAULT_VARIANT", "BASELINES",
           "XLMT_LANGUAGES", "REG_STEPS", "train_missing", "publish_trained"]

REG_STEPS = (0.25, 0.5, 1.0, 2.0, 4.0)
Candidate = tuple  # (variant name, reg_param or None for the variant's own)


def load_labelled(spark: SparkSession, path: str | Path, limit: int | None = None,
                  held_out: tuple = ()) -> DataFrame:
    """A labelled TSV as a DataFrame (text, label_name, label, tweet_id), without the tweets of the `held_out`
    files (see :mod:`tootpipe.sentiment.data`)."""
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


def fit_language_models(spark: SparkSession, xlmt_dir: str | Path, languages: list[str], min_recall: float = 0.45,
                        threads: int = 2, save_to: str | Path | None = None,
                        variant: str = "balanced_ngrams") -> dict:
    """One `variant` model per XLM-T language (trained on its train split, measured on its val split); a
    model whose macro-recall stays below `min_recall` (chance is 0.33) is no better than a guess and is not kept
    (None: that language's toots are marked unsupported). English keeps the SemEval model. The languages are
    fitted `threads` at a time (Spark runs the jobs of several threads at once; these small fits are mostly
    per-job latency); with `save_to`, each kept model is written to `<save_to>/languages/<code>/model` as soon as
    it is fitted. Returns {code: (model or None, metrics)}."""
    codes = [code for code in languages if code != "en" and code in XLMT_LANGUAGES
             and (Path(xlmt_dir) / XLMT_LANGUAGES[code] / "train_text.txt").exists()]

    def one(code: str) -> tuple:
        folder = Path(xlmt_dir) / XLMT_LANGUAGES[code]
        candidate = (variant, None)
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


def train_missing(params: Params, variants: list[str], regs: dict) -> dict:
    """Three independent jobs run in three threads at once (each fit's classifier is one Spark task, so a 2-core
    machine runs two at a time): the cross-validation; the final fits, each then scored on both evaluation sets and
    written to a staging folder; the language models, each written into the default's staging folder once fitted.
    Each model set is then published as a version (default last: the newest is the one `tootpipe sentiment score`
    picks). `train_s` and `cv_s` are thus measured on a shared machine (bench/sentiment.py times each alone)."""
    from tootpipe.sentiment.store import stage_model  # lazy: pyspark
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
                                     save_to=staged[s.variant], variant=s.language_variant)
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
        return publish_trained(params, regs, staged, fits, {"cv": cv, "cv_s": cv_s}, (kept, lang_metrics))
    finally:
        pool.unpersist()
        for folder in staged.values():  # what a failed run staged and never published
            shutil.rmtree(folder, ignore_errors=True)


def publish_trained(params: Params, regs: dict, staged: dict, fits: dict, cv: dict, languages: tuple) -> dict:
    """Each staged model set becomes a version, its metrics written (the default last: the newest)."""
    from tootpipe.sentiment.store import publish_model, remember_models  # lazy: pyspark
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
