"""The sentiment model variants as Spark MLlib pipelines (the variants are declared in :mod:`.sentiment_variants`).

Every variant is one `Pipeline` (custom stages are saved and loaded with it), split in two halves: the label-free
featurisation (:func:`featuriser`) and the classifier. Variants that share a featurisation share its fitted model
and its cached output when several are trained together (:func:`tootpipe.sentiment.training.train_variants`).
"""
from __future__ import annotations

from typing import Callable

import pandas as pd  # module level: pandas_udf resolves the (string) type hints here
from pyspark.ml import Pipeline, Transformer
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import (IDF, CountVectorizer, HashingTF, NGram, RegexTokenizer, SQLTransformer,
                                StopWordsRemover, VectorAssembler, Word2Vec)
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, functions as F

from tootpipe.core.variants import DEFAULT_VARIANT, VARIANTS, Variant  # noqa: F401 (Variant re-exported)
from tootpipe.sentiment.data import TEXT_MASKS
from tootpipe.sentiment.encoder import ENCODERS, e5_embedding, me5_embedding, ship
from tootpipe.sentiment.lexicons import LEXICON_KEYS, TEXTBLOB_KEYS, lexicon_scores, textblob_scores
from tootpipe.sentiment.vader import VADER_KEYS, vader_scores

__all__ = ["VARIANTS", "DEFAULT_VARIANT", "build_pipeline", "featuriser", "classifier", "VaderFeatures",
           "LexiconFeatures", "TextBlobFeatures", "E5Features", "ME5Features"]


