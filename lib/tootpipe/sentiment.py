"""Sentiment with Spark MLlib: train on real labelled tweets, measure, save, score toots.

Models are saved under `models/sentiment/<version>/` (the Spark pipeline in `model/` and `metrics.json`); the
newest version is the default. Scoring writes `mastodon_sentiments` idempotently (upsert on `uri`); toots in a
language without a model are marked `unsupported`, never guessed.
"""
from __future__ import annotations

import csv
import gzip
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import (IDF, CountVectorizer, NGram, RegexTokenizer, SQLTransformer, StopWordsRemover,
                                VectorAssembler)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["LABELS", "load_labelled", "build_pipeline", "train", "evaluate", "metrics_from_predictions",
           "save_model", "latest_model", "load_model", "predict", "score_posts", "VARIANTS"]

LABELS = ["negative", "neutral", "positive"]  # label index 0, 1, 2; sentiment value index - 1
VARIANTS = ("seed", "balanced_ngrams")


def load_labelled(spark: SparkSession, path: str | Path, limit: int | None = None) -> DataFrame:
    """A TSV (optionally gzipped) with header columns `text` and `label` (negative/neutral/positive) as a
    DataFrame (text, label_name, label). Rows with another label are dropped."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header with columns `text` and `label`, found {reader.fieldnames}")
        rows = [(r["text"] or "", r["label"].strip().lower()) for r in reader if r.get("label")]
    rows = [(t, l, float(LABELS.index(l))) for t, l in rows if l in LABELS]
    if limit:
        rows = rows[:limit]
    return spark.createDataFrame(rows, "text string, label_name string, label double")


# Mastodon/Twitter text preprocessing, in Spark SQL so it is saved inside the pipeline.
_PREPROCESS = """
SELECT *, regexp_replace(regexp_replace(regexp_replace(regexp_replace(lower(coalesce(text, '')),
        'https?://\\\\S+', ' xurl '), '@\\\\w+', ' xuser '), '#(\\\\w+)', ' $1 '),
        "n't\\\\b", ' not') AS clean_text
