"""The pipeline contract: the stages in order, each with its notebook, step functions, parameter sections and the
tables it reads and writes. `run_all` runs these notebooks, the report index shows this table, the run's table
counts cover every table written here, and the README's table list is :func:`markdown` (a test keeps it so).

    python -m tootpipe.pipeline      # the table as markdown
"""
from __future__ import annotations

from dataclasses import dataclass

from tootpipe.batch.analytics import RECONCILIATION, TABLES as ANALYTICS_TABLES

__all__ = ["Stage", "STAGES", "TOPIC", "tables", "markdown"]

TOPIC = "Kafka topic (kafka.topic)"


@dataclass(frozen=True)
class Stage:
    notebook: str            # the file name in notebooks/, without .py
    title: str
    steps: tuple[str, ...]   # functions of tootpipe.steps the notebook calls
    params: tuple[str, ...]  # parameter sections it reads
    reads: tuple[str, ...]
    writes: tuple[str, ...]


STAGES = (
    Stage("01_ingest", "Mastodon (or the bundled sample) into Kafka, at least once", ("ingest_step",),
          ("source", "filters", "kafka"), ("the Mastodon API, or the bundled sample",), (TOPIC,)),
    Stage("02_stream", "Kafka into PostgreSQL with Spark Structured Streaming, exactly once", ("stream_step",),
          ("stream", "filters", "kafka", "spark"), (TOPIC,),
          ("mastodon_posts", "streamed_toot_counts", "avg_toot_length_by_user", "stream_errors", "stream_ledger",
           "stream_progress", "toot_ids", "toot_deletes", "deleted_uris")),
    Stage("03_batch", "Backfill from Kafka offsets, clean and de-duplicate", ("backfill_step", "clean_step"),
          ("filters", "kafka", "spark"), (TOPIC,), ("toots_raw", "backfill_ranges", "toots_clean", "toots_rejects",
                                               "step_runs")),
    Stage("04_analytics", "Analytics tables and the stream/batch reconciliation", ("analytics_step",),
          ("analytics", "spark"), ("toots_clean", "streamed_toot_counts", "step_runs"),
          (*ANALYTICS_TABLES, RECONCILIATION, "step_runs")),
    Stage("05_sentiment", "Sentiment models (Spark MLlib): select, train, score", ("train_variants_step",
          "baselines_step", "score_step"), ("sentiment", "spark"), ("mastodon_posts",), ("mastodon_sentiments",)),
    Stage("06_visualise", "Charts and the problems table", ("problems_step",), ("kafka",),
          ("mastodon_posts", "streamed_toot_counts", "daily_toot_counts", "hashtags_per_day_counts",
           "mastodon_sentiments", RECONCILIATION, "stream_progress", "stream_errors", "toots_rejects",
           "dead-letter topic (kafka.dlq_topic)"), ()),
)


def tables() -> list[str]:
    """Every PostgreSQL table a stage writes, in pipeline order."""
    return list(dict.fromkeys(t for s in STAGES for t in s.writes if t != TOPIC))


def markdown() -> str:
    """The stages as a markdown table (table names in code style)."""
    def fmt(names):
        return ", ".join(f"`{n}`" if n.isidentifier() else n for n in names) or "-"
    rows = ["| stage | what | reads | writes |", "|---|---|---|---|"]
    for s in STAGES:
        rows.append(f"| `{s.notebook}` | {s.title} | {fmt(s.reads)} | {fmt(s.writes)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
