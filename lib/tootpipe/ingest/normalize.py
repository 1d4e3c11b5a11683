"""Mastodon API payloads -> toot records (see :mod:`tootpipe.core.schema`), filters and opt-outs.

Pure functions. :func:`normalize_event` returns a record or raises :class:`BadPayload` with a reason, for any
JSON value in any field (property-tested): every field is type-checked, strings lose NUL characters and lone
surrogates (which neither JSON encoders nor PostgreSQL accept), keys longer than :data:`~tootpipe.core.schema.LIMITS`
and numbers outside 64 bits are refused or dropped. Callers send BadPayload to the dead-letter topic and carry on.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timezone

from selectolax.lexbor import LexborHTMLParser

from tootpipe.core.errors import BadPayload
from tootpipe.core.schema import EPOCH_PATTERN, LIMITS, RECORD_VERSION, TIME_FORMATS, safe_text

__all__ = [
    "BadPayload", "html_to_text", "normalize_status", "normalize_event", "parse_time", "opted_out",
    "pseudonymise", "utc_now_iso", "parse_sse", "safe_text",
]


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


_TIME_FORMATS = tuple(f for f, _, _ in TIME_FORMATS)


def parse_time(value) -> datetime | None:
    """A timestamp in any of the formats seen in Mastodon data (ISO-8601 with Z or offset, space-separated,
    epoch seconds or milliseconds, Twitter style) as an aware UTC datetime; None for null/empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadPayload(f"timestamp is {type(value).__name__}, not a string or number")
    try:
        return _parse_time(value)
    except (OverflowError, OSError, ValueError) as exc:  # out of range: year 1 with an offset, 1e20, inf, nan
        if isinstance(exc, BadPayload):
            raise
        raise BadPayload(f"timestamp out of range: {str(value)[:40]!r}") from None


def _parse_time(value) -> datetime | None:
    if isinstance(value, (int, float)):
        secs = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(secs, tz=timezone.utc)
    s = str(value).strip()
    if len(s) >= 20 and s[10] == "T" and s[-1] == "Z":  # the common case: Mastodon's ISO-8601 UTC
        try:
            return datetime.fromisoformat(s).astimezone(timezone.utc)
        except ValueError:
            pass
    if re.fullmatch(EPOCH_PATTERN, s):
        return _parse_time(float(s))
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
    if not isinstance(account, dict):
        return False
    if account.get("indexable") is False or account.get("discoverable") is False or account.get("noindex") is True:
        return True
    texts = [account.get("note") if isinstance(account.get("note"), str) else ""]
    fields = account.get("fields")
    for field in fields if isinstance(fields, list) else []:
        if isinstance(field, dict):
            texts += [str(field.get("name") or ""), str(field.get("value") or "")]
    return any(_OPT_OUT_TAGS.search(html_to_text(t)) for t in texts if t and _OPT_OUT_HINT.search(t))


