import io
import json
from pathlib import Path

import pytest
from conftest import ROOT
from pyspark.sql import functions as F

from tootpipe import cli
from tootpipe.sentiment import scoring, store, training as sentiment
from tootpipe.sentiment.data import read_labelled
from tootpipe.sentiment.evaluation import metrics_from_predictions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
TRAIN = "data/sentiment/semeval_2013_2016_train.tsv.gz"
DEV = "data/sentiment/semeval2017_dev.tsv"
VAL = "data/sentiment/tweeteval_val.tsv"


@pytest.fixture(scope="module")
def saved(spark, tmp_path_factory):
    """The default variant (with its Python lexicon stages) trained on 5,000 tweets, saved and loaded back."""
    model, _ = sentiment.train(spark, TRAIN, sentiment.DEFAULT_VARIANT, 5000)
    m = sentiment.evaluate(model, sentiment.load_labelled(spark, DEV, 600))
    out = store.save_model(model, tmp_path_factory.mktemp("models"), {"semeval2017_dev": m})
    return out, m


def test_train_evaluate_save_load_and_edge_cases(spark, saved):
    out, m = saved
    assert m["n"] == 600 and 0.45 < m["macro_recall"] <= 1  # well above chance (0.33) on newer tweets
    loaded, version = store.load_model(store.latest_model(out.parent))
    assert version == out.name
    texts = ["", "😀😀🎉", "word " * 20000, "Je suis très content", "I hate this, it is awful :(", None]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, text string")
    rows = scoring.predict(loaded, df).orderBy("i").collect()
    assert len(rows) == 6 and all(r["sentiment"] in (-1, 0, 1) for r in rows)
    assert rows[4]["sentiment_label"] == "negative" and rows[1]["sentiment_label"] == "positive"
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-6 for r in rows)


