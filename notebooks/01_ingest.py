# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Ingest: Mastodon → Kafka
#
# Toots come from the configured source (the bundled sample by default; a REST poll, the streaming API or a
# recording in `live.yaml`), are normalised into one documented record each, filtered, and published to Kafka
# keyed by their federated `uri`: **at-least-once into Kafka** (acks=all, idempotent producer). Anything that
# cannot become a record goes to the dead-letter topic with the reason, and never stops the producer.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
import pandas as pd
from tootpipe import steps
from tootpipe.report.bench import bench_result
from tootpipe.services import embedded as services

params, endpoints = steps.context(params_file)
broker = services.status().get("kafka", {}) if endpoints.embedded_kafka else {}
print("source:", params.source.kind, "| topic:", params.kafka.topic, "| broker:", services.describe(endpoints)["bootstrap_servers"],
      f"({broker.get('broker')} {broker.get('version')}, cluster {endpoints.cluster_id}, log in {broker.get('data')})"
      if broker else "(given by the parameters)")

# %% [markdown]
# ## Publish

# %%
stats = steps.ingest_step(params, endpoints)
pd.DataFrame([{k: v for k, v in stats.items() if not isinstance(v, dict)}])

# %% [markdown]
# Why toots were left out (filters from the parameters; opted-out accounts are skipped before anything leaves
# the process):

# %%
if "live" in stats:  # `make live` ingests into this topic now: this run published nothing
    print(f"another process ingests into {params.kafka.topic} now: {stats['live']}")
else:
    display(pd.Series({**stats["filtered"], "opted out": stats["opted_out"], "dead letters": stats["dead_letters"]},
                      name="toots").to_frame())

# %% [markdown]
# ## What is in the topic now
# The broker keeps every message of every run (the topic is the pipeline's history, replayed by the backfill). The
# bundled sample is published once per topic: a rerun finds it there and sends nothing (`reused` above, with the
# figures of the run that sent it); `source.republish: true` sends it again, and each re-published toot is a new
# message that the stream and the backfill de-duplicate on `uri`. A live source always publishes what is new.

# %%
pd.DataFrame({"mastodon_stream": stats["topic_end_offsets"], "mastodon_stream_dlq": stats["dlq_end_offsets"]}).rename_axis("partition")

# %%
from tootpipe.kafka import export
pd.json_normalize([m["value"] for m in export(endpoints.bootstrap_servers, params.kafka.topic, max_messages=5)])[
    ["event", "uri", "created_at", "account.acct", "language", "text", "hashtags"]]

# %% [markdown]
# ## Dead letters
# Payloads that could not become a record keep their raw text, the reason and where they came from:

# %%
dead = [m["value"] for m in export(endpoints.bootstrap_servers, params.kafka.dlq_topic, max_messages=5)]
pd.DataFrame([{"error": d["error"], "source": d["source"], "raw": str(d["raw"])[:80]} for d in dead],
             columns=["error", "source", "raw"])

# %% [markdown]
# ## Throughput
# This run's rate is in the first table (`toots_per_s`, including start-up). The producer's ceiling is measured by
# `bench/ingest.py` against raw produce of the same bytes in the same run; its last result, when present:

# %%
bench_result("ingest")
