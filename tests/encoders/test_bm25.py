import math

import numpy as np
import pytest

from sparsearch.encoders import get_encoder, load_encoder, load_encoder_of, pack_state, register, unpack_state
from sparsearch.errors import InvalidInputError, MissingExtraError
from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.text import WordAnalyzer

DOCS = ["the cat sat on the mat", "the dog chased the cat", "a bird sang", "cats and dogs and cats"]


def lucene_bm25(term, doc_terms, corpus_terms, k1, b):
    n = len(corpus_terms)
    df = sum(term in d for d in corpus_terms)
    avgdl = sum(len(d) for d in corpus_terms) / n
    tf = doc_terms.count(term)
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * len(doc_terms) / avgdl))


def test_analyzer_lowercases_stops_and_stems():
    a = WordAnalyzer()  # default: the fuller English stopword list, Porter stemmer
    assert a.analyze("The Cats were RUNNING, and the dog's barking!") == ["cat", "run", "dog", "s", "bark"]
    lucene = WordAnalyzer(stemmer="english", stopwords="lucene")  # the default before issue 16
    assert lucene.analyze("The Cats were RUNNING, and the dog's barking!") == ["cat", "were", "run", "dog", "s", "bark"]
    assert WordAnalyzer(stemmer=None, stopwords=None).analyze("The Cats") == ["the", "cats"]
    with pytest.raises(ValueError, match="unknown stemmer"):
        WordAnalyzer(stemmer="klingon")


@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_document_weights_are_lucene_bm25(k1, b):
    enc = BM25Encoder(k1=k1, b=b).fit(DOCS)
    batch = enc.encode_documents(DOCS)
    corpus_terms = [enc.analyzer.analyze(d) for d in DOCS]
    for i, terms in enumerate(corpus_terms):
        got = batch.row_dict(i)
        assert set(got) == set(terms)
        for t in set(terms):
            assert got[t] == pytest.approx(lucene_bm25(t, terms, corpus_terms, k1, b), rel=1e-5)


def test_robertson_variant_clips_negative_idf():
    docs = ["common word", "common thing", "common stuff", "rare"]
    enc = BM25Encoder(method="robertson").fit(docs)
    idf = dict(zip(enc.vocab.terms, enc.idf()))
    assert idf["common"] == 0.0 and idf["rare"] > 0
    batch = enc.encode_documents(docs)
    assert "common" not in batch.row_dict(0)  # zero weight is not stored
    assert np.all(batch.values > 0)


def test_queries_are_term_counts_and_dot_product_is_bm25():
    enc = BM25Encoder().fit(DOCS)
    docs = enc.encode_documents(DOCS)
    q = enc.encode_queries(["cat cat dog unicorn"])
    assert q.row_dict(0) == {"cat": 2.0, "dog": 1.0, "unicorn": 1.0}
    scores = (q.remap(enc.vocab).to_scipy() @ docs.to_scipy().T).toarray()[0]
    corpus_terms = [enc.analyzer.analyze(d) for d in DOCS]
    k1, b = enc.k1, enc.b
    expected = [2 * lucene_bm25("cat", t, corpus_terms, k1, b) + lucene_bm25("dog", t, corpus_terms, k1, b)
                for t in corpus_terms]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_config_roundtrip_through_registry(tmp_path):
    enc = get_encoder("bm25:robertson", k1=1.5, b=0.6)
    enc.fit(DOCS)
    enc.save_state(tmp_path)
    again = load_encoder(enc.config(), tmp_path)
    assert again.config() == enc.config()
    np.testing.assert_array_equal(again.encode_documents(DOCS).values, enc.encode_documents(DOCS).values)
    with pytest.raises(ValueError, match="unknown encoder"):
        get_encoder("tfidf")
    with pytest.raises(ValueError, match="k1 >= 0"):
        BM25Encoder(k1=-1)


def test_encoder_of_a_manifest_and_state_shipping(tmp_path):
    enc = get_encoder("bm25").fit(DOCS)
    files = pack_state(enc)  # what crosses to Ray workers / into a Milvus collection
    assert files and all(isinstance(v, bytes) for v in files.values())
    state = unpack_state(files, tmp_path / "encoder-x")
    assert pack_state(state) == files
    again = load_encoder_of(tmp_path, {"encoder": enc.config(), "encoder_state": "encoder-x"})
    np.testing.assert_array_equal(again.encode_queries(DOCS).values, enc.encode_queries(DOCS).values)
    assert unpack_state({}, tmp_path / "none") is None and pack_state(None) == {}
    with pytest.raises(InvalidInputError, match="index has no encoder; pass query vectors"):
        load_encoder_of(tmp_path, {"encoder": None})
    with pytest.raises(InvalidInputError, match="outside"):
        unpack_state({"../evil": b"x"}, tmp_path / "s")
    with pytest.raises(InvalidInputError, match="unknown encoder 'nope'"):
        load_encoder({"name": "nope"})
    register("needs-extra", "sparsearch_no_such_module:Factory")
    with pytest.raises(MissingExtraError, match="optional dependencies") as e:
        get_encoder("needs-extra")
    assert isinstance(e.value, ImportError)  # callers probing for an extra still catch ImportError


def test_statistics_grow_with_new_documents_and_unknown_terms_are_refused():
    """issue 15 item 2: a fitted BM25 used to drop terms it had not seen (silently); now the
    statistics grow (update_statistics == fit on the whole corpus, old term ids kept) and encoding
    an unseen term without growing them is an error naming it."""
    old, new = DOCS[:3], ["a quokka smiles", "the cat met a quokka"]
    enc = BM25Encoder().fit(old)
    ids_before = list(enc.vocab.terms)
    with pytest.raises(InvalidInputError, match="term 'quokka'"):
        enc.encode_documents(new)
    assert enc.update_statistics(new) is True
    full = BM25Encoder().fit(old + new)
    assert enc.vocab.terms[:len(ids_before)] == ids_before and enc.vocab.terms == full.vocab.terms
    np.testing.assert_array_equal(enc.df, full.df)
    assert (enc.n_docs, enc.n_tokens, enc.avgdl) == (full.n_docs, full.n_tokens, full.avgdl)
    assert enc.encode_documents(new).to_dicts() == full.encode_documents(new).to_dicts()
    assert "quokka" in enc.encode_documents(new).row_dict(0)


def test_state_roundtrip_keeps_token_count(tmp_path):
    enc = BM25Encoder().fit(DOCS)
    enc.save_state(tmp_path)
    again = BM25Encoder.from_config(enc.config(), tmp_path)
    assert again.n_tokens == enc.n_tokens and again.statistics()["n_docs"] == 4
    again.update_statistics(["quokka"])
    assert again.n_docs == 5 and again.vocab.get("quokka") >= 0