def test_cli_evaluate_and_predict(saved, capsys, monkeypatch):
    out, _ = saved
    assert cli.main(["--params", "params/small.yaml", "sentiment", "evaluate", "--data", DEV, "--model", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"n", "accuracy", "macro_f1", "macro_recall", "macro_recall_ci", "per_class"} and line["n"] > 2000
    assert set(line["per_class"]) == {"negative", "neutral", "positive"}
    monkeypatch.setattr("sys.stdin", io.StringIO("I love this so much!\n\n🙄\nworst day ever\n"))
    assert cli.main(["--params", "params/small.yaml", "sentiment", "predict", "--model", str(out)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["label"] for r in rows][::3] == ["positive", "negative"] and len(rows) == 4
    assert all(set(r["probabilities"]) == {"negative", "neutral", "positive"} for r in rows)


def test_baselines_and_a_language_model(spark, tmp_path, capsys):
    dev = sentiment.load_labelled(spark, DEV, 400)
    vader = sentiment.evaluate_baseline("vader_alone", dev)
    keyword = sentiment.evaluate_baseline("keyword_autolabel", dev)
    assert vader["n"] == keyword["n"] == 400 and vader["macro_recall"] > keyword["macro_recall"]
    assert sentiment.evaluate_baseline("vader_alone", read_labelled(DEV, 400)) == vader  # the Spark-free path
    langs = sentiment.train_language_models(spark, "data/sentiment/xlmt", tmp_path, ["en", "fr", "xx"])
    assert list(langs) == ["fr"] and 0.34 < langs["fr"]["xlmt_val"]["macro_recall"] <= 1
    assert (tmp_path / "languages" / "fr" / "model").is_dir()
    from tootpipe.sentiment.data import read_xlmt
    val = tmp_path / "fr_val.tsv"  # `sentiment evaluate --language fr` reads the set's French model
    val.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab, *_ in
                                            read_xlmt("data/sentiment/xlmt/french", "val")), encoding="utf-8")
    assert cli.main(["--params", "params/small.yaml", "sentiment", "evaluate", "--data", str(val), "--model",
                     str(tmp_path), "--language", "fr"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["macro_recall"] == langs["fr"]["xlmt_val"]["macro_recall"]
    with pytest.raises(SystemExit, match="no model for 'de'"):
        cli.main(["--params", "params/small.yaml", "sentiment", "evaluate", "--data", str(val), "--model",
                  str(tmp_path), "--language", "de"])


def test_bad_training_file_is_a_clear_error(spark, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("sentence\tpolarity\nhi\tpositive\n")
    with pytest.raises(ValueError, match="columns `text` and `label`"):
        sentiment.load_labelled(spark, p)


def test_a_model_trained_from_the_same_inputs_is_reused_and_any_change_trains_again(spark, tmp_path, monkeypatch):
    from conftest import isolated

    from tootpipe import steps
    from tootpipe.core import config
    params = config.load(None, isolated({"sentiment.model_dir": str(tmp_path / "models"),
                                         "sentiment.train_limit": 1500}), use_env=False)
    first = steps.train_step(params, "balanced_ngrams")
    assert first["cached"] is False
    again = steps.train_step(params, "balanced_ngrams")
    assert again["cached"] is True and again["model"] == first["model"]
    assert again["semeval2017_dev"] == first["semeval2017_dev"] and again["train_s"] == first["train_s"]
    params.sentiment.train_limit = 1600  # another input: another model
    changed = steps.train_step(params, "balanced_ngrams")
    assert changed["cached"] is False and changed["model"] != first["model"]
    params.sentiment.train_limit = 1500
    forced = steps.train_step(params, "balanced_ngrams", retrain=True)
    assert forced["cached"] is False and forced["model"] not in (first["model"], changed["model"])
    assert store.latest_model(tmp_path / "models") == Path(forced["model"])
    assert not any((tmp_path / "models" / ".staging").iterdir())  # staged, then published: nothing left over
    versions = sorted((tmp_path / "models").iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("cross-validation failed")
    monkeypatch.setattr(sentiment, "cross_validate", broken)  # a failed training (its final fit is staged meanwhile)
    with pytest.raises(RuntimeError, match="cross-validation failed"):
        steps.train_step(params, "balanced_ngrams", retrain=True)
    assert sorted((tmp_path / "models").iterdir()) == versions and not any((tmp_path / "models" / ".staging").iterdir())
    assert store.latest_model(tmp_path / "models") == Path(forced["model"])  # publishes nothing, keeps all


def test_no_evaluation_tweet_is_in_any_training_set(spark):
    """The English pool every variant trains on (as train_variants_step loads it) and each XLM-T train split hold
    no tweet of an evaluation set, compared after the models' normalisation; a planted one is found and dropped."""
    from tootpipe.sentiment.data import read_xlmt, text_key
    evaluation = {text_key(r[0]) for p in (DEV, VAL) for r in read_labelled(p)}
    pool = sentiment.load_labelled(spark, TRAIN, held_out=(DEV, VAL)).select("text").collect()
    assert len(pool) > 45000 and not {text_key(r["text"]) for r in pool} & evaluation
    for folder in sorted(Path("data/sentiment/xlmt").iterdir()):
        held = {text_key(r[0]) for s in ("val", "test") if (folder / f"{s}_text.txt").exists()
                for r in read_xlmt(folder, s)}
        train = sentiment.load_xlmt(spark, folder, "train").select("text").collect()
        assert train and not {text_key(r["text"]) for r in train} & held, folder.name
    planted = Path(DEV).read_text(encoding="utf-8").splitlines()[1].split("\t")[0]
    rows = [("  " + planted.upper().replace(" ", "   ") + " ", "neutral", 1.0, 1)]  # the same tweet to a model
    from tootpipe.sentiment.data import without_overlap
    assert without_overlap(rows, read_labelled(DEV)) == []


def test_cross_validation_scores_the_newest_fold_with_older_folds_only(spark):
    from tootpipe.sentiment.data import time_folds
    pool = sentiment.load_labelled(spark, TRAIN, 3000)
    folds = time_folds(pool).groupBy("fold").agg(F.min("tweet_id").alias("lo"), F.max("tweet_id").alias("hi"),
                                                 F.count("*").alias("n")).orderBy("fold").collect()
    assert [r["fold"] for r in folds] == [0, 1, 2, 3, 4] and all(590 <= r["n"] <= 610 for r in folds)
    assert all(a["hi"] < b["lo"] for a, b in zip(folds, folds[1:]))  # older folds strictly before newer ones
    cv = sentiment.cross_validate(pool, [("balanced_ngrams", None), ("balanced_ngrams", 0.5)])  # one shared fit
    assert cv[("balanced_ngrams", None)]["macro_recall"] != cv[("balanced_ngrams", 0.5)]["macro_recall"]
    for c in cv.values():
        assert c["folds"][0]["fold"] == 4 and 590 <= c["folds"][0]["n"] <= 610
        lo, hi = c["macro_recall_ci"]
        assert 0.33 < c["macro_recall"] < 1 and lo <= c["macro_recall"] <= hi


def test_scoring_is_incremental_and_follows_edits_deletes_and_new_models(fresh, spark, saved):
    """A second scoring with the same model changes nothing; an edited toot is rescored, a deleted one loses its
    sentiment, a new toot is scored, a language without a model is marked unsupported, and a new model version
    rescores everything."""
    from tootpipe.postgres import db
    params, endpoints = fresh
    url = endpoints.database_url
    with db.transaction(url) as conn, conn.cursor() as cur:
        for i, (text, lang) in enumerate([("I love this so much", "en"), ("worst day ever, I hate it", "en"),
                                          ("just a bus timetable", "en"), ("ein schöner Tag", "xx")]):
            cur.execute("INSERT INTO mastodon_posts (uri, id, instance, username, content, language, created_at) "
                        "VALUES (%s, %s, 'h', 'u', %s, %s, now())", (f"u{i}", str(i), text, lang))
    models = {"en": store.load_model(saved[0])[0]}
    version = saved[0].name

    def score(v=version):
        return scoring.score_posts(spark, models, v, url, ["en"])
    assert score() == {"scored": 3, "unsupported": 1, "unchanged": 0}
    before = db.query_df(url, "SELECT uri, sentiment_name, scored_at FROM mastodon_sentiments ORDER BY uri")
    assert score() == {"scored": 0, "unsupported": 0, "unchanged": 4}
    assert db.query_df(url, "SELECT uri, sentiment_name, scored_at FROM mastodon_sentiments ORDER BY uri").equals(before)
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE mastodon_posts SET content = 'I hate this, it is awful' WHERE uri = 'u0'")
        cur.execute("DELETE FROM mastodon_posts WHERE uri = 'u2'")
        cur.execute("INSERT INTO mastodon_posts (uri, id, instance, username, content, language, created_at) "
                    "VALUES ('u9', '9', 'h', 'u', 'so happy today!', 'en', now())")
    assert score() == {"scored": 2, "unsupported": 0, "unchanged": 2}
    rows = dict(db.query_df(url, "SELECT uri, sentiment_name FROM mastodon_sentiments").values)
    assert rows["u0"] == "negative" and "u2" not in rows and rows["u3"] == "unsupported" and len(rows) == 4
    assert score("another-version")["scored"] == 3


def test_metrics_hand_computed():
    # true negative x2 (one right), neutral x1 (right), positive x1 (predicted neutral)
    m = metrics_from_predictions([(0, 0), (0, 1), (1, 1), (2, 1)])
    assert m["accuracy"] == 0.5
    assert m["per_class"]["negative"]["recall"] == 0.5 and m["per_class"]["positive"]["recall"] == 0.0
    assert m["macro_recall"] == round((0.5 + 1 + 0) / 3, 4)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_vader_shortcut_scores_exactly_as_vadersentiment():
    import csv
    import gzip

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from tootpipe.sentiment.vader import Vader
    data = ROOT / "data" / "sentiment"
    with gzip.open(data / "semeval_2013_2016_train.tsv.gz", "rt", encoding="utf-8", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)][:6000]
    texts += (data / "xlmt" / "german" / "val_text.txt").read_text(encoding="utf-8").splitlines()[:500]
    texts += ["", "   ", "kind of good", "not kind of bad", "Good 😀", "😀😀 no", "bad but great", "☺", "\tHi! :)  "]
    reference, fast = SentimentIntensityAnalyzer(), Vader()
    emoji_free = sum(1 for t in texts if fast._emoji_chars.isdisjoint(t))
    assert 0 < emoji_free < len(texts)  # both paths are exercised
    assert [fast.polarity_scores(t) for t in texts] == [reference.polarity_scores(t) for t in texts]


def test_lexicon_scores_are_finite_for_any_text_and_negation_moves_a_word_into_its_scope():
    import math

    from tootpipe.sentiment.lexicons import LEXICON_KEYS, TEXTBLOB_KEYS, lexicon_scores, textblob_scores
    texts = ["", None, "😂🎉", "word " * 30000, "I do NOT love this!!", "I love this", "Sooooo good :)", "\x00"]
    rows = lexicon_scores(texts)
    assert len(rows) == len(texts) and all(len(r) == len(LEXICON_KEYS) for r in rows)
    assert all(math.isfinite(x) for r in rows for x in r)
    negated, plain = (dict(zip(LEXICON_KEYS, r)) for r in rows[4:6])
    assert plain["afinn_pos"] > 0 and plain["afinn_pos_negated"] == 0
    assert negated["afinn_pos"] == 0 and negated["afinn_pos_negated"] == plain["afinn_pos"]
    assert negated["caps_words"] > 0 and negated["exclaims"] > 0 and dict(zip(LEXICON_KEYS, rows[2]))["emoji_count"] > 0
    assert [len(r) for r in textblob_scores(["good", ""])] == [len(TEXTBLOB_KEYS)] * 2


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_data():
    from tootpipe.sentiment.evaluation import bootstrap_interval
    small = [(i % 3, i % 3 if i % 4 else (i + 1) % 3) for i in range(90)]
    large = small * 20
    m = metrics_from_predictions(small)
    lo, hi = m["macro_recall_ci"]
    assert lo <= m["macro_recall"] <= hi and hi - lo > 0.05
    lo2, hi2 = bootstrap_interval(large)
    assert hi2 - lo2 < (hi - lo) / 2 and bootstrap_interval(large) == [lo2, hi2]  # seeded: reproducible


def test_text_key_is_the_models_view_of_a_tweet():
    from tootpipe.sentiment.data import text_key, without_overlap
    assert text_key("I don't LIKE it  @bob https://x.y/z #Sad") == text_key("i do not like it @al http://a #sad")
    assert text_key("good") != text_key("not good")
    rows = [("Great game!", "positive", 2.0, 1), ("meh", "neutral", 1.0, 2)]
    assert without_overlap(rows, [("great   GAME !", "positive", 2.0, 9)]) == [rows[1]]
