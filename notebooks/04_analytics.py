# %% [markdown]
# # 04 · Analytics
#
# Seven tables from `toots_clean`, each replaced atomically, and the reconciliation of the stream's one-minute
# window counts with the batch's hourly counts.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
import pandas as pd
from tootpipe import steps, db, plots

params, ep = steps.context(params_file)
plots.style()
result = steps.analytics_step(params, ep)
pd.DataFrame({"rows": result["rows"], "seconds": result["seconds_per_table"]})

# %%
db.query_df(ep.database_url, "SELECT * FROM daily_toot_counts ORDER BY day")

# %%
db.query_df(ep.database_url, "SELECT * FROM top_hashtag_per_day ORDER BY day")

# %%
db.query_df(ep.database_url, 'SELECT * FROM "active_users_gtX" ORDER BY cnt DESC LIMIT 10')

# %% [markdown]
# ## Do the stream and the batch agree?
# They should, except where the stream saw a toot later than its watermark: the toot is stored, but its one-minute
# window was already final and is not recounted. The batch job recounts everything and has no watermark.

# %%
rec = db.query_df(ep.database_url, "SELECT * FROM stream_batch_reconciliation ORDER BY hour")
disagree = rec[rec["diff"] != 0]
beyond = db.scalar(ep.database_url, "SELECT coalesce(sum(late_rows), 0)::bigint FROM stream_progress")
print(f"{len(rec)} hours compared; stream total {rec.stream_cnt.sum()}, batch total {rec.batch_cnt.sum()}; "
      + ("they agree in every hour." if disagree.empty else f"they differ in {len(disagree)} hours (see below); "
         f"{beyond} rows reached the stream beyond its watermark."))
plots.reconciliation(rec);

# %%
disagree

# %% [markdown]
# ## At a million toots
# Measured by `bench/batch.py`: backfill, clean, and the analytics computed three ways (read once and cached, as
# here; each table from scratch; the seed's `repartition(4).cache()`):

# %%
steps.bench_result("batch")
