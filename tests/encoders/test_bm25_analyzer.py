"""BM25 analyzer options (issue 16): stopword lists, custom stopword files, stemmers, their place in
the encoder config, the reading of configs written before the lists had names, and the CLI path."""

import re

import numpy as np
import pytest

from sparsearch.cli import main
from sparsearch.encoders import get_encoder, load_encoder, load_encoder_of
from sparsearch.encoders.bm25 import DEFAULT_B, DEFAULT_K1, BM25Encoder
from sparsearch.errors import InvalidInputError
from sparsearch.index import Index
from sparsearch.text import (DEFAULT_STEMMER, DEFAULT_STOPWORDS, ENGLISH_STOPWORDS, LUCENE_STOPWORDS,
                             STOPWORD_LISTS, WordAnalyzer, get_analyzer, stemmer_names)

TEXT = "They would however have been running fairly quickly through the skies"
DOCS = ["the cat would sit on the mat", "however the dog chased the cat", "a bird sang fairly well",
        "cats and dogs and cats"]


def words(analyzer):
    return analyzer.analyze(TEXT)


# ------------------------------------------------------------------ stopword lists
def test_each_named_stopword_list():
    lucene = WordAnalyzer(stemmer="none", stopwords="lucene")
    english = WordAnalyzer(stemmer="none", stopwords="english")
    none = WordAnalyzer(stemmer="none", stopwords="none")
    assert words(lucene) == ["would", "however", "have", "been", "running", "fairly", "quickly", "through", "skies"]
    assert words(english) == ["running", "fairly", "quickly", "skies"]
    assert words(none) == TEXT.lower().split()
    assert WordAnalyzer(stemmer="none", stopwords=None).stopwords == frozenset() == none.stopwords
    assert STOPWORD_LISTS == {"lucene": LUCENE_STOPWORDS, "english": ENGLISH_STOPWORDS, "none": frozenset()}


def test_lucene_list_is_the_classic_33_words_and_english_is_a_fuller_list_of_function_words():
    assert len(LUCENE_STOPWORDS) == 33 and {"the", "such", "will", "into"} <= LUCENE_STOPWORDS
    assert LUCENE_STOPWORDS < ENGLISH_STOPWORDS and 150 <= len(ENGLISH_STOPWORDS) <= 300
    assert {"themselves", "whom", "although", "beneath", "should", "moreover", "doesn"} <= ENGLISH_STOPWORDS
    # one lowercase \w+ token each (stopwords are matched on tokens), and no content-bearing single letters
    assert all(re.fullmatch(r"[a-z]+", w) for w in ENGLISH_STOPWORDS)
    assert [w for w in ENGLISH_STOPWORDS if len(w) == 1] == ["a"]
    assert not {"i", "us", "less", "cell", "vitamin"} & ENGLISH_STOPWORDS


def test_custom_stopword_file_and_list(tmp_path):
    f = tmp_path / "stop.txt"
    f.write_text("# my list\nRunning\n\n  quickly  \nthrough\n", encoding="utf-8")
    a = WordAnalyzer(stemmer="none", stopwords=f)
    assert a.stopwords == {"running", "quickly", "through"}  # lowercased, blank and comment lines skipped
    assert words(a) == ["they", "would", "however", "have", "been", "fairly", "the", "skies"]
    assert WordAnalyzer(stemmer="none", stopwords=str(f)).stopwords == a.stopwords
    # the words themselves are recorded: the index does not need the file afterwards
    cfg = a.config()
    assert cfg["stopwords"] == ["quickly", "running", "through"]
    f.unlink()
    assert words(get_analyzer(cfg)) == words(a)
    assert WordAnalyzer(stemmer="none", stopwords=["The", "skies"]).config()["stopwords"] == ["skies", "the"]
    assert WordAnalyzer(stopwords=["The"], lowercase=False).stopwords == {"The"}


