"""The pipeline on Dagster: the tables of the stage contract (`tootpipe.pipeline.STAGES`) as assets, grouped by
stage, each stage materialized by executing its notebook through the project's own runner (one process, one shared
Spark driver JVM per run); the invariants of `report.checks` as asset checks; a sensor on the topic's offsets and a
schedule from the parameters. `definitions` is what `dagster dev -m` loads (`tootpipe orchestrate`)."""

__all__ = ["assets", "sensors", "definitions", "home"]
