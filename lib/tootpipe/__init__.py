"""tootpipe: Mastodon toots through Kafka, Spark Structured Streaming and PostgreSQL, with MLlib sentiment.

The packages mirror the pipeline, each importing only those below it (docs/architecture.md; a test keeps it so):
`core` (parameters, paths, errors, schema, filters) <- `services`, `kafka`, `postgres`, `spark` (the parts) <-
`ingest`, `stream`, `batch`, `sentiment` (the stages) <- `report` (runner, HTML, charts, checks) <- `steps`,
`pipeline`, `cli` (the stage contract and the entry points).
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
