"""The sentiment model variants, declared once (no Spark import: the parameters validate against this table).

Adding a variant = one `Variant(...)` line here; :mod:`tootpipe.sentiment_models` builds its pipeline, notebook 05
and `bench/sentiment.py` compare it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Variant", "VARIANTS", "DEFAULT_VARIANT"]


@dataclass(frozen=True)
class Variant:
    """A model variant: its featurisation (`tokens` "stopwords" = the original assignment's, "ngrams" = masked
    words + bigrams; `chars` adds hashed character 3-grams; `word2vec` the mean of word vectors learnt by MLlib's
    Word2Vec on the training texts; `scorers` add lexicon scores), its classifier's
    regularisation and whether the classes are balanced by weight. `description` is what the reports show."""
    name: str
    description: str
    tokens: str = "ngrams"
    chars: bool = False
    word2vec: bool = False
    scorers: tuple[str, ...] = ()
    reg_param: float = 0.02
    balanced: bool = True

    @property
    def feature_key(self) -> tuple:
        return (self.tokens, self.chars, self.word2vec, self.scorers)


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
    Variant("textblob_ngrams", "lexicon_ngrams + TextBlob's polarity and subjectivity",
            scorers=("vader", "lexicon", "textblob"), reg_param=4.0),
)}
DEFAULT_VARIANT = "vader_ngrams"
