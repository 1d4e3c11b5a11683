# %% [markdown]
# # 05 · Sentiment with Spark MLlib
#
# Trained on real human-labelled tweets (SemEval 2013-2016), measured on newer tweets (SemEval-2017, the
# distribution the model is judged on) and on TweetEval validation (same pool as training, so it flatters every
# model). The metric is macro-averaged recall, TweetEval's official one. Toots in a language without a model are
# marked `unsupported`, never guessed.

# %% tags=["parameters"]
params_file = "params/default.yaml"
run_id = "interactive"
variants = ["seed", "balanced_ngrams"]

# %%
import pandas as pd
from tootpipe import steps, db, plots

params, ep = steps.context(params_file)
plots.style()
results = {v: steps.train_step(params, v) for v in variants}
table = pd.DataFrame([{"variant": v, "train_s": r["train_s"],
                       **{f"{ds}_{m}": r[ds][m] for ds in ("semeval2017_dev", "tweeteval_val")
                          for m in ("macro_recall", "macro_f1", "accuracy")}} for v, r in results.items()])
table

# %%
best = variants[-1]
conf = pd.DataFrame(results[best]["semeval2017_dev"]["confusion"], index=["true " + l for l in results[best]["semeval2017_dev"]["labels"]],
                    columns=["pred " + l for l in results[best]["semeval2017_dev"]["labels"]])
conf

# %% [markdown]
# ## Score the stored toots with the newest model

# %%
scored = steps.score_step(params, ep, results[best]["model"])
scored

# %%
sent = db.query_df(ep.database_url, "SELECT language, sentiment_name FROM mastodon_sentiments")
plots.sentiment_distribution(sent);
