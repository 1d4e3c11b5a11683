"""How a sentiment model is measured: macro-recall (TweetEval's official metric) with a bootstrap interval, and
the rule baselines that need no training.

Guarantee: every figure is computed from (true, predicted) pairs of the named set; nothing is hard-coded.
"""
from __future__ import annotations

import re

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from tootpipe.sentiment.data import LABELS
from tootpipe.sentiment.vader import vader_scores

__all__ = ["metrics_from_predictions", "bootstrap_interval", "evaluate", "evaluate_sets", "evaluate_baseline",
           "BASELINES",
           "keyword_label", "vader_label"]


def bootstrap_interval(rows: list[tuple[int, int]], n: int = 1000, level: float = 0.95, seed: int = 7) -> list:
    """The `level` percentile interval of macro-recall over `n` resamples (with replacement) of the pairs (numpy,
    resampled in chunks: 1,000 resamples of 10,000 pairs take about 0.2 s)."""
    import numpy as np  # lazy: numpy
    if not rows:
        return [0.0, 0.0]
    k = len(LABELS)
    pairs = np.asarray(rows, dtype=np.int64)
    cell = pairs[:, 0] * k + pairs[:, 1]  # (true, predicted) as one index into the k x k confusion
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n, 100):
        m = min(100, n - start)
        picks = cell[rng.integers(0, len(cell), size=(m, len(cell)))]
        conf = np.stack([np.bincount(r, minlength=k * k) for r in picks]).reshape(m, k, k)
        support = conf.sum(axis=2)
        hits = conf[:, np.arange(k), np.arange(k)]
        stats.append(np.where(support > 0, hits / np.maximum(support, 1), 0.0).sum(axis=1) / k)
    stats = np.sort(np.concatenate(stats))
    lo, hi = stats[int(n * (1 - level) / 2)], stats[min(n - 1, int(n * (1 + level) / 2))]
    return [round(float(lo), 4), round(float(hi), 4)]


def metrics_from_predictions(rows: list[tuple[int, int]], interval: bool = True) -> dict:
    """(true label index, predicted index) pairs -> n, accuracy, macro_f1, macro_recall (and its bootstrap
    `macro_recall_ci`), per_class, confusion."""
    k = len(LABELS)
    rows = [(int(t), int(p)) for t, p in rows]
    conf = [[0] * k for _ in range(k)]
    for t, p in rows:
        conf[t][p] += 1
    n = len(rows)
    per = {}
    for i, name in enumerate(LABELS):
        tp, support, predicted = conf[i][i], sum(conf[i]), sum(conf[r][i] for r in range(k))
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[name] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": support}
    out = {"n": n, "accuracy": round(sum(conf[i][i] for i in range(k)) / n, 4) if n else 0.0,
           "macro_f1": round(sum(v["f1"] for v in per.values()) / k, 4),
           "macro_recall": round(sum(v["recall"] for v in per.values()) / k, 4),
           "per_class": per, "confusion": conf, "labels": LABELS}
    if interval:
        out["macro_recall_ci"] = bootstrap_interval(rows)
    return out


def evaluate(model: PipelineModel, df: DataFrame) -> dict:
    pred = model.transform(df).select("label", "prediction").collect()
    return metrics_from_predictions([(r["label"], r["prediction"]) for r in pred])


def evaluate_sets(model: PipelineModel, sets: dict[str, DataFrame]) -> dict[str, dict]:
    """:func:`evaluate` on each named set, in one pass over their union (one Spark job, not one per set)."""
    from pyspark.sql import functions as F  # lazy: pyspark
    names = list(sets)
    union = None
    for i, name in enumerate(names):
        part = sets[name].select("text", "label", F.lit(i).alias("__set"))
        union = part if union is None else union.unionByName(part)
    rows = model.transform(union).select("__set", "label", "prediction").collect()
    return {name: metrics_from_predictions([(r["label"], r["prediction"]) for r in rows if r["__set"] == i])
            for i, name in enumerate(names)}


_POSITIVE_WORDS = {"good", "great", "love", "happy", "awesome", "excellent", "nice", "best", "amazing", "wonderful",
                   "thanks", "fun", "beautiful", "glad", "enjoy"}
_NEGATIVE_WORDS = {"bad", "terrible", "hate", "sad", "awful", "worst", "angry", "horrible", "poor", "sucks",
                   "stupid", "wrong", "annoying", "disappointed", "fail"}


def keyword_label(text: str) -> int:
    """The original assignment's auto-labelling: a positive keyword -> positive, a negative one -> negative, else
    neutral."""
    words = set(re.findall(r"[a-z']+", (text or "").lower()))
    pos, neg = bool(words & _POSITIVE_WORDS), bool(words & _NEGATIVE_WORDS)
    return 2 if pos and not neg else 0 if neg and not pos else 1


def vader_label(text: str) -> int:
    """VADER alone, with its authors' thresholds: compound >= 0.05 positive, <= -0.05 negative."""
    c = vader_scores([text])[0][3]
    return 2 if c >= 0.05 else 0 if c <= -0.05 else 1


BASELINES = {"keyword_autolabel": keyword_label, "vader_alone": vader_label}


def evaluate_baseline(name: str, data) -> dict:
    """Metrics of a rule-based baseline (no training) on a labelled DataFrame or on the rows of
    :func:`tootpipe.sentiment.data.read_labelled` ((text, label name, label, id): no Spark needed)."""
    fn = BASELINES[name]
    pairs = data.select("text", "label").collect() if hasattr(data, "select") else [(r[0], r[2]) for r in data]
    return metrics_from_predictions([(label, fn(text)) for text, label in pairs])
