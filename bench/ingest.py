"""Ingest throughput: replay -> normalise -> filter -> produce, beside raw produce of the same bytes in the same run.

    python bench/ingest.py --n 100000            # embedded broker (started if needed)
    python bench/ingest.py --params params/live.yaml --n 50000

The replay file holds the sample's events as they come off the wire (JSONL: event, instance, data). The raw
baselines produce exactly those lines, unchanged, with confluent-kafka (acks=all, idempotent, as ingest does), and
consume them back: the broker's own produce and consume rates in the same run. The run's topics are deleted
when it ends.
Prints a table and writes bench/results/ingest.json (toots_per_s, raw_produce_per_s, raw_consume_per_s, ratio, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

from common import write  # noqa: E402
from tootpipe.core import config
from tootpipe import kafka
from tootpipe.services import embedded as services  # noqa: E402
from tootpipe.ingest.source import events_from_file, ingest  # noqa: E402
from tootpipe.ingest.sample import generate  # noqa: E402


def write_replay(path: Path, n: int, seed: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for e in generate(n, seed):
            data = e["data"] if isinstance(e["data"], str) else json.dumps(e["data"], ensure_ascii=False)
            fh.write(json.dumps({"event": e["event"], "instance": e["instance"], "data": data},
                                ensure_ascii=False) + "\n")
            count += 1
    return count


def raw_confluent(bootstrap: str, topic: str, lines: list[bytes]) -> float:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 10,
                  "batch.size": 1024 * 1024, "message.max.bytes": 8 * 1024 * 1024,
                  "queue.buffering.max.messages": 200000})
    t0 = time.perf_counter()
    for line in lines:
        while True:
            try:
                p.produce(topic, value=line)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)
    return time.perf_counter() - t0


def measure(endpoints, params, n: int, seed: int, topic: str, dlq: str, raw_topic: str) -> dict:
    """Ingest the replay into `topic`, then produce its raw lines into `raw_topic` and consume them back."""
    replay = services.state_dir() / "bench" / f"replay_{n}_{seed}.jsonl"  # the services' state folder
    t0 = time.perf_counter()
    events = write_replay(replay, n, seed)
    gen_s = time.perf_counter() - t0
    lines = replay.read_bytes().splitlines()
    mb = sum(map(len, lines)) / 1e6

    pub = kafka.Publisher(endpoints.bootstrap_servers, topic, dlq)
    t0 = time.perf_counter()
    stats = ingest(events_from_file(replay), pub, params, source="replay", progress_every=1e9)
    pub.close()
    ingest_s = time.perf_counter() - t0
    cf_s = raw_confluent(endpoints.bootstrap_servers, raw_topic, lines)
    t1 = time.perf_counter()
    consumed = sum(1 for p, e in kafka.end_offsets(endpoints.bootstrap_servers, raw_topic).items()
                   for _ in kafka.read_range(endpoints.bootstrap_servers, raw_topic, p, 0, e))
    consume_s = time.perf_counter() - t1
    assert consumed == len(lines), (consumed, len(lines))
    published = sum(kafka.end_offsets(endpoints.bootstrap_servers, topic).values())
    assert published == stats.published + stats.deletes, (published, stats.as_dict())
    return {
        "n_events": events, "mb": round(mb, 1), "generate_s": round(gen_s, 2),
        "toots_per_s": round(events / ingest_s), "ingest_s": round(ingest_s, 2),
        "raw_produce_per_s": round(events / cf_s), "raw_produce_s": round(cf_s, 2),
        "raw_consume_per_s": round(consumed / consume_s), "raw_consume_s": round(consume_s, 2),
        "ratio": round((events / ingest_s) / (events / cf_s), 2),
        "published": stats.published, "deletes": stats.deletes, "filtered": dict(stats.filtered),
        "opted_out": stats.opted_out, "dead_letters": stats.dead_letters, "messages_in_topic": published,
        "broker": (f"embedded Apache Kafka {services.status()['kafka']['version']}"
                   if params.kafka.bootstrap_servers is None else params.kafka.bootstrap_servers),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="original toots in the replay (events are ~9%% more)")
    ap.add_argument("--params", default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = ap.parse_args(argv)

    params = config.load(args.params)
    endpoints = services.up(params)
    run = uuid.uuid4().hex[:8]
    topics = f"bench_ingest_{run}", f"bench_ingest_{run}_dlq", f"bench_raw_{run}"
    kafka.ensure_topics(endpoints.bootstrap_servers, topics, params.kafka.partitions)
    try:
        res = measure(endpoints, params, args.n, args.seed, *topics)
    finally:  # the run's topics go with it (each run used to leave its three behind: ~370 MB for 100,000 toots)
        kafka.delete_topics(endpoints.bootstrap_servers, topics)

    print(f"{'stage':44} {'events/s':>10} {'seconds':>8}")
    for label, rate, seconds in (("tootpipe ingest (parse+normalise+filter+produce)", "toots_per_s", "ingest_s"),
                                 ("raw produce, confluent-kafka, same bytes", "raw_produce_per_s", "raw_produce_s"),
                                 ("raw consume of those messages", "raw_consume_per_s", "raw_consume_s")):
        print(f"{label:44} {res[rate]:>10,} {res[seconds]:>8.2f}")
    print(f"{res['n_events']:,} events ({res['mb']:.0f} MB); ratio to raw produce {res['ratio']}; published "
          f"{res['published']:,}, deletes {res['deletes']:,}, dead letters {res['dead_letters']:,}, "
          f"filtered {sum(res['filtered'].values()):,}")
    write(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
