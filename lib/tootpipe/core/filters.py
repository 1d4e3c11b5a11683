"""The toot filters, declared once in :data:`RULES`: the producer's Python predicate (:func:`filter_reason`) and
the Spark jobs' column (:func:`keep_column`) are both built from that table, so they cannot disagree.

Each rule reads one :class:`~tootpipe.core.config.FilterParams` field and tests one record field (named `field` in a
normalised record, `column` in a parsed Spark row) in one of four ways. Deletes always pass. `respect_opt_out` is
not a record rule: opted-out accounts are dropped before a record exists (:func:`tootpipe.ingest.normalize.opted_out`).
Adding a filter = one `FilterParams` field and one `Rule` line (and, for a new kind of test, its two halves below).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Rule", "RULES", "NOT_RECORD_RULES", "filter_reason", "keep_column", "keyword_pattern"]


@dataclass(frozen=True)
class Rule:
    """`param` (a FilterParams field) -> records whose `field` fails `test` are dropped with `reason`.

    Tests: "equals_or_null" (the field is `value` or missing; on when the param is true), "not_true" (the flag is
    false or missing; on when the param is true), "in_list" (the field, lower-cased, is one of the param's values;
    on when the list is not empty), "keyword" (a param word occurs on word boundaries, case-insensitively, in the
    field or in one of `also`'s values; on when the list is not empty)."""
    param: str
    reason: str
    test: str
    field: str
    column: str
    value: str | None = None
    also: str | None = None


RULES = (
    Rule("public_only", "not public", "equals_or_null", "visibility", "visibility", value="public"),
    Rule("exclude_reblogs", "reblog", "not_true", "is_reblog", "is_reblog"),
    Rule("exclude_replies", "reply", "not_true", "is_reply", "is_reply"),
    Rule("languages", "language", "in_list", "language", "language"),
    Rule("keywords", "keyword", "keyword", "text", "content", also="hashtags"),
)
NOT_RECORD_RULES = {"respect_opt_out": "applied to the account before a record exists (normalize.opted_out)"}


def keyword_pattern(keywords: list[str]) -> str:
    """The case-insensitive, word-boundary regular expression of keyword filtering (Python and Spark)."""
    return r"(?i)(^|[^\w])(" + "|".join(re.escape(k) for k in keywords) + r")($|[^\w])"


@lru_cache(maxsize=64)
def _keyword_regex(keywords: tuple[str, ...]) -> re.Pattern:
    return re.compile(keyword_pattern(list(keywords)))


def _passes(rule: Rule, record: dict, arg) -> bool:
    v = record.get(rule.field)
    if rule.test == "equals_or_null":
        return v in (rule.value, None)
    if rule.test == "not_true":
        return not v
    if rule.test == "in_list":
        return (v or "").lower() in {a.lower() for a in arg}
    pat = _keyword_regex(tuple(arg))
    return bool(pat.search(v or "")) or any(pat.search(t) for t in record.get(rule.also) or [])


def filter_reason(record: dict, filters) -> str | None:
    """Why a normalised record is filtered out under `filters` (:class:`~tootpipe.core.config.FilterParams`), or None
    to keep it."""
    if record.get("event") == "delete":
        return None
    for rule in RULES:
        arg = getattr(filters, rule.param)
        if arg and not _passes(rule, record, arg):
            return rule.reason
    return None


def _column_passes(rule: Rule, arg):
    from pyspark.sql import functions as F  # lazy: pyspark
    c = F.col(rule.column)
    if rule.test == "equals_or_null":
        return F.coalesce(c, F.lit(rule.value)) == rule.value
    if rule.test == "not_true":
        return ~F.coalesce(c, F.lit(False))
    if rule.test == "in_list":
        return F.lower(F.coalesce(c, F.lit(""))).isin(*[a.lower() for a in arg])
    pat = keyword_pattern(arg)
    return F.coalesce(c, F.lit("")).rlike(pat) | \
        F.exists(F.coalesce(F.col(rule.also), F.array().cast("array<string>")), lambda t: t.rlike(pat))


def keep_column(filters):
    """A boolean Spark column over parsed rows: true for deletes, error rows and the toots `filters` keeps."""
    from pyspark.sql import functions as F  # lazy: pyspark
    keep = F.lit(True)
    for rule in RULES:
        arg = getattr(filters, rule.param)
        if arg:
            keep &= _column_passes(rule, arg)
    return (F.col("event") == "delete") | F.col("error").isNotNull() | keep
