"""Charts for the notebooks: pandas DataFrame in, matplotlib Figure out, one seaborn style.

Every chart has a title and units, and says so plainly when it has no data (an explicit empty state).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

__all__ = ["style", "figure_title", "toots_per_minute", "sentiment_distribution", "top_hashtags", "stream_health",
           "reconciliation", "activity_heatmap", "empty_figure", "confusion_matrix", "sentiment_over_time",
           "toots_per_day", "hashtag_trend", "problems_summary"]

PALETTE = {"negative": "#d1495b", "neutral": "#8d99ae", "positive": "#2a9d8f", "unsupported": "#dddddd"}


def style() -> None:
    """The charts' seaborn theme, with matplotlib's math text off; in a notebook kernel, also
    :func:`_caption_outputs`."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["text.parse_math"] = False  # labels are toots' text: a hashtag like $\x$ is text, never math
    _caption_outputs()


def figure_title(fig) -> str:
    """A figure's suptitle, else the first of its axes titles ("" when it has none)."""
    return fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")


def _caption_outputs() -> None:
    """Each figure's PNG output carries its title in the output's metadata (``{"image/png": {"title": ...}}``),
    which the report index shows as the figure's caption. Nothing outside an IPython kernel."""
    try:
        from IPython import get_ipython  # lazy: IPython
        from matplotlib.figure import Figure  # lazy: matplotlib
    except ImportError:  # pragma: no cover - IPython comes with the notebooks' dependencies
        return
    shell = get_ipython()
    if shell is None:
        return
    import matplotlib  # lazy: matplotlib
    plt.switch_backend(matplotlib.get_backend())  # loading the inline backend registers its formatter: now
    png = shell.display_formatter.formatters["image/png"]
    try:
        render = png.lookup_by_type(Figure)  # matplotlib_inline's own
    except KeyError:
        return
    if getattr(render, "captioned", False):
        return

    def captioned(fig, **kwargs):
        data = render(fig, **kwargs)
        return (data, {"title": figure_title(fig)}) if data is not None and figure_title(fig) else data
    captioned.captioned = True
    png.for_type(Figure, captioned)


def empty_figure(title: str, note: str = "no data yet: run the earlier notebooks"):
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.set_title(title)
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=12, color="#666", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def toots_per_minute(counts: pd.DataFrame, title: str = "Toots per minute (stream windows)"):
    """`counts` has window_start, cnt; draws the counts and a 15-minute rolling mean."""
    if counts.empty:
        return empty_figure(title)
    s = counts.set_index(pd.to_datetime(counts["window_start"], utc=True))["cnt"].sort_index()
    s = s.resample("1min").sum()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.plot(s.index, s.values, lw=0.6, alpha=0.5, label="per minute")
    ax.plot(s.index, s.rolling(15, min_periods=1).mean(), lw=2, label="15-minute rolling mean")
    ax.set(title=title, xlabel="event time (UTC)", ylabel="toots / minute")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def sentiment_distribution(sent: pd.DataFrame, title: str = "Sentiment of toots"):
    """`sent` has sentiment_name and language."""
    if sent.empty:
        return empty_figure(title)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2]})
    order = [k for k in PALETTE if k in set(sent["sentiment_name"])]
    sns.countplot(data=sent, x="sentiment_name", order=order, hue="sentiment_name", palette=PALETTE, legend=False,
                  ax=axes[0])
    axes[0].set(title=title, xlabel="", ylabel="toots")
    by_lang = sent.assign(language=sent["language"].fillna("?")).groupby(["language", "sentiment_name"]).size() \
        .unstack(fill_value=0)
    by_lang = by_lang.loc[by_lang.sum(axis=1).sort_values(ascending=False).index[:10]]
    by_lang[[c for c in order if c in by_lang]].plot(kind="bar", stacked=True, ax=axes[1],
                                                      color=[PALETTE[c] for c in order if c in by_lang])
    axes[1].set(title="by language (top 10)", xlabel="language", ylabel="toots")
    fig.tight_layout()
    return fig


def top_hashtags(tags: pd.DataFrame, n: int = 15, title: str = "Top hashtags"):
    """`tags` has hashtag, cnt (summed over days when a day column is present)."""
    if tags.empty:
        return empty_figure(title)
    top = tags.groupby("hashtag", as_index=False)["cnt"].sum().nlargest(n, "cnt")
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2))
    sns.barplot(data=top, y="hashtag", x="cnt", color="#457b9d", ax=ax)
    ax.set(title=title, xlabel="toots", ylabel="")
    return fig


