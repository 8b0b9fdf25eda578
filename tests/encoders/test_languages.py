"""Analyzer languages (issue 17): Snowball languages of PyStemmer and the CJK bigram analyzer, their
place in the analyzer config, a search in Chinese and the CLI path; the stopword lists of other
languages from the stop-words package (their matching, config records, searches in French and Spanish,
configs written before them)."""

import json
import unicodedata
from importlib import resources

import pytest
import Stemmer

from sparsearch.cli import main
from sparsearch.encoders import load_encoder_of
from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.errors import InvalidInputError
from sparsearch.index import Index, build_index
from sparsearch.text import (ENGLISH_STOPWORDS, STOPWORDS_PACKAGE_LANGUAGES, WordAnalyzer, get_analyzer,
                             language_names, package_stopwords, stopword_list_names)


# ------------------------------------------------------------------ Snowball languages
@pytest.mark.parametrize("language, text", [
    ("french", "Les maisons anciennes étaient continuellement habitées"),
    ("german", "Die Häuser standen an den großen Straßen"),
    ("russian", "Прекрасная книга лежала между книгами"),
])
def test_stems_equal_pystemmers(language, text):
    a = WordAnalyzer(language=language, stopwords="none")
    words = text.lower().split()
    assert a.tokens(text) == words  # no stopwords: every word stays
    assert a.analyze(text) == Stemmer.Stemmer(language).stemWords(words)
    assert a.stemmer_name == language and a.stopwords == frozenset()
    default = WordAnalyzer(language=language)  # the default: the stop-words package's list
    assert default.stopwords == package_stopwords(language)
    assert default.analyze(text) == [s for w, s in zip(words, a.analyze(text)) if w not in default.stopwords]


def test_examples_of_stems():
    assert WordAnalyzer(language="french").analyze("maisons continuellement") == ["maison", "continuel"]
    assert WordAnalyzer(language="german").analyze("Häuser Straße") == ["haus", "strass"]
    assert WordAnalyzer(language="russian").analyze("книгами прекрасная") == ["книг", "прекрасн"]


def test_words_keep_accents_and_combining_marks():
    # decomposed "é" (e + U+0301) is composed (NFC), as the stemmers expect; Devanagari vowel signs
    # stay inside their words (\w alone would split "हिन्दी" at each sign)
    def words(language, text):
        return WordAnalyzer(language=language, stemmer="none", stopwords="none").tokens(text)

    assert words("french", "cafe\u0301 été") == ["café", "été"]
    assert words("hindi", "हिन्दी किताबें।") == ["हिन्दी", "किताबें"]
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


@pytest.mark.parametrize("option", [["--encoder-opt", "language=german"], ["--language", "german"]])
def test_cli_language_option_reaches_the_manifest(tmp_path, capsys, option):
    docs = tmp_path / "docs.txt"
    docs.write_text("Die Häuser sind alt\nDer Hund läuft schnell\n")
    out = tmp_path / "idx"
    try:
        main(["index", str(docs), "--out", str(out), *option])
    except SystemExit as e:
        assert e.code == 0
    cfg = Index.open(out).encoder_config["analyzer"]
    assert (cfg["language"], cfg["stemmer"]) == ("german", "german")
    assert cfg["stopwords"] == sorted(package_stopwords("german"))  # the words, not the package's name
    assert Index.open(out).load_encoder().encode_queries(["Haus"]).row_dict(0) == {"haus": 1.0}


