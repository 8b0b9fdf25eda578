"""Analyzer languages (issue 17): Snowball languages of PyStemmer and the CJK bigram analyzer, their
place in the analyzer config, a search in Chinese and the CLI path."""

import pytest
import Stemmer

from sparsearch.cli import main
from sparsearch.encoders import load_encoder_of
from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.errors import InvalidInputError
from sparsearch.index import Index, build_index
from sparsearch.text import WordAnalyzer, get_analyzer, language_names


# ------------------------------------------------------------------ Snowball languages
@pytest.mark.parametrize("language, text", [
    ("french", "Les maisons anciennes étaient continuellement habitées"),
    ("german", "Die Häuser standen an den großen Straßen"),
    ("russian", "Прекрасная книга лежала между книгами"),
])
def test_stems_equal_pystemmers(language, text):
    a = WordAnalyzer(language=language)
    words = text.lower().split()
    assert a.tokens(text) == words  # no stopword list for these languages: every word stays
    assert a.analyze(text) == Stemmer.Stemmer(language).stemWords(words)
    assert a.stemmer_name == language and a.stopwords == frozenset()


def test_examples_of_stems():
    assert WordAnalyzer(language="french").analyze("maisons continuellement") == ["maison", "continuel"]
    assert WordAnalyzer(language="german").analyze("Häuser Straße") == ["haus", "strass"]
    assert WordAnalyzer(language="russian").analyze("книгами прекрасная") == ["книг", "прекрасн"]


def test_words_keep_accents_and_combining_marks():
    # decomposed "é" (e + U+0301) is composed (NFC), as the stemmers expect; Devanagari vowel signs
    # stay inside their words (\w alone would split "हिन्दी" at each sign)
    assert WordAnalyzer(language="french", stemmer="none").tokens("cafe\u0301 été") == ["café", "été"]
    assert WordAnalyzer(language="hindi", stemmer="none").tokens("हिन्दी किताबें।") == ["हिन्दी", "किताबें"]
    assert WordAnalyzer(language="hindi").analyze("किताबें") == Stemmer.Stemmer("hindi").stemWords(["किताबें"])


def test_explicit_stemmer_and_stopwords_override_the_language_defaults(tmp_path):
    stop = tmp_path / "fr.txt"
    stop.write_text("les\nétaient\n")
    a = WordAnalyzer(language="french", stopwords=stop, stemmer="none")
    assert a.analyze("Les maisons étaient") == ["maisons"]
    assert WordAnalyzer(language="english").config() == WordAnalyzer().config()


def test_every_snowball_language_is_accepted():
    names = language_names()
    assert names[0] == "cjk" and {"english", "french", "german", "russian", "hindi"} <= set(names)
    assert set(names) - {"cjk"} == set(Stemmer.algorithms()) - {"porter", "dutch_porter"}
    for language in names:
        WordAnalyzer(language=language).analyze("text 文本 텍스트")


def test_unknown_language_is_a_one_line_error_listing_the_languages():
    with pytest.raises(InvalidInputError) as e:
        WordAnalyzer(language="klingon")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown language 'klingon'; use one of cjk, arabic,")
    assert "french" in msg and "russian" in msg
    with pytest.raises(InvalidInputError, match="unknown language 'klingon'"):
        BM25Encoder.from_spec(None, language="klingon")


# ------------------------------------------------------------------ config
def test_config_round_trip_records_the_language():
    for language in ("german", "cjk"):
        a = WordAnalyzer(language=language, min_length=2)
        cfg = a.config()
        assert cfg["language"] == language and cfg["version"] == 3
        again = get_analyzer(cfg)
        assert again.config() == cfg and again.analyze("Die Häuser 東京タワー") == a.analyze("Die Häuser 東京タワー")
    english = WordAnalyzer().config()  # English configs are unchanged: version 2, no language
    assert english["version"] == 2 and "language" not in english
    assert get_analyzer(english).language == "english"
    assert get_analyzer({"type": "word", "stemmer": "english", "stopwords": "english"}).language == "english"


# ------------------------------------------------------------------ CJK bigrams
def cjk(text):
    return WordAnalyzer(language="cjk").analyze(text)


def test_cjk_bigrams_chinese_japanese_korean():
    assert cjk("我爱北京天安门。") == ["我爱", "爱北", "北京", "京天", "天安", "安门"]
    assert cjk("東京に行きました") == ["東京", "京に", "に行", "行き", "きま", "まし", "した"]  # kanji + hiragana
    assert cjk("한국어 텍스트") == ["한국", "국어", "텍스", "스트"]


def test_cjk_mixed_text_lone_characters_and_width_folding():
    assert cjk("Tokyo 東京タワー 2024") == ["tokyo", "東京", "京タ", "タワ", "ワー", "2024"]
    assert cjk("A 猫 b") == ["a", "猫", "b"]  # a lone character is a unigram, as CJKBigramFilter's
    assert cjk("ＡＢＣ ｶﾀｶﾅ") == ["abc", "カタ", "タカ", "カナ"]  # full-width Latin, half-width Katakana
    assert cjk("中文、日本語") == ["中文", "日本", "本語"]  # punctuation ends a run
    a = WordAnalyzer(language="cjk")
    assert a.stemmer_name is None and a.stopwords == frozenset()


def test_bm25_index_in_chinese_finds_the_right_document(tmp_path):
    docs = {"beijing": "北京是中国的首都，有很多历史古迹。",
            "shanghai": "上海是一个国际大都市，金融中心。",
            "panda": "大熊猫生活在四川的山区，吃竹子。",
            "tea": "中国人喜欢喝茶，绿茶和红茶都很有名。"}
    enc = BM25Encoder.from_spec(None, language="cjk")
    index = build_index(enc.encode_documents(list(docs.values()), list(docs)), tmp_path / "zh", encoder=enc)
    index = Index.open(tmp_path / "zh")
    assert index.encoder_config["analyzer"]["language"] == "cjk"
    loaded = index.load_encoder()
    for query, expected in [("熊猫", "panda"), ("金融", "shanghai"), ("首都北京", "beijing"), ("绿茶", "tea")]:
        s, d = index.search(loaded.encode_queries([query]), 1)
        assert index.doc_ids[d[0][0]] == expected, query


# ------------------------------------------------------------------ spec / CLI path
def test_from_spec_language(tmp_path):
    enc = BM25Encoder.from_spec(None, language="german")
    assert enc.analyzer.language == "german" and enc.analyzer.stemmer_name == "german"
    assert enc.config()["analyzer"]["language"] == "german"
    enc.fit(["Die Häuser", "Das Haus"])
    enc.save_state(tmp_path / "encoder-0")
    again = load_encoder_of(tmp_path, {"encoder": enc.config(), "encoder_state": "encoder-0"})
    assert again.encode_queries(["Häuser"]).row_dict(0) == {"haus": 1.0}


def test_cli_language_option_reaches_the_manifest(tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("Die Häuser sind alt\nDer Hund läuft schnell\n")
    out = tmp_path / "idx"
    try:
        main(["index", str(docs), "--out", str(out), "--encoder-opt", "language=german"])
    except SystemExit as e:
        assert e.code == 0
    cfg = Index.open(out).encoder_config["analyzer"]
    assert (cfg["language"], cfg["stemmer"], cfg["stopwords"]) == ("german", "german", "none")
    assert Index.open(out).load_encoder().encode_queries(["Haus"]).row_dict(0) == {"haus": 1.0}
