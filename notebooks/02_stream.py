# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Stream: Kafka → Spark Structured Streaming → PostgreSQL, exactly once
#
# The streaming query reads the topic through Spark's own Kafka connector (`format("kafka")`), parses each record
# with the one schema of the library, applies the filters, and writes every micro-batch in **one PostgreSQL
# transaction** together with a ledger row: a batch that Spark replays after a crash is recognised and skipped.
# The broker keeps the topic's history and the checkpoint keeps its place across runs, so a second run reads
# only what arrived since (when the ledger already holds every offset of the topic, Spark is not even started:
# `nothing_new`). Posts are upserted on `uri`; deletes remove toots; one-minute window counts are recomputed from the
# stored posts, so they always hold true counts.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
from tootpipe.report import checks
from tootpipe.postgres import db
from tootpipe.report import plots
from tootpipe import steps
from tootpipe.report.bench import bench_result

params, endpoints = steps.context(params_file)
plots.style()
summary = steps.stream_step(params, endpoints)
summary

# %% [markdown]
# ## Exactly-once checks

# %%
# while another process runs this query (`make live`), it is not started here: its progress and lag are shown
inv = checks.stream_invariants(endpoints.database_url, endpoints.bootstrap_servers, params.kafka.topic,
                               summary["checkpoint"], live="live" in summary)
print(f"messages in the topic: {inv['in_topic']}; read and committed by this query's ledger: {inv['ledger_rows']}")
# a toot that arrives beyond the watermark is stored, but its window was final already: it stays out of it
print(f"window counts add up to {inv['sum_of_window_counts']} of {inv['posts']} stored toots "
      f"({inv['counted_posts']} in windows; minute windows that differ from a recount: {inv['count_windows_off']}, "
      f"per-user windows: {inv['user_windows_off']}); {inv['beyond_watermark']} rows "
      f"({inv['beyond_watermark_this_query']} in this query) arrived more than {params.stream.watermark_minutes} "
      "minutes behind the newest event time seen before them and were stored outside their (final) window")
results = [inv]
if params.source.kind == "sample":
    from tootpipe.ingest.sample import expected_posts, generate
    sample = checks.sample_expectation(
        endpoints.database_url, expected_posts(generate(params.source.sample_n, params.source.sample_seed), params.filters))
    print(f"this sample should leave {sample['expected']} distinct toots; missing: {sample['missing']}; rows from "
          f"earlier runs with other samples: {sample['from_other_runs']}; removed by deletes of earlier runs: "
          f"{sample['removed_by_earlier_deletes']}")
    results.append(sample)
checks.require(*results)
{k: v for k, v in inv.items() if k != "failures"}

# %% [markdown]
# ## Progress of the query
# One row per micro-batch: what the sink measured inside the batch's transaction (rows, filtered, errors, read and
# write times, offsets), plus Spark's own view added by a progress listener after Spark committed the batch
# (trigger and checkpoint-commit times, the topic's latest offsets, and the lag: messages still waiting).

# %%
progress = db.query_df(endpoints.database_url, "SELECT p.*, b.end_offsets FROM stream_progress p JOIN stream_ledger b "
                       "USING (checkpoint, batch_id) WHERE checkpoint = %s ORDER BY batch_id", (summary["checkpoint"],))
progress[["batch_id", "input_rows", "filtered", "errors", "collect_s", "write_s", "trigger_ms", "commit_ms", "lag",
          "end_offsets"]].tail(10)

# %%
plots.stream_health(progress);

# %%
counts = db.query_df(endpoints.database_url, "SELECT window_start, cnt FROM streamed_toot_counts ORDER BY 1")
plots.toots_per_minute(counts);

# %%
db.query_df(endpoints.database_url, "SELECT username, content, created_at FROM mastodon_posts ORDER BY created_at DESC LIMIT 5")

# %% [markdown]
# ## Throughput and latency at scale
# Measured by `bench/stream.py` (200,000 toots of backlog at two `maxOffsetsPerTrigger` settings beside the no-op
# ceiling of the same source; live latency from the Kafka timestamp to the committed row at 500 toots/s):

# %%
bench_result("stream")