def test_unreadable_stopword_file_is_a_one_line_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-stopwords.txt"
    with pytest.raises(InvalidInputError, match="no-such-stopwords.txt") as e:
        WordAnalyzer(stopwords=missing)
    assert "\n" not in str(e.value) and "lucene, english, none" in str(e.value)
    with pytest.raises(InvalidInputError, match="'englsh'.*neither a list name"):
        WordAnalyzer(stopwords="englsh")  # a misspelt list name is not silently a file
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"caf\xe9\n")
    with pytest.raises(InvalidInputError, match="latin1.txt"):
        WordAnalyzer(stopwords=binary)
    (tmp_path / "dir").mkdir()
    with pytest.raises(InvalidInputError, match="dir"):
        WordAnalyzer(stopwords=tmp_path / "dir")
    phrase = tmp_path / "phrase.txt"
    phrase.write_text("the\nof the\n")
    with pytest.raises(InvalidInputError, match=r"phrase.txt' line 2: 'of the' is not one word"):
        WordAnalyzer(stopwords=phrase)
    with pytest.raises(InvalidInputError, match="got int"):
        WordAnalyzer(stopwords=3)


# ----------------------------------------------------------------------- stemmers
def test_stemmer_options():
    def stems(stemmer):
        return WordAnalyzer(stemmer=stemmer, stopwords="none").analyze("fairly generously lying skies running")

    assert stems("english") == ["fair", "generous", "lie", "sky", "run"]  # Snowball (porter2)
    assert stems("porter") == ["fairli", "gener", "ly", "ski", "run"]  # the classic Porter stemmer
    assert stems("none") == stems(None) == ["fairly", "generously", "lying", "skies", "running"]
    assert WordAnalyzer(stemmer="french", stopwords="none").analyze("chanteuses") == ["chanteux"]
    # Porter stems "s" (the possessive's fragment) to "": the token stays itself, no empty term
    assert WordAnalyzer(stemmer="porter", stopwords="none").analyze("the dog's bone") == ["the", "dog", "s", "bone"]
    assert WordAnalyzer(stemmer=None).config()["stemmer"] == "none"
    assert "porter" in stemmer_names() and "english" in stemmer_names() and stemmer_names()[0] == "none"
    with pytest.raises(InvalidInputError, match="unknown stemmer 'klingon'; use one of none, "):
        WordAnalyzer(stemmer="klingon")


# ------------------------------------------------------------------------ configs
def test_defaults_are_the_documented_constants():
    enc = BM25Encoder()
    assert (enc.k1, enc.b) == (DEFAULT_K1, DEFAULT_B)
    cfg = enc.analyzer.config()
    assert (cfg["stopwords"], cfg["stemmer"]) == (DEFAULT_STOPWORDS, DEFAULT_STEMMER)
    assert DEFAULT_STOPWORDS in STOPWORD_LISTS and DEFAULT_STEMMER in stemmer_names()


@pytest.mark.parametrize("stopwords,stemmer", [("lucene", "english"), ("english", "porter"), ("none", "none"),
                                               (["cat", "dog"], "english")])
def test_config_roundtrip(tmp_path, stopwords, stemmer):
    enc = BM25Encoder(k1=1.1, b=0.6, analyzer=WordAnalyzer(stemmer=stemmer, stopwords=stopwords)).fit(DOCS)
    enc.save_state(tmp_path)
    cfg = enc.config()
    assert cfg["analyzer"]["version"] == 2
    again = load_encoder(cfg, tmp_path)
    assert again.config() == cfg and again.analyzer.stopwords == enc.analyzer.stopwords
    assert again.encode_queries(DOCS).to_dicts() == enc.encode_queries(DOCS).to_dicts()
    np.testing.assert_array_equal(again.encode_documents(DOCS).values, enc.encode_documents(DOCS).values)


OLD_ANALYZER = {"type": "word", "stemmer": "english", "stopwords": "english", "lowercase": True, "min_length": 1}