class _ScoreStage(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """A pipeline stage adding a scorer's values of `inputCol` as a vector column (saved with the pipeline).
    Subclasses name the values (`KEYS`) and the scorer (`score`: texts -> one tuple of values per text)."""
    KEYS: tuple = ()
    score: Callable[[list], list]

    def __init__(self, inputCol: str = "text", outputCol: str = "scores"):
        super().__init__()
        self._set(inputCol=inputCol, outputCol=outputCol)

    def _transform(self, df: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector  # lazy: pyspark
        from pyspark.sql.functions import pandas_udf  # lazy: pyspark
        keys, fn = list(self.KEYS), self.score

        @pandas_udf(", ".join(f"{k} double" for k in keys))
        def scores(texts: pd.Series) -> pd.DataFrame:  # columnar out: far cheaper than a Series of lists
            return pd.DataFrame(fn(texts.fillna("").tolist()), columns=keys)

        tmp = f"__{self.getOutputCol()}_struct"
        return (df.withColumn(tmp, scores(F.col(self.getInputCol())))
                .withColumn(self.getOutputCol(), array_to_vector(F.array(*[F.col(tmp)[k] for k in keys])))
                .drop(tmp))


class VaderFeatures(_ScoreStage):
    """VADER's six scores (:mod:`tootpipe.sentiment.vader`)."""
    KEYS = VADER_KEYS
    score = staticmethod(vader_scores)


class LexiconFeatures(_ScoreStage):
    """AFINN with negation scope, emoji sentiment and style counts (:mod:`tootpipe.sentiment.lexicons`)."""
    KEYS = LEXICON_KEYS
    score = staticmethod(lexicon_scores)


class E5Features(_ScoreStage):
    """The e5-small-v2 sentence embedding (:mod:`tootpipe.sentiment.encoder`), computed in the executors, each
    text once per machine (the encoder's disk cache); on a cluster the model files are shipped with the job."""
    ENCODER = "e5-small-v2-q"
    KEYS = tuple(f"e5_{i}" for i in range(ENCODERS[ENCODER].dim))
    score = staticmethod(e5_embedding)

    def _transform(self, df: DataFrame) -> DataFrame:
        ship(df.sparkSession, self.ENCODER)
        return super()._transform(df)


class ME5Features(E5Features):
    """The multilingual-e5-small sentence embedding (the language models' encoder)."""
    ENCODER = "multilingual-e5-small-q4"
    KEYS = tuple(f"me5_{i}" for i in range(ENCODERS[ENCODER].dim))
    score = staticmethod(me5_embedding)


class TextBlobFeatures(_ScoreStage):
    """TextBlob's polarity and subjectivity (slow: about 4,000 texts/s)."""
    KEYS = TEXTBLOB_KEYS
    score = staticmethod(textblob_scores)


# Mastodon/Twitter text preprocessing, in Spark SQL so it is saved inside the pipeline (built from TEXT_MASKS).
def _sql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _preprocess_sql() -> str:
    """:data:`TEXT_MASKS` as nested regexp_replace calls (Java's $1 for Python's \\1)."""
    expr = "lower(coalesce(text, ''))"
    for pattern, replacement in TEXT_MASKS:
        java = replacement.replace("\\1", "$1")
        expr = f"regexp_replace({expr}, {_sql_string(pattern)}, {_sql_string(java)})"
    return f"SELECT *, {expr} AS clean_text FROM __THIS__"


_PREPROCESS = _preprocess_sql()
_TOKEN_PATTERN = r"[\p{L}\p{M}\p{N}']+|[!?]+|[:;=8][-o*']?[)(\]\[dDpP/\\|]|[\x{2600}-\x{27BF}\x{1F300}-\x{1FAFF}]"
_SCORERS = {"vader": VaderFeatures, "lexicon": LexiconFeatures, "textblob": TextBlobFeatures}
_ENCODERS = {stage.ENCODER: stage for stage in (E5Features, ME5Features)}


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {tuple(VARIANTS)}")
    return VARIANTS[name]


def featuriser(name: str) -> Pipeline:
    """The label-free half of a variant: text -> `features`."""
    v = _variant(name)
    if v.encoder:
        return Pipeline(stages=[_ENCODERS[v.encoder](inputCol="text", outputCol="embedding"),
                                *_scored_features(v, ["embedding"])])
    if v.tokens == "stopwords":
        return Pipeline(stages=[
            RegexTokenizer(inputCol="text", outputCol="words", pattern="\\W"),
            StopWordsRemover(inputCol="words", outputCol="filtered"),
            CountVectorizer(inputCol="filtered", outputCol="tf", vocabSize=20000, minDF=2),
            IDF(inputCol="tf", outputCol="features")])
    stages = [
        SQLTransformer(statement=_PREPROCESS),
        RegexTokenizer(inputCol="clean_text", outputCol="words", pattern=_TOKEN_PATTERN, gaps=False,
                       toLowercase=False),
        NGram(n=2, inputCol="words", outputCol="bigrams"),
        CountVectorizer(inputCol="words", outputCol="tf1", vocabSize=30000, minDF=2),
        CountVectorizer(inputCol="bigrams", outputCol="tf2", vocabSize=30000, minDF=3)]
    tf = ["tf1", "tf2"]
    if v.chars:
        stages += [RegexTokenizer(inputCol="clean_text", outputCol="chars", pattern=".", gaps=False),
                   NGram(n=3, inputCol="chars", outputCol="trigrams"),
                   HashingTF(inputCol="trigrams", outputCol="tf3", numFeatures=1 << 16)]
        tf.append("tf3")
    stages += [VectorAssembler(inputCols=tf, outputCol="tf"), IDF(inputCol="tf", outputCol="tfidf")]
    dense = ["tfidf"]
    if v.word2vec:
        stages.append(Word2Vec(vectorSize=100, minCount=3, inputCol="words", outputCol="w2v", seed=11,
                               numPartitions=2))
        dense.append("w2v")
    return Pipeline(stages=[*stages, *_scored_features(v, dense)])


def _scored_features(v: Variant, dense: list[str]) -> list:
    """One scorer stage per `v.scorers`, then `dense` and their scores assembled into `features`."""
    return [*[_SCORERS[s](inputCol="text", outputCol=f"{s}_scores") for s in v.scorers],
            VectorAssembler(inputCols=[*dense, *[f"{s}_scores" for s in v.scorers]], outputCol="features")]


def classifier(name: str, reg_param: float | None = None) -> LogisticRegression:
    """The trained half: multinomial logistic regression on `features` (weighted when the variant balances)."""
    v = _variant(name)
    lr = LogisticRegression(maxIter=100, regParam=reg_param or v.reg_param, standardization=v.standardize,
                            featuresCol="features", labelCol="label")
    return lr.setWeightCol("weight") if v.balanced else lr


def build_pipeline(name: str = DEFAULT_VARIANT, reg_param: float | None = None) -> Pipeline:
    """A variant as one Pipeline (featuriser stages, then the classifier)."""
    return Pipeline(stages=[*featuriser(name).getStages(), classifier(name, reg_param)])
