import io
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tootpipe import cli, sentiment
from tootpipe.sentiment_data import read_labelled

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
TRAIN = "data/sentiment/semeval_2013_2016_train.tsv.gz"
DEV = "data/sentiment/semeval2017_dev.tsv"
VAL = "data/sentiment/tweeteval_val.tsv"


@pytest.fixture(scope="module")
def saved(spark, tmp_path_factory):
    """The default variant (with its Python lexicon stages) trained on 5,000 tweets, saved and loaded back."""
    model, _ = sentiment.train(spark, TRAIN, sentiment.DEFAULT_VARIANT, 5000)
    m = sentiment.evaluate(model, sentiment.load_labelled(spark, DEV, 600))
    out = sentiment.save_model(model, tmp_path_factory.mktemp("models"), {"semeval2017_dev": m})
    return out, m


def test_train_evaluate_save_load_and_edge_cases(spark, saved):
    out, m = saved
    assert m["n"] == 600 and 0.45 < m["macro_recall"] <= 1  # well above chance (0.33) on newer tweets
    loaded, version = sentiment.load_model(sentiment.latest_model(out.parent))
    assert version == out.name
    texts = ["", "😀😀🎉", "word " * 20000, "Je suis très content", "I hate this, it is awful :(", None]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, text string")
    rows = sentiment.predict(loaded, df).orderBy("i").collect()
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


def test_baselines_and_a_language_model(spark, tmp_path):
    dev = sentiment.load_labelled(spark, DEV, 400)
    vader = sentiment.evaluate_baseline("vader_alone", dev)
    keyword = sentiment.evaluate_baseline("keyword_autolabel", dev)
    assert vader["n"] == keyword["n"] == 400 and vader["macro_recall"] > keyword["macro_recall"]
    assert sentiment.evaluate_baseline("vader_alone", read_labelled(DEV, 400)) == vader  # the Spark-free path
    langs = sentiment.train_language_models(spark, "data/sentiment/xlmt", tmp_path, ["en", "fr", "xx"])
    assert list(langs) == ["fr"] and 0.34 < langs["fr"]["xlmt_val"]["macro_recall"] <= 1
    assert (tmp_path / "languages" / "fr" / "model").is_dir()


def test_bad_training_file_is_a_clear_error(spark, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("sentence\tpolarity\nhi\tpositive\n")
    with pytest.raises(ValueError, match="columns `text` and `label`"):
        sentiment.load_labelled(spark, p)


def test_a_model_trained_from_the_same_inputs_is_reused_and_any_change_trains_again(spark, tmp_path, monkeypatch):
    from conftest import isolated
    from tootpipe import config, steps
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
    assert sentiment.latest_model(tmp_path / "models") == Path(forced["model"])
    assert not any((tmp_path / "models" / ".staging").iterdir())  # staged, then published: nothing left over
    versions = sorted((tmp_path / "models").iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("cross-validation failed")
    monkeypatch.setattr(sentiment, "cross_validate", broken)  # a failed training (its final fit is staged meanwhile)
    with pytest.raises(RuntimeError, match="cross-validation failed"):
        steps.train_step(params, "balanced_ngrams", retrain=True)
    assert sorted((tmp_path / "models").iterdir()) == versions and not any((tmp_path / "models" / ".staging").iterdir())
    assert sentiment.latest_model(tmp_path / "models") == Path(forced["model"])  # publishes nothing, keeps all


def test_no_evaluation_tweet_is_in_any_training_set(spark):
    """The English pool every variant trains on (as train_variants_step loads it) and each XLM-T train split hold
    no tweet of an evaluation set, compared after the models' normalisation; a planted one is found and dropped."""
    from tootpipe.sentiment_data import read_xlmt, text_key
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
    from tootpipe.sentiment_data import without_overlap
    assert without_overlap(rows, read_labelled(DEV)) == []


def test_cross_validation_scores_the_newest_fold_with_older_folds_only(spark):
    from tootpipe.sentiment_data import time_folds
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
    from tootpipe import db
    params, endpoints = fresh
    url = endpoints.database_url
    with db.transaction(url) as conn, conn.cursor() as cur:
        for i, (text, lang) in enumerate([("I love this so much", "en"), ("worst day ever, I hate it", "en"),
                                          ("just a bus timetable", "en"), ("ein schöner Tag", "xx")]):
            cur.execute("INSERT INTO mastodon_posts (uri, id, instance, username, content, language, created_at) "
                        "VALUES (%s, %s, 'h', 'u', %s, %s, now())", (f"u{i}", str(i), text, lang))
    models = {"en": sentiment.load_model(saved[0])[0]}
    version = saved[0].name

    def score(v=version):
        return sentiment.score_posts(spark, models, v, url, ["en"])
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