def test_configs_written_before_the_named_lists_keep_their_meaning(tmp_path):
    """Before issue 16 ``"stopwords": "english"`` named Lucene's 33 words (and configs had no version)."""
    old = get_analyzer(OLD_ANALYZER)
    assert old.stopwords == LUCENE_STOPWORDS and old.stemmer_name == "english"
    assert old.config()["stopwords"] == "lucene" and old.config()["version"] == 2
    assert get_analyzer({"type": "word", **{k: v for k, v in OLD_ANALYZER.items() if k != "type"},
                         "version": 2}).stopwords == ENGLISH_STOPWORDS  # the new meaning needs the new version
    bare = get_analyzer({"type": "word"})  # missing settings: that time's defaults
    assert bare.stopwords == LUCENE_STOPWORDS and bare.stemmer_name == "english"
    assert get_analyzer({**OLD_ANALYZER, "stopwords": None, "stemmer": None}).config()["stopwords"] == "none"
    assert get_analyzer({**OLD_ANALYZER, "stopwords": ["zzz"]}).stopwords == {"zzz"}
    with pytest.raises(InvalidInputError, match="version 4"):
        get_analyzer({**OLD_ANALYZER, "version": 4})
    with pytest.raises(InvalidInputError, match="unknown analyzer type 'morse'"):
        get_analyzer({"type": "morse"})

    # an old index's encoder (manifest config + saved statistics) analyzes queries as it did
    enc = BM25Encoder(k1=1.5, b=0.75, analyzer=WordAnalyzer(stemmer="english", stopwords="lucene")).fit(DOCS)
    enc.save_state(tmp_path / "encoder-0")
    old_config = {"name": "bm25", "k1": 1.5, "b": 0.75, "method": "lucene", "analyzer": OLD_ANALYZER}
    again = load_encoder_of(tmp_path, {"encoder": old_config, "encoder_state": "encoder-0"})
    assert again.analyzer.stopwords == LUCENE_STOPWORDS
    q = again.encode_queries(["would the cat have sat"])
    assert q.row_dict(0) == {"would": 1.0, "cat": 1.0, "have": 1.0, "sat": 1.0}
    no_analyzer = BM25Encoder.from_config({k: v for k, v in old_config.items() if k != "analyzer"})
    assert no_analyzer.analyzer.config() == again.analyzer.config()


# ------------------------------------------------------------------ spec / CLI path
def test_options_through_from_spec_and_the_registry():
    enc = BM25Encoder.from_spec(None, stopwords="none", stemmer="porter")
    assert enc.analyzer.config()["stopwords"] == "none" and enc.analyzer.config()["stemmer"] == "porter"
    assert enc.analyzer.analyze("The generously") == ["the", "gener"]
    rob = get_encoder("bm25:robertson", stopwords="english", stemmer="none", k1=1.0, min_length=2)
    assert rob.method == "robertson" and rob.k1 == 1.0
    assert rob.config()["analyzer"] == {"type": "word", "version": 2, "stemmer": "none", "stopwords": "english",
                                        "lowercase": True, "min_length": 2}
    assert BM25Encoder.from_spec(None).analyzer.config() == WordAnalyzer().config()
    with pytest.raises(InvalidInputError, match="bm25: unknown option 'stopword' \\(options: b, k1, language, lowercase"):
        BM25Encoder.from_spec(None, stopword="none")
    with pytest.raises(InvalidInputError, match="unknown BM25 method 'okapi'"):
        get_encoder("bm25:okapi")
    with pytest.raises(InvalidInputError, match="k1 >= 0"):
        BM25Encoder.from_spec(None, k1="high")


def run_cli(*args) -> int:
    """``sparsearch ARGS`` through the console entry point; its exit status."""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def test_cli_encoder_options_reach_the_index_manifest(tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    out = tmp_path / "idx"
    assert run_cli("index", docs, "--out", out, "--encoder-opt", "stopwords=none",
                   "--encoder-opt", "stemmer=porter") == 0
    cfg = Index.open(out).encoder_config["analyzer"]
    assert (cfg["stopwords"], cfg["stemmer"], cfg["version"]) == ("none", "porter", 2)
    assert Index.open(out).load_encoder().encode_queries(["the generously"]).row_dict(0) == {"the": 1.0, "gener": 1.0}
    capsys.readouterr()
    assert run_cli("index", docs, "--out", tmp_path / "bad", "--encoder-opt",
                   f"stopwords={tmp_path / 'missing.txt'}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt" in err and err.startswith("error: stopwords")
    assert not (tmp_path / "bad").exists()
