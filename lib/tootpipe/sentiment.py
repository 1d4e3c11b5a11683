"""Sentiment with Spark MLlib: train on real labelled tweets, measure, save, score toots.

Models are saved under `models/sentiment/<version>/` (the Spark pipeline in `model/` and `metrics.json`); the
newest version is the default. Scoring writes `mastodon_sentiments` idempotently (upsert on `uri`); toots in a
language without a model are marked `unsupported`, never guessed.
"""
from __future__ import annotations

import csv
import gzip
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd  # module level: pandas_udf resolves the (string) type hints here
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import (IDF, CountVectorizer, NGram, RegexTokenizer, SQLTransformer, StopWordsRemover,
                                VectorAssembler)
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from .vader import VADER_KEYS, vader_scores

__all__ = ["LABELS", "load_labelled", "load_xlmt", "build_pipeline", "train", "tune_reg_param", "evaluate",
           "evaluate_baseline", "metrics_from_predictions", "save_model", "latest_model", "load_model", "load_models",
           "train_language_models", "predict", "score_posts", "VaderFeatures", "VARIANTS", "DEFAULT_VARIANT",
           "BASELINES", "XLMT_LANGUAGES"]

LABELS = ["negative", "neutral", "positive"]  # label index 0, 1, 2; sentiment value index - 1
VARIANTS = ("seed", "balanced_ngrams", "vader_ngrams")
DEFAULT_VARIANT = "vader_ngrams"
REG_GRID = (1.0, 2.0, 4.0, 8.0)


