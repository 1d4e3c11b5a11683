"""Mastodon API payloads -> toot records (see :mod:`tootpipe.schema`), filters and opt-outs.

Pure functions. :func:`normalize_event` raises :class:`BadPayload` with a reason for anything it cannot use;
callers send those to the dead-letter topic and carry on.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import urlsplit

from selectolax.lexbor import LexborHTMLParser

from .schema import RECORD_VERSION

__all__ = [
    "BadPayload", "html_to_text", "normalize_status", "normalize_event", "parse_time", "opted_out",
    "filter_reason", "pseudonymise", "utc_now_iso", "parse_sse",
]


class BadPayload(ValueError):
    """A payload that cannot become a record; the message is the reason."""


_BLOCK = {"p", "div", "blockquote", "li", "ul", "ol", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}
_DROP = {"script", "style", "template", "noscript", "iframe", "object"}


def _extract(html: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Text pieces and links (href, class) of an HTML fragment, parsed by a real HTML5 parser (lexbor).

    Walks the tree with an explicit stack, so hostile nesting depth cannot overflow Python's recursion limit.
    """
    parts: list[str] = []
    hrefs: list[tuple[str, str]] = []
    if not html:
        return parts, hrefs
    body = LexborHTMLParser(html).body
    if body is None:
        return parts, hrefs
    stack: list = list(body.iter(include_text=True))[::-1]
    while stack:
        node = stack.pop()
        if node.__class__ is str:
            parts.append(node)
            continue
        tag = node.tag
        if tag == "-text":
            parts.append(node.text_content)
        elif tag == "br":
            parts.append("\n")
        elif tag in _DROP or tag == "-comment":
            continue
        else:
            if tag == "a":
                attrs = node.attributes
                if attrs.get("href"):
                    hrefs.append((attrs["href"], attrs.get("class") or ""))
            if tag in _BLOCK:
                parts.append("\n\n")
                stack.append("\n\n")
            stack.extend(list(node.iter(include_text=True))[::-1])
    return parts, hrefs


_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_NEWLINES = re.compile(r"\n{3,}")


def _join(parts: list[str]) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n")]
    return _NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str | None) -> str:
    """Plain text of Mastodon HTML: paragraphs become blank lines, <br> a newline, entities decoded,
    tags and the content of script/style dropped."""
    return _join(_extract(html or "")[0])


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S.%f%z",
                 "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%a %b %d %H:%M:%S %z %Y")


def parse_time(value) -> datetime | None:
    """A timestamp in any of the formats seen in Mastodon data (ISO-8601 with Z or offset, space-separated,
    epoch seconds or milliseconds, Twitter style) as an aware UTC datetime; None for null/empty."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        secs = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(secs, tz=timezone.utc)
    s = str(value).strip()
    if len(s) >= 20 and s[10] == "T" and s[-1] == "Z":  # the common case: Mastodon's ISO-8601 UTC
        try:
            return datetime.fromisoformat(s).astimezone(timezone.utc)
        except ValueError:
            pass
    if re.fullmatch(r"\d{9,13}(\.\d+)?", s):
        return parse_time(float(s))
    s2 = s[:-1] + "+0000" if s.endswith("Z") else s
    for fmt in _TIME_FORMATS:
        try:
            dt = datetime.strptime(s2, fmt)
        except ValueError:
            continue
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    try:
        dt = datetime.fromisoformat(s)
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except ValueError:
        raise BadPayload(f"unreadable timestamp {s[:40]!r}") from None


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if dt else None


def utc_now_iso() -> str:
    return _iso(datetime.now(timezone.utc))


_OPT_OUT_TAGS = re.compile(r"#(nobot|noindex)\b", re.IGNORECASE)
_OPT_OUT_HINT = re.compile(r"nobot|noindex", re.IGNORECASE)  # cheap test before parsing the HTML


def opted_out(account: dict) -> bool:
    """True when the account asked not to be indexed or processed: `indexable` or `discoverable` false,
    `noindex` true, or #nobot / #noindex in its bio or profile fields."""
    if account.get("indexable") is False or account.get("discoverable") is False or account.get("noindex") is True:
        return True
    texts = [account.get("note") or ""]
    for field in account.get("fields") or []:
        texts += [str(field.get("name") or ""), str(field.get("value") or "")]
    return any(_OPT_OUT_TAGS.search(html_to_text(t)) for t in texts if t and _OPT_OUT_HINT.search(t))


def pseudonymise(value: str | None, key: bytes) -> str | None:
    """A keyed, stable pseudonym (HMAC-SHA256, 16 hex chars): the same handle maps to the same pseudonym."""
    if value is None:
        return None
    return "u_" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _host(url: str | None) -> str | None:
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


