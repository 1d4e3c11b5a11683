"""Sentiment: per variant, the cross-validated figure, training time and scoring throughput (the variants table).

    python bench/sentiment.py --n 200000

The variants are cross-validated on the training pool (newest of five time folds, fitted on the four older),
then trained on the whole pool, saved, loaded back, and score `--n` toot texts from the sample generator (cached in
Spark first, so only scoring is timed). Macro-recall on SemEval-2017 dev is reported beside, never used to choose.
A variant with a sentence encoder first embeds the pool (`embed_s`, timed alone), and is timed scoring the sample's
distinct English texts (what the English model scores) twice: with its embedding cache cold
(`score_cold_toots_per_s`: new toots) and warm (rescoring); its `score_toots_per_s` over `--n` texts then embeds
each distinct text once. The bench keeps its embedding cache in a folder of its own (`--embedding-cache`).
Writes bench/results/sentiment.json (score_toots_per_s for the default variant, train_s, per variant).
"""
from __future__ import annotations

import argparse
import os
import shutil
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


NONCE = os.urandom(4).hex()  # tags the texts of a cold-cache timing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="toot texts to score")
    ap.add_argument("--params", default=None)
    ap.add_argument("--variants", default=",".join(sentiment.VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sentiment.json"))
    ap.add_argument("--languages", help="instead: the other languages' models, each language variant (de,fr,...)")
    ap.add_argument("--embedding-cache", help="a folder to keep the encoders' embeddings in between runs (default: "
                                              "a new one, removed at the end)")
    args = ap.parse_args(argv)
    params = config.load(args.params)
    cache_home = args.embedding_cache or tempfile.mkdtemp(prefix="tootpipe-bench-embeddings-")
    os.environ["TOOTPIPE_STATE_DIR"] = cache_home  # before the JVM and its Python workers start: they inherit it
    spark = get_spark(params)
    if args.languages:
        out = languages(spark, params, args.languages.split(","))
        spark.stop()
        if not args.embedding_cache:
            shutil.rmtree(cache_home, ignore_errors=True)
        write(args.out.replace("sentiment.json", "sentiment-languages.json"), out)
        return 0

    updates = [e["data"] for e in generate(20_000, 9) if e["event"] == "update" and isinstance(e["data"], dict)]
    base = [html_to_text(d["content"]) for d in updates]
    english = [html_to_text(d["content"]) for d in updates if d.get("language") == "en"]
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
    embed_s = {e: embed_pool(pool, e) for e in {sentiment.VARIANTS[v].encoder for v in names} - {None}}
    distinct = spark.createDataFrame([(i, t) for i, t in enumerate(dict.fromkeys(english))], "i long, text string")
    t0 = time.perf_counter()
    cv = sentiment.cross_validate(pool, candidates)
    print(f"cross-validation (newest of five time folds): {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (variant, reg), (model, train_s) in sentiment.fit_variants(pool, candidates).items():
            saved = store.save_model(model, Path(tmp) / variant, {})
            loaded, _ = store.load_model(saved)
            figures = encoder_figures(variant, loaded, distinct, embed_s, pool.count())  # before any timed scoring
            scoring.predict(loaded, toots.limit(1000)).agg(F.sum("sentiment")).collect()  # warm the workers
            t0 = time.perf_counter()
            scoring.predict(loaded, toots).agg(F.sum("sentiment"), F.count("*")).collect()
            score_s = time.perf_counter() - t0
            m = sentiment.evaluate(loaded, dev)
            c = cv[(variant, reg)]
            results[variant] = {"train_s": round(train_s, 1), "score_s": round(score_s, 2),
                                "score_toots_per_s": round(args.n / score_s),
                                **figures,
                                "cv_macro_recall": c["macro_recall"], "cv_macro_recall_ci": c["macro_recall_ci"],
                                "dev_macro_recall": m["macro_recall"], "dev_macro_recall_ci": m["macro_recall_ci"]}
            print(f"{variant}: {results[variant]}", flush=True)
    spark.stop()
    if not args.embedding_cache:
        shutil.rmtree(cache_home, ignore_errors=True)

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
    for v, r in results.items():
        if "embed_s" in r:
            print(f"{v}: embeds the pool ({r['embedded']:,} texts) in {r['embed_s']} s; scores new toots at "
                  f"{r['score_cold_toots_per_s']:,}/s (cache cold), again at {r['score_warm_toots_per_s']:,}/s")
    write(args.out, out)
    return 0


def languages(spark, params, codes: list[str]) -> dict:
    """Per language and language variant: XLM-T val macro-recall (the figure that keeps a model), train seconds
    (embedding included: the cache starts cold) and scoring texts/s of the val split (cache cold, tagged texts)."""
    from tootpipe.core.variants import XLMT_LANGUAGES
    from tootpipe.sentiment.training import load_xlmt
    out = {}
    print(f"{'language':9} {'variant':16} {'val macro-recall [95% CI]':>26} {'train s':>8} {'score texts/s':>14}")
    for code in codes:
        for variant in ("balanced_ngrams", "multilingual_e5"):
            fitted = sentiment.fit_language_models(spark, params.path(params.sentiment.xlmt_dir), [code],
                                                   min_recall=0.0, variant=variant)
            model, m = fitted[code]
            val = load_xlmt(spark, params.path(params.sentiment.xlmt_dir) / XLMT_LANGUAGES[code], "val")
            tagged = val.select(F.concat("text", F.lit(f" [{variant} {NONCE}]")).alias("text")).cache()
            n = tagged.count()
            t0 = time.perf_counter()
            model.transform(tagged).agg(F.count("prediction")).collect()
            r = {"val_macro_recall": m["xlmt_val"]["macro_recall"], "val_macro_recall_ci":
                 m["xlmt_val"]["macro_recall_ci"], "train_s": m["train_s"],
                 "score_texts_per_s": round(n / (time.perf_counter() - t0))}
            out.setdefault(code, {})[variant] = r
            ci = r["val_macro_recall_ci"]
            print(f"{code:9} {variant:16} {r['val_macro_recall']:>8.3f} [{ci[0]:.3f}, {ci[1]:.3f}]   "
                  f"{r['train_s']:>8} {r['score_texts_per_s']:>14,}", flush=True)
    return {"languages": out, "spark_master": params.spark.master}


def embed_pool(pool, name: str) -> float:
    """Seconds to embed the pool's texts in the executors (what the encoder's variants then read from its cache)."""
    from tootpipe.sentiment.pipelines import _ENCODERS
    t0 = time.perf_counter()
    _ENCODERS[name](inputCol="text", outputCol="e").transform(pool).agg(F.count("e")).collect()
    return round(time.perf_counter() - t0, 1)


def encoder_figures(variant: str, model, distinct, embed_s: dict, pool_n: int) -> dict:
    """For an encoder's variant: the pool's embedding time, and scoring the distinct sample texts cold, then warm
    (each text tagged with the variant's name and this run's nonce, so that neither a variant sharing the encoder
    nor a run reusing the cache finds them embedded)."""
    name = sentiment.VARIANTS[variant].encoder
    if name is None:
        return {}
    out = {"embed_s": embed_s[name], "embedded": pool_n}
    distinct = (distinct.select("i", F.concat("text", F.lit(f" [{variant} {NONCE}]")).alias("text"))
                .repartition(distinct.sparkSession.sparkContext.defaultParallelism).cache())
    n = distinct.count()
    for state in ("cold", "warm"):
        t0 = time.perf_counter()
        scoring.predict(model, distinct).agg(F.sum("sentiment"), F.count("*")).collect()
        out[f"score_{state}_toots_per_s"] = round(n / (time.perf_counter() - t0))
    out["distinct_texts"] = n
    return out


if __name__ == "__main__":
    sys.exit(main())
