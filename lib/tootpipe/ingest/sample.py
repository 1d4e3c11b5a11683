"""A deterministic, realistic stream of Mastodon API events for demos, tests and benchmarks.

Statuses are real Mastodon `Status` objects in shape; their text is real human-written tweets from the bundled
sentiment corpora (English SemEval, and XLM-T for seven other languages). The stream has what a real one has:
accounts with skewed activity across instances, hashtags, reblogs and replies, several visibilities, a daily
cycle over two days, the same federated toot seen on two instances (same `uri`, different local ids), edits
(`status.update`), deletes (bare id), at-least-once redeliveries, late arrivals and a few malformed payloads.

Same `n` and `seed` -> the same events, byte for byte.
"""
from __future__ import annotations

import gzip
import html
import json
import math
import random
import re
import zlib
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

from tootpipe.core.config import project_root
from tootpipe.core.filters import filter_reason
from tootpipe.core.variants import XLMT_LANGUAGES
from tootpipe.ingest.normalize import BadPayload, normalize_event, opted_out

__all__ = ["generate", "write_jsonl", "expected_posts", "INSTANCES", "START"]

INSTANCES = ["mastodon.social", "fosstodon.org", "chaos.social", "hachyderm.io", "mastodon.online"]
START = datetime(2026, 11, 26, tzinfo=timezone.utc)
LANGS = {"en": 0.70, "de": 0.06, "fr": 0.05, "es": 0.06, "it": 0.03, "pt": 0.04, "ar": 0.03, "hi": 0.03}
TAGS = ["fediverse", "mastodon", "python", "opensource", "news", "music", "photography", "climate", "linux",
        "art", "books", "football", "science", "coffee", "caturday", "rust", "datascience", "privacy", "gaming",
        "travel"]


@lru_cache(maxsize=1)
def _texts() -> dict[str, list[str]]:
    root = project_root() / "data" / "sentiment"
    out: dict[str, list[str]] = {}
    with gzip.open(root / "semeval_2013_2016_train.tsv.gz", "rt", encoding="utf-8") as fh:
        next(fh)
        out["en"] = [line.rstrip("\n").split("\t")[1] for line in fh if line.count("\t") >= 2]
    for code in [c for c in LANGS if c != "en"]:
        folder = XLMT_LANGUAGES[code]
        out[code] = (root / "xlmt" / folder / "train_text.txt").read_text(encoding="utf-8").splitlines()
    return {k: [t for t in v if t.strip()] for k, v in out.items()}




