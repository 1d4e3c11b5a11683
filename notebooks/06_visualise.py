# %% [markdown]
# # 06 · Visualise
#
# The state of the pipeline at the end of the run, read from PostgreSQL.

# %% tags=["parameters"]
params_file = "params/default.yaml"
run_id = "interactive"

# %%
import pandas as pd
from tootpipe import steps, db, plots

params, ep = steps.context(params_file)
plots.style()
pd.Series(db.table_counts(ep.database_url, steps.TABLES), name="rows").to_frame()

# %%
plots.toots_per_minute(db.query_df(ep.database_url, "SELECT window_start, cnt FROM streamed_toot_counts"));

# %%
plots.activity_heatmap(db.query_df(ep.database_url, "SELECT created_at FROM mastodon_posts"));

# %%
plots.top_hashtags(db.query_df(ep.database_url, "SELECT hashtag, cnt FROM hashtags_per_day_counts"));

# %%
plots.sentiment_distribution(db.query_df(ep.database_url, "SELECT language, sentiment_name FROM mastodon_sentiments"));

# %%
plots.reconciliation(db.query_df(ep.database_url, "SELECT * FROM stream_batch_reconciliation"));

# %%
plots.stream_health(db.query_df(ep.database_url, "SELECT * FROM stream_progress"));