def _as_int(v) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def normalize_status(status: dict, instance: str, event: str = "update", *, ingested_at: str | None = None,
                     pseudonym_key: bytes | None = None) -> dict:
    """One Mastodon Status object -> one toot record.

    Raises:
        BadPayload: not a status (no uri/id/account, wrong types, unreadable timestamp).
    """
    if not isinstance(status, dict):
        raise BadPayload(f"status is {type(status).__name__}, not an object")
    uri, sid, account = status.get("uri"), status.get("id"), status.get("account")
    if not uri or not isinstance(uri, str):
        raise BadPayload("status has no uri")
    if sid is None:
        raise BadPayload("status has no id")
    if not isinstance(account, dict) or not account.get("acct"):
        raise BadPayload("status has no account")
    created = parse_time(status.get("created_at"))
    if created is None:
        raise BadPayload("status has no created_at")
    html = status.get("content") or ""
    if not isinstance(html, str):
        raise BadPayload("content is not a string")
    reblog = status.get("reblog") if isinstance(status.get("reblog"), dict) else None
    parts, hrefs = _extract(html)
    tags = [str(t.get("name", "")).lower() for t in status.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    mentions = [str(m.get("acct")) for m in status.get("mentions") or [] if isinstance(m, dict) and m.get("acct")]
    urls = [h for h, cls in hrefs if "mention" not in cls and "hashtag" not in cls]
    media = [m for m in status.get("media_attachments") or [] if isinstance(m, dict)]
    acct, username = str(account.get("acct")), str(account.get("username") or account.get("acct")).split("@")[0]
    if pseudonym_key:
        acct, username = pseudonymise(acct, pseudonym_key), pseudonymise(username + "@" + instance, pseudonym_key)
        mentions = [pseudonymise(m, pseudonym_key) for m in mentions]
    return {
        "v": RECORD_VERSION,
        "event": event,
        "uri": uri,
        "id": str(sid),
        "instance": instance,
        "created_at": _iso(created),
        "edited_at": _iso(parse_time(status.get("edited_at"))),
        "account": {
            "id": str(account.get("id")) if account.get("id") is not None else None,
            "acct": acct, "username": username,
            "display_name": None if pseudonym_key else account.get("display_name"),
            "bot": bool(account.get("bot")),
            "followers_count": _as_int(account.get("followers_count")),
        },
        "language": (status.get("language") or None),
        "visibility": status.get("visibility"),
        "text": _join(parts),
        "content_html": html,
        "hashtags": tags,
        "mentions": mentions,
        "urls": urls,
        "media_count": len(media),
        "media_types": [str(m.get("type")) for m in media],
        "is_reblog": reblog is not None,
        "reblog_uri": reblog.get("uri") if reblog else None,
        "is_reply": status.get("in_reply_to_id") is not None,
        "in_reply_to_id": str(status["in_reply_to_id"]) if status.get("in_reply_to_id") is not None else None,
        "replies_count": _as_int(status.get("replies_count")),
        "reblogs_count": _as_int(status.get("reblogs_count")),
        "favourites_count": _as_int(status.get("favourites_count")),
        "sensitive": bool(status.get("sensitive")),
        "spoiler_text": status.get("spoiler_text") or "",
        "ingested_at": ingested_at or utc_now_iso(),
    }


def normalize_event(event: str, data, instance: str, **kw) -> dict:
    """A streaming event (`update`, `status.update` or `delete`) -> a record.

    `data` is the SSE data (a JSON string, or an already-decoded status; for `delete`, the bare local id).
    Raises BadPayload for malformed JSON or an unusable status.
    """
    if event == "delete":
        sid = str(data).strip().strip('"')
        if not sid or len(sid) > 64 or not re.fullmatch(r"[\w.-]+", sid):
            raise BadPayload(f"delete carries no usable id: {str(data)[:40]!r}")
        return {"v": RECORD_VERSION, "event": "delete", "uri": None, "id": sid, "instance": instance,
                "ingested_at": kw.get("ingested_at") or utc_now_iso()}
    if event not in ("update", "status.update"):
        raise BadPayload(f"event {event!r} is not a status event")
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadPayload(f"malformed JSON: {exc}") from None
    return normalize_status(data, instance, event, **kw)


def filter_reason(record: dict, filters) -> str | None:
    """Why a record is filtered out under `filters` (:class:`~tootpipe.config.FilterParams`), or None to keep it.

    Deletes always pass. Keywords match case-insensitively on word boundaries in the text and hashtags.
    """
    if record.get("event") == "delete":
        return None
    if filters.public_only and record.get("visibility") not in ("public", None):
        return "not public"
    if filters.exclude_reblogs and record.get("is_reblog"):
        return "reblog"
    if filters.exclude_replies and record.get("is_reply"):
        return "reply"
    if filters.languages and (record.get("language") or "").lower() not in {l.lower() for l in filters.languages}:
        return "language"
    if filters.keywords and not keyword_match(record, filters.keywords):
        return "keyword"
    return None


def keyword_pattern(keywords: list[str]) -> str:
    """The case-insensitive, word-boundary regular expression used for keyword filtering (Python and Spark)."""
    return r"(?i)(^|[^\w])(" + "|".join(re.escape(k) for k in keywords) + r")($|[^\w])"


@lru_cache(maxsize=64)
def _keyword_regex(keywords: tuple[str, ...]) -> re.Pattern:
    return re.compile(keyword_pattern(list(keywords)))


def keyword_match(record: dict, keywords: list[str]) -> bool:
    pat = _keyword_regex(tuple(keywords))
    return bool(pat.search(record.get("text") or "")) or any(pat.search(t) for t in record.get("hashtags") or [])


def parse_sse(lines):
    """Server-Sent-Events lines -> (event, data) pairs; comment lines (heartbeats) yield ("heartbeat", text).

    Multi-line `data:` fields are joined with newlines, as the SSE specification says.
    """
    event, data = None, []
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                yield (event or "message"), "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            yield "heartbeat", line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield (event or "message"), "\n".join(data)