class VaderFeatures(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """A pipeline stage adding VADER's six scores of `inputCol` as a vector column (saved with the pipeline)."""

    def __init__(self, inputCol: str = "text", outputCol: str = "vader"):
        super().__init__()
        self._set(inputCol=inputCol, outputCol=outputCol)

    def _transform(self, df: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql.functions import pandas_udf

        @pandas_udf(", ".join(f"{k} double" for k in VADER_KEYS))
        def scores(texts: pd.Series) -> pd.DataFrame:  # columnar out: far cheaper than a Series of lists
            return pd.DataFrame(vader_scores(texts.fillna("").tolist()), columns=list(VADER_KEYS))

        tmp = f"__{self.getOutputCol()}_struct"
        return (df.withColumn(tmp, scores(F.col(self.getInputCol())))
                .withColumn(self.getOutputCol(), array_to_vector(F.array(*[F.col(tmp)[k] for k in VADER_KEYS])))
                .drop(tmp))


def load_labelled(spark: SparkSession, path: str | Path, limit: int | None = None) -> DataFrame:
    """A TSV (optionally gzipped) with header columns `text` and `label` (negative/neutral/positive), and
    optionally `id`, as a DataFrame (text, label_name, label, tweet_id). Rows with another label are dropped."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header with columns `text` and `label`, found {reader.fieldnames}")
        rows = [(r["text"] or "", r["label"].strip().lower(), _tweet_id(r.get("id"), i))
                for i, r in enumerate(reader) if r.get("label")]
    rows = [(t, l, float(LABELS.index(l)), i) for t, l, i in rows if l in LABELS]
    if limit:
        rows = rows[:limit]
    return spark.createDataFrame(rows, "text string, label_name string, label double, tweet_id long")


def _tweet_id(value, row: int) -> int:
    v = (value or "").strip()
    return int(v) if v.isdigit() and len(v) < 19 else row


XLMT_LANGUAGES = {"ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french", "hi": "hindi",
                  "it": "italian", "pt": "portuguese"}


def load_xlmt(spark: SparkSession, folder: str | Path, split: str) -> DataFrame:
    """An XLM-T split (`<split>_text.txt` with one tweet per line, `<split>_labels.txt` with 0/1/2 =
    negative/neutral/positive) as the same DataFrame as :func:`load_labelled`."""
    folder = Path(folder)
    texts = (folder / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (folder / f"{split}_labels.txt").read_text(encoding="utf-8").splitlines()
    if len(texts) != len(labels):
        raise ValueError(f"{folder}: {len(texts)} texts but {len(labels)} labels in {split}")
    rows = [(t, LABELS[int(l)], float(l), i) for i, (t, l) in enumerate(zip(texts, labels)) if l.strip() in "012"]
    return spark.createDataFrame(rows, "text string, label_name string, label double, tweet_id long")


# Mastodon/Twitter text preprocessing, in Spark SQL so it is saved inside the pipeline.
_PREPROCESS = """
SELECT *, regexp_replace(regexp_replace(regexp_replace(regexp_replace(lower(coalesce(text, '')),
        'https?://\\\\S+', ' xurl '), '@\\\\w+', ' xuser '), '#(\\\\w+)', ' $1 '),
        "n't\\\\b", ' not') AS clean_text
FROM __THIS__
"""

_TOKEN_PATTERN = r"[\p{L}\p{M}\p{N}']+|[!?]+|[:;=8][-o*']?[)(\]\[dDpP/\\|]|[\x{2600}-\x{27BF}\x{1F300}-\x{1FAFF}]"


def build_pipeline(variant: str = DEFAULT_VARIANT, reg_param: float | None = None) -> Pipeline:
    """`seed`: the seed's RegexTokenizer -> StopWordsRemover -> CountVectorizer -> IDF -> LogisticRegression.
    `balanced_ngrams`: URL/mention masking, negation kept (no stop-word removal), emoji and emoticons as tokens,
    word unigrams + bigrams, and class weights that balance the three classes.
    `vader_ngrams`: balanced_ngrams plus VADER's scores as six extra features, with a stronger regularisation
    (`reg_param`, chosen by :func:`tune_reg_param` on the training data) so the lexicon carries more weight."""
    if variant == "seed":
        return Pipeline(stages=[
            RegexTokenizer(inputCol="text", outputCol="words", pattern="\\W"),
            StopWordsRemover(inputCol="words", outputCol="filtered"),
            CountVectorizer(inputCol="filtered", outputCol="tf", vocabSize=20000, minDF=2),
            IDF(inputCol="tf", outputCol="features"),
            LogisticRegression(maxIter=50, regParam=0.01, featuresCol="features", labelCol="label"),
        ])
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    ngrams = [
        SQLTransformer(statement=_PREPROCESS),
        RegexTokenizer(inputCol="clean_text", outputCol="words", pattern=_TOKEN_PATTERN, gaps=False,
                       toLowercase=False),
        NGram(n=2, inputCol="words", outputCol="bigrams"),
        CountVectorizer(inputCol="words", outputCol="tf1", vocabSize=30000, minDF=2),
        CountVectorizer(inputCol="bigrams", outputCol="tf2", vocabSize=30000, minDF=3),
        VectorAssembler(inputCols=["tf1", "tf2"], outputCol="tf"),
    ]
    if variant == "balanced_ngrams":
        return Pipeline(stages=ngrams + [
            IDF(inputCol="tf", outputCol="features"),
            LogisticRegression(maxIter=100, regParam=reg_param or 0.02, featuresCol="features", labelCol="label",
                               weightCol="weight")])
    return Pipeline(stages=ngrams + [
        IDF(inputCol="tf", outputCol="tfidf"),
        VaderFeatures(inputCol="text", outputCol="vader"),
        VectorAssembler(inputCols=["tfidf", "vader"], outputCol="features"),
        LogisticRegression(maxIter=100, regParam=reg_param or 4.0, featuresCol="features", labelCol="label",
                           weightCol="weight")])


def _with_class_weights(df: DataFrame) -> DataFrame:
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect()}
    total = sum(counts.values())
    expr = F.create_map(*[x for k, v in counts.items() for x in (F.lit(k), F.lit(total / (len(counts) * v)))])
    return df.withColumn("weight", expr[F.col("label")])


def train(spark: SparkSession, train_path: str | Path, variant: str = DEFAULT_VARIANT,
          limit: int | None = None, reg_param: float | None = None) -> tuple[PipelineModel, float]:
    """Fit a variant on the training file only; returns (model, seconds)."""
    df = load_labelled(spark, train_path, limit)
    if variant != "seed":
        df = _with_class_weights(df)
    t0 = time.monotonic()
    model = build_pipeline(variant, reg_param).fit(df)
    return model, time.monotonic() - t0


def tune_reg_param(spark: SparkSession, train_path: str | Path, variant: str = DEFAULT_VARIANT,
                   grid=REG_GRID, holdout: float = 0.2, limit: int | None = None) -> dict:
    """Choose regParam on the training data only: fit on the older tweets, score macro-recall on the newest
    `holdout` share (tweet ids grow with time), as the model will meet newer posts than it learned from.
    Returns {"best": value, "scores": {value: macro_recall}}."""
    df = load_labelled(spark, train_path, limit).withColumn("rank", F.percent_rank().over(Window.orderBy("tweet_id")))
    older = _with_class_weights(df.where(F.col("rank") < 1 - holdout)).cache()
    newest = df.where(F.col("rank") >= 1 - holdout).cache()
    scores = {}
    for reg in grid:
        scores[reg] = evaluate(build_pipeline(variant, reg).fit(older), newest)["macro_recall"]
    older.unpersist()
    newest.unpersist()
    return {"best": max(scores, key=scores.get), "scores": scores, "holdout": holdout}


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


_POSITIVE_WORDS = {"good", "great", "love", "happy", "awesome", "excellent", "nice", "best", "amazing", "wonderful",
                   "thanks", "fun", "beautiful", "glad", "enjoy"}
_NEGATIVE_WORDS = {"bad", "terrible", "hate", "sad", "awful", "worst", "angry", "horrible", "poor", "sucks",
                   "stupid", "wrong", "annoying", "disappointed", "fail"}


def keyword_label(text: str) -> int:
    """The seed's auto-labelling: a positive keyword -> positive, a negative one -> negative, else neutral."""
    words = set(re.findall(r"[a-z']+", (text or "").lower()))
    pos, neg = bool(words & _POSITIVE_WORDS), bool(words & _NEGATIVE_WORDS)
    return 2 if pos and not neg else 0 if neg and not pos else 1


def vader_label(text: str) -> int:
    """VADER alone, with its authors' thresholds: compound >= 0.05 positive, <= -0.05 negative."""
    c = vader_scores([text])[0][3]
    return 2 if c >= 0.05 else 0 if c <= -0.05 else 1


BASELINES = {"keyword_autolabel": keyword_label, "vader_alone": vader_label}


def evaluate_baseline(name: str, df: DataFrame) -> dict:
    """Metrics of a rule-based baseline (no training) on a labelled DataFrame."""
    fn = BASELINES[name]
    return metrics_from_predictions([(int(r["label"]), fn(r["text"])) for r in df.select("text", "label").collect()])


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


def train_language_models(spark: SparkSession, xlmt_dir: str | Path, version_dir: str | Path,
                          languages: list[str], min_recall: float = 0.45) -> dict:
    """One `balanced_ngrams` model per XLM-T language (trained on its train split, measured on its val split),
    saved under `<version>/languages/<code>/model` only when its macro-recall reaches `min_recall` (chance is
    0.33): a model no better than a guess is not kept, and that language's toots are marked unsupported.
    English keeps the SemEval model. Returns metrics per code."""
    out = {}
    for code in languages:
        if code == "en" or code not in XLMT_LANGUAGES:
            continue
        folder = Path(xlmt_dir) / XLMT_LANGUAGES[code]
        if not (folder / "train_text.txt").exists():
            continue
        t0 = time.monotonic()
        model = build_pipeline("balanced_ngrams").fit(_with_class_weights(load_xlmt(spark, folder, "train")))
        seconds = time.monotonic() - t0
        m = evaluate(model, load_xlmt(spark, folder, "val"))
        kept = m["macro_recall"] >= min_recall
        if kept:
            model.write().overwrite().save(str(Path(version_dir) / "languages" / code / "model"))
        out[code] = {"xlmt_val": m, "train_s": round(seconds, 1), "kept": kept}
    return out


def load_models(path: str | Path) -> tuple[dict[str, PipelineModel], str]:
    """The model set of a version: {"en": SemEval model, code: XLM-T model, ...} and the version."""
    model, version = load_model(path)
    models = {"en": model}
    for sub in sorted(Path(path).glob("languages/*/model")):
        models[sub.parent.name] = PipelineModel.load(str(sub))
    return models, version


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


def score_posts(spark: SparkSession, models: dict[str, PipelineModel], version: str, url: str,
                languages: list[str]) -> dict:
    """Score every row of `mastodon_posts` into `mastodon_sentiments` (upsert on uri), each language with its own
    model; a toot whose language has no model (or is not in `languages`) is marked unsupported."""
    import pyarrow.compute as pc
    from .db import copy_arrow, ensure_schema, query_df, transaction
    ensure_schema(url)
    posts = query_df(url, "SELECT uri, language, content AS text FROM mastodon_posts")
    if posts.empty:
        return {"scored": 0, "unsupported": 0}
    df = spark.createDataFrame(posts, "uri string, language string, text string")
    usable = [lang for lang in languages if lang in models]
    lang = F.coalesce(F.col("language"), F.lit(""))
    supported = lang.isin(*usable) if usable else F.lit(False)
    scored = None
    for code in usable:
        part = predict(models[code], df.where(lang == code)).select(
            "uri", "language", "sentiment", F.col("sentiment_label").alias("sentiment_name"),
            F.col("probability_max").alias("probability"))
        scored = part if scored is None else scored.unionByName(part)
    unsupported = df.where(~supported).select(
        "uri", "language", F.lit(None).cast("int").alias("sentiment"), F.lit("unsupported").alias("sentiment_name"),
        F.lit(None).cast("double").alias("probability"))
    both = unsupported if scored is None else scored.unionByName(unsupported)
    arrow = both.withColumn("model_version", F.lit(version)).toArrow()
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
