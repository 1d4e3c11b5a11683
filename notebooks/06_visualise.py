# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Visualise
#
# The state of the pipeline at the end of the run, read from PostgreSQL (and the dead-letter topic). Every chart
# says so plainly when it has nothing to show yet.

# %% tags=["parameters"]
params_file = "params/default.yaml"

# %%
import pandas as pd
from tootpipe.postgres import db
from tootpipe import pipeline
from tootpipe.report import plots
from tootpipe import steps

params, endpoints = steps.context(params_file)
plots.style()
q = lambda sql: db.query_df(endpoints.database_url, sql)
pd.Series(db.table_counts(endpoints.database_url, pipeline.tables()), name="rows").to_frame()

# %% [markdown]
# ## Volume

# %%
plots.toots_per_minute(q("SELECT window_start, cnt FROM streamed_toot_counts"));

# %%
plots.toots_per_day(q("SELECT day, cnt FROM daily_toot_counts"));

# %%
plots.activity_heatmap(q("SELECT created_at FROM mastodon_posts"));

# %% [markdown]
# ## Hashtags

# %%
tags = q("SELECT day, hashtag, cnt FROM hashtags_per_day_counts")
plots.top_hashtags(tags);

# %%
plots.hashtag_trend(tags);

# %% [markdown]
# ## Sentiment

# %%
sent = q("SELECT s.language, s.sentiment_name, p.created_at FROM mastodon_sentiments s "
         "JOIN mastodon_posts p USING (uri)")
plots.sentiment_distribution(sent);

# %%
plots.sentiment_over_time(sent);

# %% [markdown]
# ## Pipeline health

# %%
plots.reconciliation(q("SELECT * FROM stream_batch_reconciliation"));

# %%
# the query that committed last (one checkpoint per query and broker lifetime)
plots.stream_health(q("SELECT * FROM stream_progress WHERE checkpoint = (SELECT checkpoint FROM stream_progress "
                      "ORDER BY committed_at DESC LIMIT 1)"));

# %% [markdown]
# Every record the pipeline could not use, by stage and kind: dead letters of ingest (payloads that never became a
# record), error rows of the stream and rejects of the batch (messages another producer wrote, or records the
# database could not take). None of them stopped anything.

# %%
problems = steps.problems_step(params, endpoints)
problems.groupby(["stage", "reason_class"]).size().rename("records").to_frame() if len(problems) else \
    "no dead letters, stream errors or rejects"

# %%
plots.problems_summary(problems);
