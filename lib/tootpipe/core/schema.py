"""The toot record: one documented JSON object per Mastodon event, defined once.

Python (the producer, the tests) and Spark (the stream and the batch jobs) both derive their view from
:data:`FIELDS`, so the schema cannot drift between them.
"""
from __future__ import annotations

__all__ = ["safe_text", "FIELDS", "ACCOUNT_FIELDS", "EVENTS", "spark_ddl", "RECORD_VERSION", "LIMITS", "TIME_FORMATS",
           "EPOCH_PATTERN"]

RECORD_VERSION = 1

# The longest value (in characters) each field may hold, decided once: the producer sends a longer one to the
# dead-letter topic, the stream and the backfill turn a longer one (from another producer) into an error row.
# The keys are indexed in PostgreSQL, whose btree entries must stay under ~2.7 KB: 2,048 characters of ASCII
# (what a uri, id or handle is) leave room for the other columns of an index entry.
LIMITS: dict[str, int] = {
    "uri": 2048, "id": 256, "instance": 253, "acct": 512, "username": 512, "language": 35, "visibility": 32,
    "text": 2_000_000, "content_html": 4_000_000,  # a record must also fit the 8 MiB Kafka message limit
}
EVENTS = ("update", "status.update", "delete")

# The timestamp formats read from Mastodon data and other producers, one list for both parsers
# (normalize.parse_time in Python, transforms.parse_time_col in Spark): (strptime format, Spark datetime pattern,
# a prefix regex Spark removes first: Spark 3+ cannot parse day names). Fractions of 1-6 digits on both sides;
# both also read epoch seconds or milliseconds.
TIME_FORMATS: tuple[tuple[str, str, str | None], ...] = (
    ("%Y-%m-%dT%H:%M:%S.%f%z", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", None),
    ("%Y-%m-%dT%H:%M:%S%z", "yyyy-MM-dd'T'HH:mm:ssXXX", None),
    ("%Y-%m-%d %H:%M:%S.%f%z", "yyyy-MM-dd HH:mm:ss.SSSSSSXXX", None),
    ("%Y-%m-%d %H:%M:%S%z", "yyyy-MM-dd HH:mm:ssXXX", None),
    ("%Y-%m-%d %H:%M:%S", "yyyy-MM-dd HH:mm:ss", None),
    ("%Y-%m-%dT%H:%M:%S", "yyyy-MM-dd'T'HH:mm:ss", None),
    ("%Y-%m-%dT%H:%M:%S.%f", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS", None),
    ("%a %b %d %H:%M:%S %z %Y", "MMM dd HH:mm:ss Z yyyy", r"^[A-Za-z]{3} "),  # Twitter style
)
EPOCH_PATTERN = r"\d{9,13}(\.\d+)?"  # epoch seconds (9-11 digits) or milliseconds (12-13)

# name -> (Spark SQL type, description)
ACCOUNT_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("STRING", "account id, local to `instance`"),
    "acct": ("STRING", "user@domain (or a keyed pseudonym)"),
    "username": ("STRING", "local part of acct (or a keyed pseudonym)"),
    "display_name": ("STRING", "display name"),
    "bot": ("BOOLEAN", "the account says it is a bot"),
    "followers_count": ("BIGINT", "followers at ingestion"),
}

FIELDS: dict[str, tuple[str, str]] = {
    "v": ("INT", "record version"),
    "event": ("STRING", "update | status.update (an edit) | delete"),
    "uri": ("STRING", "federated identity of the status; the Kafka key; null for a delete"),
    "id": ("STRING", "status id, local to `instance`"),
    "instance": ("STRING", "host the event was read from"),
    "created_at": ("STRING", "UTC ISO-8601 creation time"),
    "edited_at": ("STRING", "UTC ISO-8601 time of the last edit, or null"),
    "account": ("STRUCT<" + ", ".join(f"{k}: {t}" for k, (t, _) in ACCOUNT_FIELDS.items()) + ">", "author"),
    "language": ("STRING", "ISO 639 language code given by the author's client, or null"),
    "visibility": ("STRING", "public | unlisted | private | direct"),
    "text": ("STRING", "plain text from the HTML content: paragraphs and line breaks kept, entities decoded"),
    "content_html": ("STRING", "HTML content as received"),
    "hashtags": ("ARRAY<STRING>", "lower-case hashtags"),
    "mentions": ("ARRAY<STRING>", "acct of mentioned accounts"),
    "urls": ("ARRAY<STRING>", "links in the content (not hashtags or mentions)"),
    "media_count": ("INT", "number of media attachments"),
    "media_types": ("ARRAY<STRING>", "type of each attachment"),
    "is_reblog": ("BOOLEAN", "a boost of another status"),
    "reblog_uri": ("STRING", "uri of the boosted status"),
    "is_reply": ("BOOLEAN", "a reply"),
    "in_reply_to_id": ("STRING", "local id of the status replied to"),
    "replies_count": ("BIGINT", "replies at ingestion"),
    "reblogs_count": ("BIGINT", "boosts at ingestion"),
    "favourites_count": ("BIGINT", "favourites at ingestion"),
    "sensitive": ("BOOLEAN", "marked sensitive"),
    "spoiler_text": ("STRING", "content warning"),
    "ingested_at": ("STRING", "UTC ISO-8601 time the producer read the event"),
}


def spark_ddl(fields: frozenset[str] | None = None) -> str:
    """The record schema as a Spark DDL string (for `from_json`); `fields`: only these top-level fields."""
    return ", ".join(f"`{name}` {typ}" for name, (typ, _) in FIELDS.items() if fields is None or name in fields)

def safe_text(s: str) -> str:
    """`s` without NUL characters and with lone surrogates replaced: what JSON encoders and PostgreSQL accept."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = s.encode("utf-8", "replace").decode("utf-8")
    return s
