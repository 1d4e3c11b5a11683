"""Scoring the stored toots: each language with its own model, written to `mastodon_sentiments` idempotently
(upsert on `uri`); toots in a language without a model are marked `unsupported`, never guessed. Only posts that are
new, edited or scored by another model version are scored again.
"""
from __future__ import annotations

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession, functions as F

from tootpipe.postgres.db import copy_arrow, ensure_schema, query_df, scalar, transaction
from tootpipe.sentiment.data import LABELS

__all__ = ["predict", "pending_posts", "score_posts"]


def predict(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Adds `sentiment_label` (name), `sentiment` (-1/0/1) and `probability_max`; works on empty, emoji-only and
    very long texts (they get the model's prior)."""
    from pyspark.ml.functions import vector_to_array  # lazy: pyspark
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
    ensure_schema(url)
    return query_df(url, _PENDING, {"version": version})


def score_posts(spark: SparkSession | None, models: dict[str, PipelineModel], version: str, url: str,
                languages: list[str], posts=None) -> dict:
    """Score the `pending_posts` (or the given ones) into `mastodon_sentiments` (upsert on uri), each language
    with its own model; a toot whose language has no model (or is not in `languages`) is marked unsupported.
    Sentiments of posts that are gone are deleted. Posts already scored by `version` on the same text are left
    as they are (`unchanged` in the result). `spark` is needed only when there are posts to score."""
    import pyarrow.compute as pc  # lazy: pyarrow
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
