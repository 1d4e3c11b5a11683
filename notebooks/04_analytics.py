# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Analytics
#
# Seven tables from `toots_clean`, each replaced atomically, and the reconciliation of the stream's one-minute
# window counts with the batch's hourly counts. The tables are reused when `toots_clean` is the one their last
# complete run read (and the parameters and code are the same); the reconciliation is always recomputed.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
import pandas as pd
from tootpipe.report import checks
from tootpipe.postgres import db
from tootpipe.report import plots
from tootpipe import steps
from tootpipe.report.bench import bench_result

params, endpoints = steps.context(params_file)
plots.style()
result = steps.analytics_step(params, endpoints)
if result.get("reused"):
    print("analytics tables reused from their last complete run (seconds: that run's); "
          "`tootpipe batch analytics --force` computes them again")
pd.DataFrame({"rows": result["rows"], "seconds": result["seconds_per_table"]})

# %%
db.query_df(endpoints.database_url, "SELECT * FROM daily_toot_counts ORDER BY day")

# %%
db.query_df(endpoints.database_url, "SELECT * FROM top_hashtag_per_day ORDER BY day")

# %%
db.query_df(endpoints.database_url, 'SELECT * FROM "active_users_gtX" ORDER BY cnt DESC LIMIT 10')

# %% [markdown]
# ## Do the stream and the batch agree?
# They should, except where the stream saw a toot later than its watermark: the toot is stored, but its one-minute
# window was already final and it stays out of it. The batch job counts everything and has no watermark.

# %%
rec = checks.reconciliation_summary(endpoints.database_url)
print(f"{rec['hours']} hours compared; stream total {rec['stream_total']}, batch total {rec['batch_total']}; "
      + ("they agree in every hour." if not rec["hours_differing"] else f"they differ in {rec['hours_differing']} "
         f"hours (see below); {rec['beyond_watermark']} rows reached the stream beyond its watermark."))
plots.reconciliation(rec["table"]);

# %%
rec["differing"]

# %% [markdown]
# ## At a million toots
# Measured by `bench/batch.py`: backfill, clean, and the analytics computed three ways (read once and cached, as
# here; each table from scratch; the original assignment's `repartition(4).cache()`):

# %%
bench_result("batch")