def _to_html(text: str, tags: list[str], instance: str) -> tuple[str, list[dict]]:
    """Tweet text -> Mastodon-style HTML (links, mentions, hashtags), and the mentions list."""
    mentions = []
    out = []
    pos = 0
    for m in re.finditer(r"https?://\S+|@\w{1,30}", text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        tok = m.group(0)
        if tok.startswith("@"):
            user = tok[1:]
            mentions.append({"id": str(zlib.crc32(user.encode())), "username": user, "acct": user,
                             "url": f"https://{instance}/@{user}"})
            out.append(f'<span class="h-card"><a href="https://{instance}/@{user}" class="u-url mention">'
                       f'@<span>{html.escape(user)}</span></a></span>')
        else:
            scheme, _, rest = tok.partition("://")
            out.append(f'<a href="{html.escape(tok)}" rel="nofollow noopener" target="_blank">'
                       f'<span class="invisible">{scheme}://</span><span class="">{html.escape(rest)}</span></a>')
        pos = m.end()
    out.append(html.escape(text[pos:], quote=False))
    body = "".join(out)
    if tags:
        links = " ".join(f'<a href="https://{instance}/tags/{t}" class="mention hashtag" rel="tag">#<span>{t}'
                         f'</span></a>' for t in tags)
        body += f"</p><p>{links}"
    return f"<p>{body}</p>", mentions


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _daily_weight(hour: float) -> float:
    return 1.0 + 0.8 * math.sin((hour - 9) / 24 * 2 * math.pi)  # peak mid-afternoon UTC, trough at night


def _accounts(rng: random.Random, n: int) -> list[dict]:
    accts = []
    for i in range(n):
        inst = INSTANCES[min(int(rng.paretovariate(1.2)) - 1, len(INSTANCES) - 1)]
        user = f"user{i:05d}"
        opt = rng.random() if i >= 10 else 1.0  # the most active accounts have not opted out
        note = "<p>Posting about things I like.</p>"
        acc = {"id": str(100000 + i), "username": user, "acct": f"{user}@{inst}" if inst != "mastodon.social" else user,
               "display_name": f"User {i}", "locked": False, "bot": rng.random() < 0.05,
               "discoverable": True, "indexable": True, "group": False,
               "created_at": _iso(START - timedelta(days=rng.randint(30, 2000))), "note": note,
               "url": f"https://{inst}/@{user}", "followers_count": int(rng.paretovariate(0.9) * 10),
               "following_count": rng.randint(0, 800), "statuses_count": rng.randint(1, 20000), "emojis": [],
               "fields": [], "_instance": inst}
        if opt < 0.015:
            acc["discoverable"] = False
        elif opt < 0.025:
            acc["indexable"] = False
        elif opt < 0.035:
            acc["note"] = "<p>Please no scraping. #NoBot</p>"
        accts.append(acc)
    return accts


class _Draws:
    """What every toot is drawn from: accounts, texts, languages, tags and hours with their (cumulative) weights.
    Cumulative weights are computed once: random.choices(weights=...) re-accumulates them on every call, which
    made a 200,000-toot sample (25,000 accounts) quadratic; cum_weights draws exactly the same values."""

    def __init__(self, rng: random.Random, n: int, hours: int):
        self.texts = _texts()
        self.langs, self.lang_weights = zip(*LANGS.items())
        self.accounts = _accounts(rng, max(20, n // 8))
        self.account_cum = list(accumulate(1 / (r + 1) ** 1.1 for r in range(len(self.accounts))))
        self.hour_cum = list(accumulate(_daily_weight(h) for h in range(hours)))
        self.tag_cum = list(accumulate(1 / (k + 1) for k in range(len(TAGS))))
        self.hours = hours


def _status(rng: random.Random, d: _Draws, sid: str, earlier: list[dict]) -> tuple[dict, datetime]:
    """One original status (a reply to or a reblog of an `earlier` one now and then) and its creation time."""
    acc = rng.choices(d.accounts, cum_weights=d.account_cum)[0]
    inst = acc["_instance"]
    lang = rng.choices(d.langs, d.lang_weights)[0]
    text = rng.choice(d.texts[lang])
    ntags = rng.choices([0, 1, 2, 3], [0.45, 0.3, 0.17, 0.08])[0]
    tags = sorted({rng.choices(TAGS, cum_weights=d.tag_cum)[0] for _ in range(ntags)})
    hour = rng.choices(range(d.hours), cum_weights=d.hour_cum)[0]
    created = START + timedelta(hours=hour, seconds=rng.uniform(0, 3600))
    content, mentions = _to_html(text, tags, inst)
    visibility = rng.choices(["public", "unlisted", "private"], [0.9, 0.07, 0.03])[0]
    account = {k: v for k, v in acc.items() if not k.startswith("_")}
    status = {
        "id": sid, "created_at": _iso(created), "edited_at": None,
        "in_reply_to_id": None, "in_reply_to_account_id": None,
        "sensitive": rng.random() < 0.03, "spoiler_text": "", "visibility": visibility, "language": lang,
        "uri": f"https://{inst}/users/{acc['username']}/statuses/{sid}",
        "url": f"https://{inst}/@{acc['username']}/{sid}",
        "replies_count": rng.randint(0, 3), "reblogs_count": rng.randint(0, 5),
        "favourites_count": rng.randint(0, 12), "content": content, "reblog": None, "account": account,
        "media_attachments": [{"id": sid + "1", "type": rng.choice(["image", "image", "video", "gifv"])}]
        if rng.random() < 0.15 else [],
        "mentions": mentions, "tags": [{"name": t, "url": f"https://{inst}/tags/{t}"} for t in tags],
        "emojis": [], "card": None, "poll": None, "_instance": inst,
    }
    if earlier and rng.random() < 0.12:
        parent = rng.choice(earlier[-50:])
        status["in_reply_to_id"] = parent["id"]
        status["in_reply_to_account_id"] = parent["account"]["id"]
    if earlier and rng.random() < 0.08:
        status["reblog"] = rng.choice(earlier[-200:])
        status["content"] = ""
        status["uri"] = f"https://{inst}/users/{acc['username']}/statuses/{sid}/activity"
    return status, created


def _arrivals(rng: random.Random, status: dict, inst: str, created: datetime, rates: dict) -> list[tuple]:
    """(time, event) of a status: its arrival (late now and then, up to 30 minutes), then by chance a federated
    copy, a duplicate delivery, an edit, a delete and a truncated (malformed) copy, in that order of draws."""
    arrival = created + timedelta(seconds=rng.uniform(0, 2) if rng.random() > 0.02 else rng.uniform(60, 1800))
    out = [(arrival, {"event": "update", "instance": inst, "data": status})]
    if rng.random() < rates["federated_copy_rate"]:
        other = rng.choice([x for x in INSTANCES if x != inst])
        copy = json.loads(json.dumps(status))
        copy["id"] = str(int(status["id"]) + 3)
        out.append((arrival + timedelta(seconds=rng.uniform(1, 60)), {"event": "update", "instance": other,
                                                                       "data": copy}))
    if rng.random() < rates["duplicate_rate"]:
        out.append((arrival + timedelta(seconds=rng.uniform(0, 5)), {"event": "update", "instance": inst,
                                                                      "data": status}))
    if rng.random() < rates["edit_rate"] and status["reblog"] is None:
        edited = json.loads(json.dumps(status))
        when = created + timedelta(minutes=rng.uniform(1, 120))
        edited["edited_at"] = _iso(when)
        edited["content"] = status["content"].replace("</p>", " (edited)</p>", 1)
        out.append((when, {"event": "status.update", "instance": inst, "data": edited}))
    if rng.random() < rates["delete_rate"]:
        when = created + timedelta(minutes=rng.uniform(1, 600))
        out.append((when, {"event": "delete", "instance": inst, "data": status["id"]}))
    if rng.random() < rates["malformed_rate"]:
        raw = json.dumps(status)[: rng.randint(10, 200)]
        out.append((arrival, {"event": "update", "instance": inst, "data": raw}))
    return out


def generate(n: int = 2000, seed: int = 42, *, malformed_rate: float = 0.002, edit_rate: float = 0.03,
             delete_rate: float = 0.01, duplicate_rate: float = 0.02, federated_copy_rate: float = 0.03,
             hours: int = 48) -> list[dict]:
    """`n` original toots plus their edits, deletes, duplicates and copies, as a list of events in arrival order.

    Each event is ``{"event": "update"|"status.update"|"delete", "instance": host, "data": status-or-id}``;
    malformed payloads carry a string that is not valid JSON in ``data``.
    """
    rates = {"malformed_rate": malformed_rate, "edit_rate": edit_rate, "delete_rate": delete_rate,
             "duplicate_rate": duplicate_rate, "federated_copy_rate": federated_copy_rate}
    rng = random.Random(seed)
    draws = _Draws(rng, n, hours)
    events: list[tuple[datetime, int, dict]] = []
    statuses: list[dict] = []
    for i in range(n):
        sid = str(115000000000000000 + (seed % 100000) * 10**10 + i * 7919)
        status, created = _status(rng, draws, sid, statuses)
        inst = status.pop("_instance")
        statuses.append(status)
        for when, event in _arrivals(rng, status, inst, created, rates):
            events.append((when, len(events) + 1, event))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in events]


def write_jsonl(events: list[dict], path: str | Path | None = None, fh=None) -> None:
    """Write events as JSONL (one `{"event", "instance", "data"}` object a line)."""
    out = fh or open(path, "w", encoding="utf-8")
    try:
        for e in events:
            out.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n")
    finally:
        if fh is None:
            out.close()


def expected_posts(events: list[dict], filters) -> dict[str, dict]:
    """What `mastodon_posts` must hold after the events: uri -> record, computed in plain Python.

    The same rules as the pipeline, independently written: opted-out accounts and filtered records are
    dropped; the newest edit wins; a uri is gone when any of its (instance, id) pairs was deleted.
    """
    posts: dict[str, dict] = {}
    ids: dict[tuple[str, str], str] = {}
    deleted: set[tuple[str, str]] = set()
    for e in events:
        try:
            rec = normalize_event(e["event"], e["data"], e["instance"], ingested_at="x")
        except BadPayload:
            continue
        if rec["event"] == "delete":
            deleted.add((rec["instance"], rec["id"]))
            continue
        if opted_out(e["data"]["account"]) or filter_reason(rec, filters):
            continue
        ids[(rec["instance"], rec["id"])] = rec["uri"]
        old = posts.get(rec["uri"])
        version = rec["edited_at"] or rec["created_at"]
        if old is None or version > (old["edited_at"] or old["created_at"]):
            posts[rec["uri"]] = rec
    for key in deleted:
        posts.pop(ids.get(key), None)
    return posts