def test_cli_language_needs_a_bm25_encoder(tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("Die Häuser sind alt\n")
    with pytest.raises(SystemExit) as e:
        main(["index", str(docs), "--out", str(tmp_path / "idx"), "--encoder", "splade-doc", "--language", "german"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--language sets the analyzer of a bm25 encoder" in err[0]
    assert not (tmp_path / "idx").exists()


# ------------------------------------------------------------------ stopword lists of other languages
# Snowball languages (PyStemmer) that the stop-words package has no list for
NO_LIST = {"armenian", "basque", "esperanto", "estonian", "irish", "lithuanian", "nepali", "serbian", "sesotho",
           "tamil", "yiddish"}


def test_package_lists_are_those_of_the_snowball_languages_it_has():
    mapping = resources.files("stop_words").joinpath("stop-words", "languages.json").read_text(encoding="utf-8")
    package = set(json.loads(mapping).values())  # ISO code -> the name of the list's file
    snowball = set(language_names()) - {"cjk"}
    assert set(STOPWORDS_PACKAGE_LANGUAGES) == (snowball & package) - {"english"}
    assert len(STOPWORDS_PACKAGE_LANGUAGES) == 22
    assert {"french", "german", "spanish", "portuguese", "russian", "hindi"} <= set(STOPWORDS_PACKAGE_LANGUAGES)
    assert snowball - set(STOPWORDS_PACKAGE_LANGUAGES) - {"english"} == NO_LIST
    for language in STOPWORDS_PACKAGE_LANGUAGES:
        stop = WordAnalyzer(language=language).stopwords
        assert stop == package_stopwords(language) and len(stop) > 50, language
    for language in NO_LIST | {"cjk"}:
        assert WordAnalyzer(language=language).stopwords == frozenset(), language
    assert stopword_list_names() == ["lucene", "english", "none", *STOPWORDS_PACKAGE_LANGUAGES]


def test_english_keeps_its_own_list():
    assert WordAnalyzer().stopwords == ENGLISH_STOPWORDS == WordAnalyzer(language="english").stopwords
    assert WordAnalyzer(language="french", stopwords="english").stopwords == ENGLISH_STOPWORDS
    assert WordAnalyzer().config()["stopwords"] == "english"  # English configs record the name, as before


@pytest.mark.parametrize("language", STOPWORDS_PACKAGE_LANGUAGES)
def test_list_words_are_tokens_as_the_tokenizer_emits_them(language):
    a = WordAnalyzer(language=language, stopwords="none", stemmer="none")
    for w in package_stopwords(language):
        assert w == unicodedata.normalize("NFC", w).lower() and a.tokens(w) == [w], (language, w)


def test_elisions_abbreviations_and_phrases_of_the_lists():
    fr = package_stopwords("french")
    assert {"l", "d", "qu", "n", "c", "les", "été", "être", "était"} <= fr  # l' d' qu' n' c. of the package
    assert not any("'" in w or "." in w or " " in w for w in fr)
    # listed only with the apostrophe (Italian ch' s', Czech ted', Greek δ’): the token it leaves
    assert {"ch", "s"} <= package_stopwords("italian") and "ted" in package_stopwords("czech")
    assert "δ" in package_stopwords("greek")
    assert WordAnalyzer(language="italian", stemmer="none").tokens("ch'io s'alza") == ["alza"]
    assert "و" in package_stopwords("persian")  # "\ufeffو" in the package's file
    assert "por" in package_stopwords("spanish") and "por qué" not in package_stopwords("spanish")
    assert not any(" " in w for w in package_stopwords("persian"))  # phrases are left out, not split
    assert "insermi" in package_stopwords("turkish")  # "INSERmi" in the package's file: lowercased


@pytest.mark.parametrize("language, text, tokens, stems", [
    ("french", "Les enfants de l’école étaient dans le jardin avec leurs parents, qu'il pleuve ou non.",
     ["enfants", "école", "jardin", "parents", "pleuve", "non"],
     ["enfant", "écol", "jardin", "parent", "pleuv", "non"]),
    ("german", "Die Kinder spielten gestern mit ihren Freunden in den großen Gärten.",
     ["kinder", "spielten", "gestern", "freunden", "großen", "gärten"],
     ["kind", "spielt", "gest", "freund", "gross", "gart"]),
    ("spanish", "Los niños jugaban con sus amigos en los jardines de la ciudad.",
     ["niños", "jugaban", "amigos", "jardines", "ciudad"],
     ["niñ", "jug", "amig", "jardin", "ciud"]),
])
def test_sentence_loses_its_stopwords_and_is_stemmed(language, text, tokens, stems):
    a = WordAnalyzer(language=language)
    assert a.tokens(text) == tokens
    assert a.analyze(text) == stems == Stemmer.Stemmer(language).stemWords(tokens)


def test_stopwords_are_removed_case_folded_and_composed_before_stemming():
    a = WordAnalyzer(language="french")
    # capitalised and decomposed ("e" + U+0301) stopwords go: matched after NFC and lowercasing
    assert a.tokens("LES Enfants E\u0301TAIENT la\u0300") == ["enfants"]
    # "avions" is a stopword (its stem "avion" is not): removed before stemming; "attendues" is not
    # one (its stem "attendu" is): kept and stemmed
    assert "avions" in a.stopwords and "avion" not in a.stopwords and "attendues" not in a.stopwords
    assert a.analyze("avions attendues") == ["attendu"]
    assert WordAnalyzer(language="french", lowercase=False).tokens("Les les enfants") == ["Les", "enfants"]


FRENCH_DOCS = {"cuisine": "La cuisine française utilise beaucoup de beurre et de fromage.",
               "velo": "Le Tour de France est une course cycliste très célèbre.",
               "paris": "Paris est la capitale de la France et une ville touristique.",
               "foret": "Les forêts des Vosges abritent des cerfs et des sangliers."}
SPANISH_DOCS = {"futbol": "El fútbol es el deporte más popular en España y en Argentina.",
                "paella": "La paella valenciana se cocina con arroz, azafrán y conejo.",
                "museo": "El museo del Prado de Madrid guarda pinturas de Velázquez y de Goya.",
                "playa": "Las playas de la costa mediterránea reciben muchos turistas en verano."}


@pytest.mark.parametrize("language, docs, queries", [
    ("french", FRENCH_DOCS, [("les fromages", "cuisine"), ("des courses cyclistes", "velo"),
                             ("la capitale de la France", "paris"), ("un cerf dans la forêt", "foret")]),
    ("spanish", SPANISH_DOCS, [("el arroz", "paella"), ("las pinturas de un museo", "museo"),
                               ("los deportes populares", "futbol"), ("una playa en el verano", "playa")]),
])
def test_bm25_index_finds_the_right_document(tmp_path, language, docs, queries):
    enc = BM25Encoder.from_spec(None, language=language)
    build_index(enc.encode_documents(list(docs.values()), list(docs)), tmp_path / language, encoder=enc)
    index = Index.open(tmp_path / language)
    cfg = index.encoder_config["analyzer"]
    assert cfg["language"] == language and cfg["stopwords"] == sorted(package_stopwords(language))
    loaded = index.load_encoder()
    for query, expected in queries:
        s, d = index.search(loaded.encode_queries([query]), 1)
        assert index.doc_ids[d[0][0]] == expected, query
    assert loaded.encode_queries(["de la" if language == "french" else "de la y el"]).row_dict(0) == {}


@pytest.mark.parametrize("language", ["french", "spanish", "german"])
def test_config_records_the_words_and_round_trips(monkeypatch, language):
    text = {"french": "Les enfants de l'école", "spanish": "Los niños de la ciudad",
            "german": "Die Kinder in den Gärten"}[language]
    a = WordAnalyzer(language=language, min_length=2)
    cfg = a.config()
    assert cfg["version"] == 3 and cfg["stopwords"] == sorted(package_stopwords(language))
    named = WordAnalyzer(language=language, stopwords=language, min_length=2)
    assert named.config() == cfg  # the default and the list named explicitly are the same
    # rebuilding needs only the recorded words, not the package (whose lists may change later)
    monkeypatch.setattr("sparsearch.text.package_stopwords", lambda _: pytest.fail("read the package"))
    again = get_analyzer(cfg)
    assert again.config() == cfg and again.stopwords == a.stopwords
    assert again.analyze(text) == a.analyze(text) and len(a.analyze(text)) == 2
    kept = get_analyzer({**cfg, "stopwords": [w for w in cfg["stopwords"] if w not in ("les", "los", "die")]})
    assert len(kept.analyze(text)) == 3  # the recorded words decide, not the language's current list


def test_explicit_list_name_for_another_language():
    a = WordAnalyzer(language="french", stopwords="spanish", stemmer="none")
    assert a.stopwords == package_stopwords("spanish") and a.tokens("los enfants") == ["enfants"]
    assert WordAnalyzer(language="basque", stopwords="french").stopwords == package_stopwords("french")


OLD_FRENCH = {"type": "word", "version": 3, "stemmer": "french", "stopwords": "none", "lowercase": True,
              "min_length": 1, "language": "french"}


def test_configs_written_before_the_package_lists_keep_no_stopwords():
    old = get_analyzer(OLD_FRENCH)
    assert old.stopwords == frozenset() and old.config() == OLD_FRENCH
    assert old.analyze("Les enfants de l'école") == ["le", "enfant", "de", "l", "écol"]
    bare = get_analyzer({k: v for k, v in OLD_FRENCH.items() if k != "stopwords"})  # that time's default
    assert bare.stopwords == frozenset() and bare.config() == OLD_FRENCH
    assert get_analyzer({**OLD_FRENCH, "language": "german", "stemmer": "german"}).stopwords == frozenset()
    enc = BM25Encoder.from_spec(None, language="french", stopwords="none")
    assert enc.config()["analyzer"] == OLD_FRENCH


def test_unknown_list_name_is_a_one_line_error():
    with pytest.raises(InvalidInputError) as e:
        WordAnalyzer(language="french", stopwords="francais")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("stopwords 'francais': neither a list name (lucene, english, none, ")
    assert "french" in msg and "spanish" in msg
    with pytest.raises(InvalidInputError) as e:
        WordAnalyzer(language="basque", stopwords="basque")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("stopwords 'basque': no stopword list for this language (lists: ")
    with pytest.raises(InvalidInputError, match="no stop-words list named 'klingon'"):
        package_stopwords("klingon")
    with pytest.raises(InvalidInputError, match="'francais'.*neither a list name"):
        BM25Encoder.from_spec(None, language="french", stopwords="francais")
