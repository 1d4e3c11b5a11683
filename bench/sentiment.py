"""Sentiment: training time per variant on the full corpus, scoring throughput through the saved pipelines.

    python bench/sentiment.py --n 200000

Each variant is trained on the SemEval training file, saved, loaded back, and scores `--n` toot texts from the
sample generator (cached in Spark first, so only scoring is timed). Macro-recall on SemEval-2017 dev is printed
beside. Writes bench/results/sentiment.json (score_toots_per_s for the default variant, train_s, per variant).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

from pyspark.sql import functions as F  # noqa: E402

from common import write  # noqa: E402
from tootpipe import config, sentiment  # noqa: E402
from tootpipe.normalize import html_to_text  # noqa: E402
from tootpipe.sample import generate  # noqa: E402
from tootpipe.spark_session import get_spark  # noqa: E402


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

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            reg = params.sentiment.reg_param if variant == params.sentiment.variant else None
            model, train_s = sentiment.train(spark, params.path(params.sentiment.train_path), variant,
                                             reg_param=reg)
            saved = sentiment.save_model(model, Path(tmp) / variant, {})
            loaded, _ = sentiment.load_model(saved)
            sentiment.predict(loaded, toots.limit(1000)).agg(F.sum("sentiment")).collect()  # warm the workers
            t0 = time.perf_counter()
            sentiment.predict(loaded, toots).agg(F.sum("sentiment"), F.count("*")).collect()
            score_s = time.perf_counter() - t0
            m = sentiment.evaluate(loaded, dev)
            results[variant] = {"train_s": round(train_s, 1), "score_s": round(score_s, 2),
                                "score_toots_per_s": round(args.n / score_s), "dev_macro_recall": m["macro_recall"]}
            print(f"{variant}: {results[variant]}", flush=True)
    spark.stop()

    default = params.sentiment.variant
    out = {"n": args.n, "default_variant": default,
           "score_toots_per_s": results.get(default, {}).get("score_toots_per_s"),
           "train_s": results.get(default, {}).get("train_s"), "variants": results,
           "spark_master": params.spark.master}
    print()
    print(f"{'variant':18} {'train s':>8} {'score toots/s':>14} {'dev macro-recall':>17}")
    for v, r in results.items():
        print(f"{v:18} {r['train_s']:>8} {r['score_toots_per_s']:>14,} {r['dev_macro_recall']:>17}")
    write(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