def pseudonymise(value: str | None, key: bytes) -> str | None:
    """A keyed, stable pseudonym (HMAC-SHA256, 16 hex chars): the same handle maps to the same pseudonym."""
    if value is None:
        return None
    return "u_" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _as_int(v) -> int | None:
    """An integer count, or None when missing, not a number or outside 64 bits (Spark's BIGINT)."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        n = int(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if -2**63 <= n < 2**63 else None


def _str(status: dict, key: str, *, required: bool = False) -> str | None:
    """A string field, cleaned and within its limit; BadPayload for another type or a longer value."""
    v = status.get(key)
    if v.__class__ is str and v and len(v) <= LIMITS.get(key, len(v)) and v.isascii() and "\x00" not in v \
            and v[0] != " ":  # the common case, checked cheaply (ids, uris, handles, language codes)
        return v
    if v is None or (v == "" and not required):
        if required:
            raise BadPayload(f"status has no {key}")
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, int) and key not in ("id",)):
        raise BadPayload(f"{key} is {type(v).__name__}, not a string")
    v = safe_text(str(v))
    limit = LIMITS.get(key)
    if limit and len(v) > limit:
        raise BadPayload(f"{key} longer than {limit} characters ({len(v)})")
    if required and not v.strip():
        raise BadPayload(f"status has no {key}")
    return v


def _list(status: dict, key: str) -> list:
    v = status.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise BadPayload(f"{key} is {type(v).__name__}, not a list")
    return v


def _opt_id(v) -> str | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (str, int)):
        return None
    return safe_text(str(v))[:LIMITS["id"]]


def _opt_id_uri(v) -> str | None:
    return safe_text(v)[:LIMITS["uri"]] if isinstance(v, str) else None


def _account(status: dict, instance: str, pseudonym_key: bytes | None) -> dict:
    """The author part of a record (acct and username pseudonymised when a key is given, display name dropped)."""
    account = status.get("account")
    if not isinstance(account, dict) or not account.get("acct"):
        raise BadPayload("status has no account")
    acct = _str(account, "acct", required=True)
    username = (_str(account, "username") or acct).split("@")[0]
    display_name = account.get("display_name")
    if pseudonym_key:
        acct, username = pseudonymise(acct, pseudonym_key), pseudonymise(username + "@" + instance, pseudonym_key)
    return {"id": _opt_id(account.get("id")), "acct": acct, "username": username,
            "display_name": None if pseudonym_key or not isinstance(display_name, str) else safe_text(display_name),
            "bot": account.get("bot") is True, "followers_count": _as_int(account.get("followers_count"))}


def _content(status: dict, pseudonym_key: bytes | None) -> dict:
    """The text part of a record: plain text, the HTML, hashtags, mentions, links and media, within LIMITS."""
    html = status.get("content") or ""
    if not isinstance(html, str):
        raise BadPayload("content is not a string")
    html = safe_text(html)
    if len(html) > LIMITS["content_html"]:
        raise BadPayload(f"content longer than {LIMITS['content_html']} characters ({len(html)})")
    parts, hrefs = _extract(html)
    tags = [safe_text(str(t.get("name", ""))).lower() for t in _list(status, "tags")
            if isinstance(t, dict) and isinstance(t.get("name"), (str, int)) and t.get("name") != ""]
    mentions = [safe_text(str(m.get("acct"))) for m in _list(status, "mentions")
                if isinstance(m, dict) and isinstance(m.get("acct"), str) and m.get("acct")]
    if pseudonym_key:
        mentions = [pseudonymise(m, pseudonym_key) for m in mentions]
    media = [m for m in _list(status, "media_attachments") if isinstance(m, dict)]
    text = safe_text(_join(parts))
    if len(text) > LIMITS["text"]:
        raise BadPayload(f"text longer than {LIMITS['text']} characters ({len(text)})")
    return {"text": text, "content_html": html, "hashtags": tags, "mentions": mentions,
            "urls": [safe_text(h) for h, cls in hrefs if "mention" not in cls and "hashtag" not in cls],
            "media_count": len(media), "media_types": [safe_text(str(m.get("type")))[:32] for m in media]}


def normalize_status(status: dict, instance: str, event: str = "update", *, ingested_at: str | None = None,
                     pseudonym_key: bytes | None = None) -> dict:
    """One Mastodon Status object -> one toot record (fields in :data:`tootpipe.core.schema.FIELDS` order).

    Raises:
        BadPayload: not a status (no uri/id/account, wrong types, unreadable timestamp).
    """
    if not isinstance(status, dict):
        raise BadPayload(f"status is {type(status).__name__}, not an object")
    uri, sid = _str(status, "uri", required=True), _str(status, "id", required=True)
    account = _account(status, instance, pseudonym_key)
    created = parse_time(status.get("created_at"))
    if created is None:
        raise BadPayload("status has no created_at")
    content = _content(status, pseudonym_key)
    reblog = status.get("reblog") if isinstance(status.get("reblog"), dict) else None
    spoiler = status.get("spoiler_text")
    return {
        "v": RECORD_VERSION, "event": event, "uri": uri, "id": sid, "instance": instance,
        "created_at": _iso(created), "edited_at": _iso(parse_time(status.get("edited_at"))), "account": account,
        "language": _str(status, "language"), "visibility": _str(status, "visibility"),
        **content,
        "is_reblog": reblog is not None,
        "reblog_uri": _opt_id_uri(reblog.get("uri")) if reblog else None,
        "is_reply": status.get("in_reply_to_id") is not None,
        "in_reply_to_id": _opt_id(status.get("in_reply_to_id")),
        "replies_count": _as_int(status.get("replies_count")),
        "reblogs_count": _as_int(status.get("reblogs_count")),
        "favourites_count": _as_int(status.get("favourites_count")),
        "sensitive": status.get("sensitive") is True,
        "spoiler_text": safe_text(spoiler) if isinstance(spoiler, str) else "",
        "ingested_at": ingested_at or utc_now_iso(),
    }


def normalize_event(event: str, data, instance: str, **kw) -> dict:
    """A streaming event (`update`, `status.update` or `delete`) -> a record.

    `data` is the SSE data (a JSON string, or an already-decoded status; for `delete`, the bare local id).
    Raises BadPayload for malformed JSON or an unusable status.
    """
    instance = safe_text(str(instance))[:LIMITS["instance"]] if instance else "unknown"
    if event == "delete":
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if not isinstance(data, (str, int)) or isinstance(data, bool):
            raise BadPayload(f"delete carries a {type(data).__name__}, not an id")
        sid = str(data).strip().strip('"')
        if not sid or len(sid) > 64 or not re.fullmatch(r"[\w.-]+", sid):
            raise BadPayload(f"delete carries no usable id: {safe_text(str(data)[:40])!r}")
        return {"v": RECORD_VERSION, "event": "delete", "uri": None, "id": sid, "instance": instance,
                "ingested_at": kw.get("ingested_at") or utc_now_iso()}
    if event not in ("update", "status.update"):
        raise BadPayload(f"not a status event: {safe_text(str(event))[:40]!r}")
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise BadPayload(f"malformed JSON: {safe_text(str(exc))[:200]}") from None
    return normalize_status(data, instance, event, **kw)


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
