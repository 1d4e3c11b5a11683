# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Batch: backfill from Kafka offsets, clean, de-duplicate
#
# A batch read of the topic between explicit offset ranges (everything not loaded yet, from the
# `backfill_ranges` ledger) appends to `toots_raw` idempotently. Cleaning de-duplicates by `uri` keeping the
# latest edit, applies deletes, sends unusable rows to `toots_rejects` with the reason, and replaces
# `toots_clean` atomically. On a rerun where nothing cleaning reads has changed (the raw rows, the filters, the
# code), the last complete clean is reused (`"reused": true`); `tootpipe batch clean --force` computes it again.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
from tootpipe import steps
from tootpipe.postgres import db

params, endpoints = steps.context(params_file)
backfill = steps.backfill_step(params, endpoints)
backfill

# %%
cleaned = steps.clean_step(params, endpoints)
cleaned

# %%
db.query_df(endpoints.database_url, """
    SELECT (SELECT count(*) FROM toots_raw) AS raw_rows,
           (SELECT count(*) FROM toots_raw WHERE event = 'delete') AS deletes,
           (SELECT count(*) FROM toots_raw WHERE event = 'status.update') AS edits,
           (SELECT count(*) FROM toots_rejects) AS rejects,
           (SELECT count(*) FROM toots_clean) AS clean_toots""")

# %%
db.query_df(endpoints.database_url, "SELECT reason, count(*) AS n FROM toots_rejects GROUP BY 1 ORDER BY 2 DESC")

# %%
db.query_df(endpoints.database_url, "SELECT * FROM backfill_ranges ORDER BY loaded_at DESC, kafka_partition LIMIT 12")