def stream_health(progress: pd.DataFrame, title: str = "Streaming query health"):
    """`progress` is the `stream_progress` table (the lag and Spark's commit time are drawn when recorded)."""
    if progress.empty:
        return empty_figure(title)
    p = progress.sort_values("batch_id")
    fig, axes = plt.subplots(2, 2, figsize=(13, 6.5))
    (rows_ax, time_ax), (rate_ax, lag_ax) = axes
    rows_ax.bar(p["batch_id"], p["input_rows"], color="#457b9d")
    rows_ax.set(title="rows per micro-batch", xlabel="batch", ylabel="rows")
    time_ax.bar(p["batch_id"], p["collect_s"], label="read + parse", color="#a8dadc")
    time_ax.bar(p["batch_id"], p["write_s"], bottom=p["collect_s"], label="PostgreSQL transaction", color="#1d3557")
    if "commit_ms" in p and p["commit_ms"].notna().any():
        time_ax.bar(p["batch_id"], p["commit_ms"].fillna(0) / 1000, bottom=p["collect_s"] + p["write_s"],
                    label="Spark checkpoint commit", color="#e9c46a")
    time_ax.set(title="batch duration", xlabel="batch", ylabel="seconds")
    time_ax.legend()
    rate_ax.plot(p["batch_id"], p["rows_per_s"], marker="o")
    rate_ax.set(title="throughput", xlabel="batch", ylabel="rows / s")
    if "lag" in p and p["lag"].notna().any():
        lag_ax.plot(p["batch_id"], p["lag"], marker="o", color="#d1495b")
        lag_ax.set(title="lag: messages waiting after the batch", xlabel="batch", ylabel="messages")
    else:
        lag_ax.text(0.5, 0.5, "no lag recorded", ha="center", va="center", transform=lag_ax.transAxes)
        lag_ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def reconciliation(rec: pd.DataFrame, title: str = "Stream vs batch, toots per hour"):
    if rec.empty:
        return empty_figure(title)
    r = rec.assign(hour=pd.to_datetime(rec["hour"], utc=True)).sort_values("hour")
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.plot(r["hour"], r["stream_cnt"], marker=".", label="stream (sum of 1-minute windows)")
    ax.plot(r["hour"], r["batch_cnt"], ls="--", label="batch (toots_clean)")
    ax.bar(r["hour"], r["diff"], width=0.03, color="#d1495b", label="difference")
    ax.set(title=title, xlabel="hour (UTC)", ylabel="toots / hour")
    ax.legend()
    fig.autofmt_xdate()
    return fig


def activity_heatmap(posts: pd.DataFrame, title: str = "When people toot (UTC)"):
    """`posts` has created_at."""
    if posts.empty:
        return empty_figure(title)
    t = pd.to_datetime(posts["created_at"], utc=True)
    grid = pd.crosstab(t.dt.day_name(), t.dt.hour).reindex(
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]).fillna(0)
    fig, ax = plt.subplots(figsize=(12, 3.8))
    sns.heatmap(grid, cmap="mako_r", ax=ax, cbar_kws={"label": "toots"})
    ax.set(title=title, xlabel="hour of day", ylabel="")
    return fig


def confusion_matrix(metrics: dict, title: str = "Confusion matrix, SemEval-2017 dev"):
    """`metrics` from sentiment.metrics_from_predictions (confusion rows = true, columns = predicted)."""
    if not metrics.get("n"):
        return empty_figure(title, "no evaluation rows")
    labels = metrics["labels"]
    grid = pd.DataFrame(metrics["confusion"], index=labels, columns=labels)
    share = grid.div(grid.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.heatmap(share, annot=grid, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "share of the true class"})
    ax.set(title=title, xlabel="predicted", ylabel="true")
    return fig


def sentiment_over_time(sent: pd.DataFrame, freq: str = "1h", title: str = "Sentiment over time"):
    """`sent` has created_at and sentiment_name; shares of each class per `freq` (unsupported left out)."""
    sent = sent[sent["sentiment_name"] != "unsupported"] if not sent.empty else sent
    if sent.empty:
        return empty_figure(title, "no scored toots yet: run 05_sentiment")
    t = pd.to_datetime(sent["created_at"], utc=True).dt.floor(freq)
    counts = pd.crosstab(t, sent["sentiment_name"])
    shares = counts.div(counts.sum(axis=1), axis=0)
    order = [c for c in ("negative", "neutral", "positive") if c in shares]
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.stackplot(shares.index, *[shares[c] for c in order], labels=order, colors=[PALETTE[c] for c in order],
                 alpha=0.9)
    ax.set(title=title, xlabel=f"event time (UTC), per {freq}", ylabel="share of scored toots", ylim=(0, 1))
    ax.legend(loc="upper left", ncols=3)
    fig.autofmt_xdate()
    return fig


def toots_per_day(daily: pd.DataFrame, title: str = "Toots per day (batch)"):
    """`daily` is `daily_toot_counts` (day, cnt)."""
    if daily.empty:
        return empty_figure(title)
    d = daily.sort_values("day")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(pd.to_datetime(d["day"]).dt.strftime("%Y-%m-%d"), d["cnt"], color="#457b9d")
    ax.set(title=title, xlabel="day (UTC)", ylabel="toots")
    return fig


def hashtag_trend(tags: pd.DataFrame, n: int = 5, title: str = "Top hashtags per day"):
    """`tags` is `hashtags_per_day_counts` (day, hashtag, cnt); the `n` most used hashtags over the days."""
    if tags.empty:
        return empty_figure(title)
    top = tags.groupby("hashtag")["cnt"].sum().nlargest(n).index
    grid = tags[tags["hashtag"].isin(top)].pivot_table(index="day", columns="hashtag", values="cnt",
                                                       aggfunc="sum", fill_value=0).sort_index()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for tag in top:
        ax.plot(pd.to_datetime(grid.index), grid[tag], marker="o", label=f"#{tag}")
    ax.set(title=title, xlabel="day (UTC)", ylabel="toots")
    ax.legend(loc="upper left", ncols=min(n, 5))
    fig.autofmt_xdate()
    return fig


def problems_summary(problems: pd.DataFrame, title: str = "Dead letters, stream errors and batch rejects"):
    """`problems` has stage and reason (one row per problem record)."""
    if problems.empty:
        return empty_figure(title, "no dead letters, stream errors or rejects: every record was usable")
    p = problems.assign(reason=(problems["reason_class"] if "reason_class" in problems else
                                problems["reason"]).fillna("?").str.slice(0, 60))
    counts = p.groupby(["stage", "reason"]).size().rename("records").reset_index().nlargest(15, "records")
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(counts) + 1.4))
    sns.barplot(data=counts, y="reason", x="records", hue="stage", dodge=False, ax=ax)
    ax.set(title=title, xlabel="records", ylabel="")
    return fig