FROM __THIS__
"""

_TOKEN_PATTERN = r"[a-z0-9']+|[!?]+|[:;=8][-o*']?[)(\]\[dDpP/\\|]|[\x{2600}-\x{27BF}\x{1F300}-\x{1FAFF}]"


def build_pipeline(variant: str = "balanced_ngrams") -> Pipeline:
    """`seed`: the seed's RegexTokenizer -> StopWordsRemover -> CountVectorizer -> IDF -> LogisticRegression.
    `balanced_ngrams`: URL/mention masking, negation kept (no stop-word removal), emoji and emoticons as tokens,
    word unigrams + bigrams, and class weights that balance the three classes."""
    if variant == "seed":
        return Pipeline(stages=[
            RegexTokenizer(inputCol="text", outputCol="words", pattern="\\W"),
            StopWordsRemover(inputCol="words", outputCol="filtered"),
            CountVectorizer(inputCol="filtered", outputCol="tf", vocabSize=20000, minDF=2),
            IDF(inputCol="tf", outputCol="features"),
            LogisticRegression(maxIter=50, regParam=0.01, featuresCol="features", labelCol="label"),
        ])
    if variant != "balanced_ngrams":
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    return Pipeline(stages=[
        SQLTransformer(statement=_PREPROCESS),
        RegexTokenizer(inputCol="clean_text", outputCol="words", pattern=_TOKEN_PATTERN, gaps=False,
                       toLowercase=False),
        NGram(n=2, inputCol="words", outputCol="bigrams"),
        CountVectorizer(inputCol="words", outputCol="tf1", vocabSize=30000, minDF=2),
        CountVectorizer(inputCol="bigrams", outputCol="tf2", vocabSize=30000, minDF=3),
        VectorAssembler(inputCols=["tf1", "tf2"], outputCol="tf"),
        IDF(inputCol="tf", outputCol="features"),
        LogisticRegression(maxIter=100, regParam=0.02, elasticNetParam=0.0, featuresCol="features",
                           labelCol="label", weightCol="weight"),
    ])


def _with_class_weights(df: DataFrame) -> DataFrame:
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect()}
    total = sum(counts.values())
    expr = F.create_map(*[x for k, v in counts.items() for x in (F.lit(k), F.lit(total / (len(counts) * v)))])
    return df.withColumn("weight", expr[F.col("label")])


def train(spark: SparkSession, train_path: str | Path, variant: str = "balanced_ngrams",
          limit: int | None = None) -> tuple[PipelineModel, float]:
    """Fit a variant on the training file only; returns (model, seconds)."""
    df = load_labelled(spark, train_path, limit)
    if variant != "seed":
        df = _with_class_weights(df)
    t0 = time.monotonic()
    model = build_pipeline(variant).fit(df)
    return model, time.monotonic() - t0


def metrics_from_predictions(rows: list[tuple[int, int]]) -> dict:
    """(true label index, predicted index) pairs -> n, accuracy, macro_f1, macro_recall, per_class, confusion."""
    k = len(LABELS)
    conf = [[0] * k for _ in range(k)]
    for t, p in rows:
        conf[int(t)][int(p)] += 1
    n = len(rows)
    per = {}
    for i, name in enumerate(LABELS):
        tp = conf[i][i]
        support = sum(conf[i])
        predicted = sum(conf[r][i] for r in range(k))
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[name] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": support}
    return {"n": n, "accuracy": round(sum(conf[i][i] for i in range(k)) / n, 4) if n else 0.0,
            "macro_f1": round(sum(v["f1"] for v in per.values()) / k, 4),
            "macro_recall": round(sum(v["recall"] for v in per.values()) / k, 4),
            "per_class": per, "confusion": conf, "labels": LABELS}


def evaluate(model: PipelineModel, df: DataFrame) -> dict:
    pred = model.transform(df).select("label", "prediction").collect()
    return metrics_from_predictions([(int(r["label"]), int(r["prediction"])) for r in pred])


def save_model(model: PipelineModel, model_dir: str | Path, metrics: dict) -> Path:
    """Save under `<model_dir>/<UTC version>/` with metrics.json; returns the folder."""
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(model_dir) / version
    model.write().overwrite().save(str(out / "model"))
    (out / "metrics.json").write_text(json.dumps({"version": version, **metrics}, indent=2))
    return out


def latest_model(model_dir: str | Path) -> Path:
    versions = sorted(p for p in Path(model_dir).glob("*/model") if p.is_dir())
    if not versions:
        raise FileNotFoundError(f"no trained model under {model_dir}: run `tootpipe sentiment train`")
    return versions[-1].parent


def load_model(path: str | Path) -> tuple[PipelineModel, str]:
    p = Path(path)
    if (p / "model").is_dir():
        return PipelineModel.load(str(p / "model")), p.name
    return PipelineModel.load(str(p)), p.parent.name


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


def score_posts(spark: SparkSession, model: PipelineModel, version: str, url: str, languages: list[str]) -> dict:
    """Score every row of `mastodon_posts` into `mastodon_sentiments` (upsert on uri)."""
    import pyarrow.compute as pc
    from .db import copy_arrow, ensure_schema, query_df, transaction
    ensure_schema(url)
    posts = query_df(url, "SELECT uri, language, content AS text FROM mastodon_posts")
    if posts.empty:
        return {"scored": 0, "unsupported": 0}
    df = spark.createDataFrame(posts, "uri string, language string, text string")
    supported = F.coalesce(F.col("language"), F.lit("")).isin(*languages)
    scored = predict(model, df.where(supported)).select(
        "uri", "language", "sentiment", F.col("sentiment_label").alias("sentiment_name"),
        F.col("probability_max").alias("probability"))
    unsupported = df.where(~supported).select(
        "uri", "language", F.lit(None).cast("int").alias("sentiment"), F.lit("unsupported").alias("sentiment_name"),
        F.lit(None).cast("double").alias("probability"))
    arrow = scored.unionByName(unsupported).withColumn("model_version", F.lit(version)).toArrow()
    with transaction(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE stage_sent (uri text, language text, sentiment int, sentiment_name text, "
                    "probability double precision, model_version text) ON COMMIT DROP")
        copy_arrow(cur, "stage_sent", arrow)
        cur.execute("""INSERT INTO mastodon_sentiments (uri, language, sentiment, sentiment_name, probability,
                       model_version) SELECT uri, language, sentiment, sentiment_name, probability, model_version
                       FROM stage_sent ON CONFLICT (uri) DO UPDATE SET language = EXCLUDED.language,
                       sentiment = EXCLUDED.sentiment, sentiment_name = EXCLUDED.sentiment_name,
                       probability = EXCLUDED.probability, model_version = EXCLUDED.model_version, scored_at = now()""")
        cur.execute("DELETE FROM mastodon_sentiments s WHERE NOT EXISTS "
                    "(SELECT 1 FROM mastodon_posts p WHERE p.uri = s.uri)")
    n_unsup = pc.sum(pc.equal(arrow["sentiment_name"], "unsupported")).as_py() or 0
    return {"scored": arrow.num_rows - n_unsup, "unsupported": n_unsup}
