"""The labelled tweets the sentiment models learn from and are measured on.

Guarantees: a training set never holds a tweet of an evaluation set (compared after the normalisation the models
apply: :func:`text_key`), so no figure is flattered by a leaked tweet; time-ordered folds put older tweets in
training and newer ones in scoring (tweet ids grow with time), as the model meets newer posts than it learned
from.
"""
from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window, functions as F

from tootpipe.core.variants import XLMT_LANGUAGES

__all__ = ["LABELS", "XLMT_LANGUAGES", "TEXT_MASKS", "read_labelled", "read_xlmt", "to_frame", "text_key",
           "without_overlap", "with_class_weights", "time_folds"]

LABELS = ["negative", "neutral", "positive"]  # label index 0, 1, 2; sentiment value index - 1
Row = tuple  # (text, label name, label index as float, tweet id)


def read_labelled(path: str | Path, limit: int | None = None) -> list[Row]:
    """A TSV (optionally gzipped) with header columns `text` and `label` (negative/neutral/positive), and
    optionally `id`. Rows with another label are dropped; without ids, the row number stands for the time order."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header with columns `text` and `label`, found {reader.fieldnames}")
        rows = [(r["text"] or "", r["label"].strip().lower(), _tweet_id(r.get("id"), i))
                for i, r in enumerate(reader) if r.get("label")]
    rows = [(t, lab, float(LABELS.index(lab)), i) for t, lab, i in rows if lab in LABELS]
    return rows[:limit] if limit else rows


def _tweet_id(value, row: int) -> int:
    v = (value or "").strip()
    return int(v) if v.isdigit() and len(v) < 19 else row


def read_xlmt(folder: str | Path, split: str) -> list[Row]:
    """An XLM-T split (`<split>_text.txt` with one tweet per line, `<split>_labels.txt` with 0/1/2 =
    negative/neutral/positive)."""
    folder = Path(folder)
    texts = (folder / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (folder / f"{split}_labels.txt").read_text(encoding="utf-8").splitlines()
    if len(texts) != len(labels):
        raise ValueError(f"{folder}: {len(texts)} texts but {len(labels)} labels in {split}")
    return [(t, LABELS[int(lab)], float(lab), i) for i, (t, lab) in enumerate(zip(texts, labels))
            if lab.strip() in ("0", "1", "2")]


def to_frame(spark: SparkSession, rows: list[Row]) -> DataFrame:
    return spark.createDataFrame(rows, "text string, label_name string, label double, tweet_id long")


# The models' text preprocessing after lower-casing, in order: (regular expression, replacement with \1 groups).
# sentiment_models builds its Spark SQL stage from this table; text_key applies it in Python.
TEXT_MASKS = ((r"https?://\S+", " xurl "), (r"@\w+", " xuser "), (r"#(\w+)", r" \1 "), (r"n't\b", " not"))
_MASKS = [(re.compile(p), r) for p, r in TEXT_MASKS]
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def text_key(text: str) -> str:
    """A tweet as the models see it (lower case, :data:`TEXT_MASKS` applied: URLs and mentions masked, '#'
    dropped, "n't" as "not"; tokens joined by one space): two tweets with the same key are the same example to a
    model."""
    t = (text or "").lower()
    for pattern, replacement in _MASKS:
        t = pattern.sub(replacement, t)
    return " ".join(_TOKEN.findall(t))


def without_overlap(train: list[Row], *evaluation: list[Row]) -> list[Row]:
    """The training rows whose text (by :func:`text_key`) is in none of the evaluation sets."""
    held_out = {text_key(r[0]) for rows in evaluation for r in rows}
    return [r for r in train if text_key(r[0]) not in held_out]


def with_class_weights(df: DataFrame) -> DataFrame:
    """Adds `weight` so each class weighs the same in total."""
    counts = {r["label"]: r["count"] for r in df.groupBy("label").count().collect()}
    total = sum(counts.values())
    expr = F.create_map(*[x for k, v in counts.items() for x in (F.lit(k), F.lit(total / (len(counts) * v)))])
    return df.withColumn("weight", expr[F.col("label")])


def time_folds(df: DataFrame, n_folds: int = 5) -> DataFrame:
    """Adds `fold` 0..n_folds-1: equal slices in tweet-id (time) order, 0 the oldest."""
    rank = F.percent_rank().over(Window.orderBy("tweet_id"))
    return df.withColumn("fold", F.least(F.floor(rank * n_folds), F.lit(n_folds - 1)).cast("int"))
