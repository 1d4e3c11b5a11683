"""Sentiment: per variant, the cross-validated figure, training time and scoring throughput (the variants table).

    python bench/sentiment.py --n 200000

The variants are cross-validated on the training pool (newest of five time folds, fitted on the four older),
then trained on the whole pool, saved, loaded back, and score `--n` toot texts from the sample generator (cached in
Spark first, so only scoring is timed). Macro-recall on SemEval-2017 dev is reported beside, never used to choose.
Writes bench/results/sentiment.json (score_toots_per_s for the default variant, train_s, per variant).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

from pyspark.sql import functions as F  # noqa: E402

from common import write  # noqa: E402
from tootpipe.core import config
from tootpipe.sentiment import training as sentiment  # noqa: E402
from tootpipe.sentiment import store
from tootpipe.sentiment import scoring
from tootpipe.ingest.normalize import html_to_text  # noqa: E402
from tootpipe.ingest.sample import generate  # noqa: E402
from tootpipe.spark.session import get_spark  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="toot texts to score")
    ap.add_argument("--params", default=None)
    ap.add_argument("--variants", default=",".join(sentiment.VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sentiment.json"))
    args = ap.parse_args(argv)
    params = config.load(args.params)
    spark = get_spark(params)

    base = [html_to_text(e["data"]["content"]) for e in generate(20_000, 9)
            if e["event"] == "update" and isinstance(e["data"], dict)]
    texts = (base * (args.n // len(base) + 1))[:args.n]
    toots = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, text string") \
        .repartition(spark.sparkContext.defaultParallelism).cache()
    toots.count()
    dev = sentiment.load_labelled(spark, params.path(params.sentiment.dev_path))

    s = params.sentiment
    held_out = (params.path(s.dev_path), params.path(s.val_path))
    pool = sentiment.load_labelled(spark, params.path(s.train_path), held_out=held_out).cache()
    names = args.variants.split(",")
    candidates = [(v, s.reg_param if v == s.variant else None) for v in names]
    t0 = time.perf_counter()
    cv = sentiment.cross_validate(pool, candidates)
    print(f"cross-validation (newest of five time folds): {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (variant, reg), (model, train_s) in sentiment.fit_variants(pool, candidates).items():
            saved = store.save_model(model, Path(tmp) / variant, {})
            loaded, _ = store.load_model(saved)
            scoring.predict(loaded, toots.limit(1000)).agg(F.sum("sentiment")).collect()  # warm the workers
            t0 = time.perf_counter()
            scoring.predict(loaded, toots).agg(F.sum("sentiment"), F.count("*")).collect()
            score_s = time.perf_counter() - t0
            m = sentiment.evaluate(loaded, dev)
            c = cv[(variant, reg)]
            results[variant] = {"train_s": round(train_s, 1), "score_s": round(score_s, 2),
                                "score_toots_per_s": round(args.n / score_s),
                                "cv_macro_recall": c["macro_recall"], "cv_macro_recall_ci": c["macro_recall_ci"],
                                "dev_macro_recall": m["macro_recall"], "dev_macro_recall_ci": m["macro_recall_ci"]}
            print(f"{variant}: {results[variant]}", flush=True)
    spark.stop()

    default = params.sentiment.variant
    out = {"n": args.n, "default_variant": default,
           "score_toots_per_s": results.get(default, {}).get("score_toots_per_s"),
           "train_s": results.get(default, {}).get("train_s"), "variants": results,
           "spark_master": params.spark.master}
    print()
    print(f"{'variant':16} {'cv newest fold [95% CI]':>24} {'dev (reported) [95% CI]':>24} {'train s':>8} "
          f"{'score toots/s':>14}")
    for v, r in results.items():
        cvs = f"{r['cv_macro_recall']:.3f} [{r['cv_macro_recall_ci'][0]:.3f}, {r['cv_macro_recall_ci'][1]:.3f}]"
        devs = f"{r['dev_macro_recall']:.3f} [{r['dev_macro_recall_ci'][0]:.3f}, {r['dev_macro_recall_ci'][1]:.3f}]"
        print(f"{v:16} {cvs:>24} {devs:>24} {r['train_s']:>8} {r['score_toots_per_s']:>14,}")
    write(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
