"""Batch at scale: backfill from Kafka, clean, the seven analytics tables, three ways of computing them.

    python bench/batch.py --n 1000000

1. `--n` toots go into a fresh topic: the sample generator's toots (with their edits, deletes, duplicates,
   federated copies and malformed payloads), repeated with fresh ids/uris and shifted days past `--base`.
2. backfill (Kafka -> toots_raw, written by the Spark tasks) as the session's first job, then the same backfill
   into an empty database in the warm session (steady state); clean (toots_raw -> toots_clean + rejects).
3. analytics three ways, same input, after one warm-up pass (the first pass pays JIT and worker start-up, which
   would otherwise favour whichever way runs later): `cached` (what the pipeline does: read toots_clean once, cache), `naive`
   (each table computed from a fresh read, no caching), `repartition_cache` (the original assignment's repartition(4).cache()).
Prints a table and writes bench/results/batch.json (backfill_toots_per_s, clean_s, analytics_s,
naive_analytics_s, ...). The topic it fills is deleted at the end unless `--keep-topic` (then `--topic NAME` reruns on
it without publishing again).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

from common import write  # noqa: E402
from tootpipe.batch import analytics
from tootpipe.batch import backfill as batch
from tootpipe.core import config
from tootpipe import kafka
from tootpipe.services import embedded as services
from tootpipe import steps  # noqa: E402
from tootpipe.ingest.sample import generate  # noqa: E402
from tootpipe.spark.session import get_spark  # noqa: E402
from stream import drop_scratch, fresh_db, jvm_peak_rss_mb  # noqa: E402


def scaled_events(n: int, seed: int, base: int):
    """Events for `n` toots: the generator's `base` toots, repeated with new ids, uris and days."""
    events = generate(min(n, base), seed)
    for k in range((n + base - 1) // base):
        shift = str(k)
        for e in events:
            if k == 0:
                yield e
                continue
            d = e["data"]
            if isinstance(d, dict):
                d = copy.deepcopy(d)
                d["id"] = f"{d['id']}{shift}"
                d["uri"] = f"{d['uri']}/{shift}"
                if isinstance(d.get("created_at"), str) and d["created_at"][:4].isdigit():
                    day = int(d["created_at"][8:10])
                    d["created_at"] = f"{d['created_at'][:8]}{(day + 2 * k - 1) % 28 + 1:02d}{d['created_at'][10:]}"
            elif e["event"] == "delete":
                d = f"{d}{shift}"
            yield {**e, "data": d}


def analytics_timed(spark, url: str, analytics_params, mode: str) -> dict:
    t0 = time.perf_counter()
    per = {}
    if mode == "naive":
        for name in analytics.TABLES:
            t = time.perf_counter()
            batch.write_table(url, name, analytics.TABLES[name](analytics.load_clean(spark, url), analytics_params))
            per[name] = round(time.perf_counter() - t, 2)
    else:
        clean = analytics.load_clean(spark, url)
        if mode == "repartition_cache":
            clean = clean.repartition(4)
        clean = clean.cache()
        for name, df in analytics.analytics(clean, analytics_params).items():
            t = time.perf_counter()
            batch.write_table(url, name, df)
            per[name] = round(time.perf_counter() - t, 2)
        clean.unpersist()
    return {"seconds": round(time.perf_counter() - t0, 2), "per_table": per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--base", type=int, default=50_000, help="distinct generated toots, repeated up to --n")
    ap.add_argument("--params", default=None)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch.json"))
    ap.add_argument("--topic", help="reuse a topic filled by an earlier run (its name is printed) instead of publishing")
    ap.add_argument("--keep-topic", action="store_true",
                    help="keep the topic this run fills (~1.5 GB per million toots), for --topic; deleted otherwise")
    args = ap.parse_args(argv)

    params = config.load(args.params)
    endpoints = services.up(params)
    run = uuid.uuid4().hex[:8]
    params.kafka.topic = args.topic or f"bench_batch_{run}"
    params.kafka.dlq_topic = params.kafka.topic + "_dlq"
    if args.topic:
        messages = sum(kafka.end_offsets(endpoints.bootstrap_servers, args.topic).values())
        print(f"reusing topic {args.topic}: {messages:,} messages", flush=True)
    else:
        kafka.ensure_topics(endpoints.bootstrap_servers, [params.kafka.topic, params.kafka.dlq_topic],
                               params.kafka.partitions)
        t0 = time.perf_counter()
        from tootpipe.ingest.source import ingest
        pub = kafka.Publisher(endpoints.bootstrap_servers, params.kafka.topic, params.kafka.dlq_topic)
        stats = ingest(scaled_events(args.n, args.seed, args.base), pub, params, source="bench", progress_every=1e9)
        pub.close()
        messages = stats.published + stats.deletes
        print(f"published {messages:,} messages for {args.n:,} toots to {params.kafka.topic} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

    endpoints = fresh_db(endpoints, f"bench_batch_{run}", scratch=True)
    spark = get_spark(params)
    res = {"n": args.n, "messages": messages}
    t = time.perf_counter()
    bf = batch.backfill(spark, params, endpoints)
    res["backfill_s"] = round(time.perf_counter() - t, 2)
    res["backfill_rows"] = bf["rows"]
    res["backfill_toots_per_s"] = round(bf["rows"] / res["backfill_s"])
    print(f"backfill: {bf['rows']:,} rows in {res['backfill_s']} s", flush=True)
    again = batch.backfill(spark, params, endpoints)
    res["backfill_rerun_rows"] = again["rows"]
    # the same backfill again into an empty database, in the now warm session (JIT-compiled code, Python workers,
    # Kafka consumers): the steady state of a long backfill, beside the first job of a fresh session above
    warm_db = fresh_db(endpoints, f"bench_batch_{run}_warm", scratch=True)
    t = time.perf_counter()
    warm_bf = batch.backfill(spark, params, warm_db)
    res["backfill_warm_s"] = round(time.perf_counter() - t, 2)
    res["backfill_warm_toots_per_s"] = round(warm_bf["rows"] / res["backfill_warm_s"])
    print(f"backfill, warm session: {warm_bf['rows']:,} rows in {res['backfill_warm_s']} s", flush=True)
    # the baseline in the same run: Spark's connector reading the same messages into nothing (count), with the
    # fetch size the backfill uses
    from tootpipe.spark.kafka_source import FETCH_OPTIONS
    t = time.perf_counter()
    read = (spark.read.format("kafka").option("kafka.bootstrap.servers", endpoints.bootstrap_servers)
            .option("subscribe", params.kafka.topic).option("minPartitions", "8").options(**FETCH_OPTIONS)
            .load().count())
    res["kafka_read_s"] = round(time.perf_counter() - t, 2)
    res["kafka_read_rows_per_s"] = round(read / res["kafka_read_s"])
    res["backfill_to_read_ratio"] = round(res["backfill_toots_per_s"] / res["kafka_read_rows_per_s"], 2)
    res["backfill_warm_to_read_ratio"] = round(res["backfill_warm_toots_per_s"] / res["kafka_read_rows_per_s"], 2)
    print(f"raw connector read: {read:,} rows in {res['kafka_read_s']} s", flush=True)

    t = time.perf_counter()
    cl = steps.clean_step(params, endpoints)
    res["clean_s"] = round(time.perf_counter() - t, 2)
    res["toots_clean"], res["toots_rejects"] = cl["toots_clean"], cl["toots_rejects"]
    print(f"clean: {cl} in {res['clean_s']} s", flush=True)

    runs = {}
    warm = analytics_timed(spark, endpoints.database_url, params.analytics, "cached")  # JIT, workers, PG caches
    res["analytics_warmup_s"] = warm["seconds"]
    print(f"analytics warm-up pass (not compared): {warm['seconds']} s", flush=True)
    for mode in ("cached", "naive", "repartition_cache"):
        runs[mode] = analytics_timed(spark, endpoints.database_url, params.analytics, mode)
        print(f"analytics {mode}: {runs[mode]}", flush=True)
    res.update({
        "analytics_s": runs["cached"]["seconds"], "naive_analytics_s": runs["naive"]["seconds"],
        "repartition_cache_analytics_s": runs["repartition_cache"]["seconds"], "analytics": runs,
        "clean_plus_analytics_s": round(res["clean_s"] + runs["cached"]["seconds"], 2),
        "jvm_rss_mb": jvm_peak_rss_mb(spark), "driver_memory": params.spark.driver_memory,
        "spark_master": params.spark.master,
    })
    spark.stop()
    made = [] if args.topic or args.keep_topic else [params.kafka.topic, params.kafka.dlq_topic]
    drop_scratch(endpoints, made)  # its databases, and the topic it filled unless kept (a --topic stays as it was)

    print()
    print(f"{'stage':34} {'seconds':>8} {'rows/s':>10}")
    print(f"{'backfill (Kafka -> toots_raw)':34} {res['backfill_s']:>8} {res['backfill_toots_per_s']:>10,}")
    print(f"{'backfill again, warm session':34} {res['backfill_warm_s']:>8} {res['backfill_warm_toots_per_s']:>10,}")
    print(f"{'baseline: connector read, count':34} {res['kafka_read_s']:>8} {res['kafka_read_rows_per_s']:>10,}")
    print(f"{'clean (-> toots_clean, rejects)':34} {res['clean_s']:>8}")
    for mode, r in runs.items():
        print(f"{'analytics, ' + mode:34} {r['seconds']:>8}")
    print(f"{'table':34} " + " ".join(f"{m:>18}" for m in runs))
    for name in analytics.TABLES:
        print(f"{name:34} " + " ".join(f"{runs[m]['per_table'][name]:>18}" for m in runs))
    print(f"re-run backfill loaded {res['backfill_rerun_rows']} rows; driver JVM peak RSS {res['jvm_rss_mb']} MB")
    if args.keep_topic and not args.topic:
        print(f"topic kept: {params.kafka.topic} (--topic {params.kafka.topic} runs on it without publishing)")
    write(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
