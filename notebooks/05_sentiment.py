# %% [markdown]
# # 05 · Sentiment with Spark MLlib
#
# Trained on real human-labelled tweets (SemEval 2013-2016), measured on newer tweets (SemEval-2017 dev, the
# distribution the model is judged on) and on TweetEval validation (same pool as training, so it flatters every
# model). The metric is macro-averaged recall, TweetEval's official one (published on the 2017 test set: SVM 62.9,
# FastText 65.2, Twitter-RoBERTa 72.6). Nothing is ever trained on either evaluation set; the default model's
# regularisation was chosen on the training data alone (fit on older tweets, scored on the newest 20%:
# `tootpipe sentiment train --tune`). Toots in a language without a model are marked `unsupported`, never guessed.

# %% tags=["parameters"]
params_file = "params/default.yaml"
run_id = "interactive"
variants = ["seed", "balanced_ngrams", "vader_ngrams"]

# %%
import pandas as pd
from tootpipe import steps, db, plots

params, ep = steps.context(params_file)
plots.style()
METRICS = ("macro_recall", "macro_f1", "accuracy")
SETS = ("semeval2017_dev", "tweeteval_val")

# %% [markdown]
# ## Baselines and variants
# The seed's keyword auto-labelling and VADER alone need no training. The seed's pipeline removes stop words,
# which drops negations ("not", "no"); `balanced_ngrams` keeps them, masks URLs and mentions, keeps emoji and
# emoticons as tokens, adds bigrams and balances the classes; `vader_ngrams` adds VADER's six scores as features
# and regularises strongly, so the lexicon carries the model on newer tweets.

# %%
baselines = steps.baselines_step(params)
results = {v: steps.train_step(params, v) for v in variants}
rows = [{"model": name, "train_s": 0.0, **{f"{ds}_{m}": r[ds][m] for ds in SETS for m in METRICS}}
        for name, r in baselines.items()]
rows += [{"model": v, "train_s": r["train_s"], "reused": r.get("cached", False),
          **{f"{ds}_{m}": r[ds][m] for ds in SETS for m in METRICS}} for v, r in results.items()]
table = pd.DataFrame(rows).set_index("model")
reused = [v for v, r in results.items() if r.get("cached")]
print(f"reused from the model cache (same data, parameters and code; `sentiment.retrain: true` trains again): "
      f"{', '.join(reused) or 'none'}; train_s is the time of the original training")
table

# %%
default = params.sentiment.variant if params.sentiment.variant in results else variants[-1]
dev = table.loc[default, "semeval2017_dev_macro_recall"]
print(f"default model {default}: macro-recall {dev:.3f} on SemEval-2017 dev "
      f"({'meets' if dev >= 0.62 else 'below'} the 0.62 requirement; goal 0.66)")
plots.confusion_matrix(results[default]["semeval2017_dev"]);

# %% [markdown]
# ## Other languages (XLM-T, one model each)
# Trained on each language's XLM-T train split (1,839 tweets) and measured on its validation split. A model whose
# macro-recall stays below `sentiment.min_language_recall` is no better than a guess: it is not kept, and toots in
# that language are marked unsupported.

# %%
langs = results[default].get("languages", {})
pd.DataFrame([{"language": code, "kept": m["kept"], "train_s": m["train_s"],
               **{k: m["xlmt_val"][k] for k in METRICS}}
              for code, m in langs.items()]) if langs else "only English is configured (sentiment.languages)"

# %% [markdown]
# ## Score the stored toots with the default model set

# %%
scored = steps.score_step(params, ep, results[default]["model"])
scored

# %%
sent = db.query_df(ep.database_url, "SELECT language, sentiment_name FROM mastodon_sentiments")
plots.sentiment_distribution(sent);

# %% [markdown]
# ## Scoring speed
# Measured by `bench/sentiment.py` through the saved pipelines:

# %%
steps.bench_result("sentiment")
