"""tootpipe: Mastodon toots through Kafka, Spark Structured Streaming and PostgreSQL, with MLlib sentiment.

One module per concern: config, services (embedded broker and database), schema and normalize (the toot record),
sample and mastodon_source (where toots come from), kafka_io, spark_session, kafka_source (Kafka for Spark),
db, streaming, batch, sentiment, plots, reports.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
