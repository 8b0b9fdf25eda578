"""Label-free adaptation and supervised fine-tuning (sparsearch.encoders.adaptation) with a tiny
random BERT: pseudo-queries, teacher examples, provenance in the model folder and the index
manifest, the `adapt` command, and the refusals (test split, bad recipes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="adaptation needs torch (the 'splade' extra)")
pytest.importorskip("transformers", reason="adaptation needs transformers (the 'splade' extra)")

from sparsearch.cli import main  # noqa: E402
from sparsearch.encoders.adaptation import (  # noqa: E402
    AdaptConfig, adapt, examples_from_teacher, finetune, pseudo_queries, teacher_lists,
)
from sparsearch.encoders.splade import SpladeDocEncoder, SpladeEncoder  # noqa: E402
from sparsearch.errors import InvalidInputError  # noqa: E402
from sparsearch.evaluation import load_beir  # noqa: E402
from sparsearch.index.builder import build_index  # noqa: E402
from sparsearch.index.manifest import read_manifest  # noqa: E402

from ..conftest import write_beir  # noqa: E402
from .test_splade_train import TOPICS, tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(max_queries=24, depth=8, skip_top=1, batch_size=4, doc_max_length=16, lambda_d=1e-3, lr=3e-3,
            max_seconds=60.0)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """A topical collection: titles, bodies of several sentences, train and test judgements."""
    rng = random.Random(0)
    docs, queries, train, test = {}, {}, {}, {}
    for t, words in TOPICS.items():
        w = words.split()
        for j in range(4):
            body = ". ".join(" ".join(rng.sample(w, 5)).capitalize() for _ in range(3)) + "."
            docs[f"{t}{j}"] = (" ".join(rng.sample(w, 3)), body)
        queries[f"tr-{t}"], queries[f"te-{t}"] = " ".join(rng.sample(w, 2)), " ".join(rng.sample(w, 2))
        train[f"tr-{t}"], test[f"te-{t}"] = {f"{t}0": 1, f"{t}1": 1}, {f"{t}2": 1}
    root = write_beir(tmp_path_factory.mktemp("adapt") / "topics", docs, queries, test)
    with open(root / "qrels" / "train.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, rel in train.items():
            for d, g in rel.items():
                f.write(f"{q}\t{d}\t{g}\n")
    return root


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    """The tiny random BERT and the word-level tokenizer of the trainer tests, saved as a folder."""
    from .test_splade_train import tokenizer as make_tokenizer

    tok = make_tokenizer.__wrapped__()
    out = tmp_path_factory.mktemp("base") / "tiny-bert"
    tiny_model(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    monkeypatch.setenv("SPARSEARCH_NO_CACHE", "1")


def test_pseudo_queries_titles_sentences_and_unlabelled_split_queries(corpus_dir):
    ds = load_beir(corpus_dir, None)
    assert ds.qrels == {} and ds.queries == {}
    pairs = pseudo_queries(ds, AdaptConfig(max_queries=None, sentences_per_doc=2))
    by_doc = {}
    for q, src in pairs:
        by_doc.setdefault(src, []).append(q)
    assert len(by_doc) == len(ds.corpus)
    for d, qs in by_doc.items():
        doc = ds.corpus[d]
        assert doc["title"] in qs and len(qs) == 3  # the title and two of its body's sentences
        assert all(q in doc["text"] for q in qs if q != doc["title"])
    with_train = pseudo_queries(ds, AdaptConfig(max_queries=None, titles=False, sentences_per_doc=0,
                                                split_queries=("train",)))
    assert sorted(q for q, _ in with_train) == sorted(ds.all_queries[q] for q in ds.all_queries if q.startswith("tr-"))
    assert all(src is None for _, src in with_train)  # no judgement is read: no source document
    assert len(pseudo_queries(ds, AdaptConfig(max_queries=5))) == 5
    with pytest.raises(InvalidInputError, match="test split"):
        AdaptConfig(split_queries=("test",)).check()


def test_examples_from_teacher_draw_negatives_below_the_top():
    docs = [f"doc {i}" for i in range(10)]
    ids = [str(i) for i in range(10)]
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1.0, 0.5, 0.4, 0.3, 0.2, 0.1]], np.float32)
    docnums = np.array([[3, 1, 4, 5, 9, 2], [7, 8, 0, 6, 2, -1]])
    cfg = AdaptConfig(depth=6, skip_top=2, n_negatives=2)
    ex = examples_from_teacher([("q a", "1"), ("q b", None)], ids, docs, (scores, docnums), cfg,
                               exclude=[set(), {0}])
    a, b = ex
    assert a.positive == "doc 1" and a.teacher_positive == pytest.approx(0.8)
    assert set(a.negatives) <= {"doc 4", "doc 5", "doc 9", "doc 2"}  # ranks >= 2, never the source
    assert a.teacher_negatives == [pytest.approx(dict(zip(docnums[0], scores[0]))[int(n.split()[1])])
                                   for n in a.negatives]
    assert b.positive == "doc 7"  # no source: the teacher's top hit
    assert set(b.negatives) <= {"doc 6", "doc 2"}  # doc 0 is excluded (judged relevant)
    cut = examples_from_teacher([("doc", "1")], ids, ["a doc b", "x doc y", *docs[2:]], (scores, docnums),
                                AdaptConfig(depth=6, skip_top=2, n_negatives=2, remove_query=1.0))
    assert cut[0].positive == "x y"  # inverse cloze: the query's words are cut out of the positive
    again = examples_from_teacher([("q a", "1"), ("q b", None)], ids, docs, (scores, docnums), cfg,
                                  exclude=[set(), {0}])
    assert [e.negatives for e in again] == [e.negatives for e in ex]  # seeded


@pytest.fixture(scope="module")
def adapted(corpus_dir, base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "model"
    return out, adapt(corpus_dir, out, AdaptConfig(base_model=base_model, **TINY))


def test_adapt_label_free_saves_a_model_with_provenance(adapted):
    out, prov = adapted
    saved = json.loads((out / "provenance.json").read_text())
    assert saved == prov
    assert prov["kind"] == "label-free" and prov["steps"] == 6 and prov["examples"] == 24
    assert prov["recipe"]["encoder"] == "splade-doc" and prov["seed"] == 0
    assert prov["n_docs"] == 24 and len(prov["corpus_digest"]) == 16 and len(prov["base_model_digest"]) == 16
    assert prov["examples_per_second"] > 0 and prov["teacher_factor"] > 0


def test_adapted_model_indexes_and_the_manifest_records_its_provenance(adapted, corpus_dir, tmp_path):
    out, prov = adapted
    ds = load_beir(corpus_dir, "test")
    enc = SpladeDocEncoder(str(out), backend="torch", cache=False)
    docs = enc.encode_documents(ds.doc_texts(), ds.doc_ids)
    index = build_index(docs, tmp_path / "ix", encoder=enc)
    assert read_manifest(index.path)["encoder"]["provenance"] == prov
    _, found = index.search(enc.encode_queries(ds.query_texts()), 3)
    assert (found >= 0).all()
    (out / "provenance.json").write_text("{not json")  # a damaged provenance file is named, not ignored
    with pytest.raises(InvalidInputError, match="provenance.json: line 1"):
        SpladeDocEncoder(str(out)).config()
    (out / "provenance.json").write_text(json.dumps(prov))


def test_supervised_finetune_reads_train_judgements_only(corpus_dir, base_model, tmp_path):
    out = tmp_path / "sup"
    prov = finetune(corpus_dir, out, AdaptConfig(base_model=base_model, encoder="splade", **TINY))
    assert prov["kind"] == "supervised" and prov["split"] == "train" and prov["judged_pairs"] == 12
    assert prov["examples"] == 12 and prov["steps"] == 3
    texts = load_beir(corpus_dir, None).doc_texts()[:4]
    before = SpladeEncoder(base_model, backend="torch", cache=False).encode_documents(texts)
    after = SpladeEncoder(str(out), backend="torch", cache=False).encode_documents(texts)
    assert not np.array_equal(before.to_scipy().toarray(), after.to_scipy().toarray())
    capped = finetune(corpus_dir, tmp_path / "cap", AdaptConfig(base_model=base_model, **{**TINY, "max_queries": 5}))
    assert capped["examples"] == 5 and capped["steps"] == 2  # at most max_queries judged pairs per epoch
    with pytest.raises(InvalidInputError, match="test"):
        finetune(corpus_dir, tmp_path / "no", AdaptConfig(base_model=base_model, **TINY), split="test")


def run_adapt_command(corpus_dir, base_model, tmp_path, name: str, **recipe_fields) -> Path:
    """`sparsearch adapt` with the TINY recipe (plus ``recipe_fields``) from a file; the model folder."""
    recipe = tmp_path / f"{name}.json"
    recipe.write_text(json.dumps({**{k: v for k, v in TINY.items() if k != "max_seconds"}, **recipe_fields}))
    out = tmp_path / name
    try:
        main(["adapt", str(corpus_dir), "--out", str(out), "--base-model", base_model, "--recipe", str(recipe),
              "--max-minutes", "1"])
    except SystemExit as e:
        assert e.code == 0
    return out


def test_adapt_command(corpus_dir, base_model, tmp_path, capsys):
    out = run_adapt_command(corpus_dir, base_model, tmp_path, "cli-model")
    said = capsys.readouterr().out
    assert "label-free adaptation" in said and f"--encoder splade-doc:{out}" in said
    assert json.loads((out / "provenance.json").read_text())["recipe"]["max_queries"] == 24


def test_adapt_splade_idf_trains_the_idf_augmented_query_side(corpus_dir, base_model, tmp_path, capsys):
    """encoder splade-idf: the trainer scores queries as the model's vector plus idf_weight x the
    corpus-IDF bag, and the saved model loads as --encoder splade-idf:DIR (recipe's encoder kept
    when --encoder is not given)."""
    from sparsearch.encoders import get_encoder
    from sparsearch.encoders.adaptation import _trainer

    ds = load_beir(corpus_dir, None)
    tr = _trainer(AdaptConfig(base_model=base_model, encoder="splade-idf", idf_weight=0.5, **TINY), ds.doc_texts())
    assert tr.query_idf_weight == 0.5 and tr.query_idf is not None and tr.flops_weights is not None
    assert tr.anchor_weight == 0.0 and tr._anchor is None
    anchored = _trainer(AdaptConfig(base_model=base_model, encoder="splade", anchor_weight=0.2, **TINY), ds.doc_texts())
    assert anchored.anchor_weight == 0.2 and anchored._anchor is not None
    out = run_adapt_command(corpus_dir, base_model, tmp_path, "idf-model", encoder="splade-idf")
    assert f"--encoder splade-idf:{out}" in capsys.readouterr().out
    enc = get_encoder(f"splade-idf:{out}", backend="torch", cache=False)
    enc.encode_documents(ds.doc_texts())
    q = enc.encode_queries(["cat dog"])
    assert q.nnz > 0 and json.loads((out / "provenance.json").read_text())["recipe"]["encoder"] == "splade-idf"


@pytest.mark.parametrize("text, problem", [("{\"epochs\": 1,", "not valid JSON"), ("[1]", "JSON object"),
                                           ("{\"epocs\": 2}", "unknown recipe field")])
def test_adapt_command_rejects_bad_recipes(corpus_dir, tmp_path, capsys, text, problem):
    recipe = tmp_path / "bad.json"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["adapt", str(corpus_dir), "--out", str(tmp_path / "m"), "--recipe", str(recipe)])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert problem in err and str(recipe) in err and "Traceback" not in err


def test_bm25_teacher_ranks_by_bm25_alone():
    docs = ["cats purr softly", "dogs bark loudly at cats", "the stock market fell", "cats and more cats purr"]
    scores, found = teacher_lists(docs, ["cats purr", "stock market"], 3, teacher="bm25")
    assert found.shape == (2, 3) and found[1, 0] == 2
    assert set(found[0, :2].tolist()) == {0, 3} and (np.diff(scores[0]) <= 0).all()
    with pytest.raises(InvalidInputError, match="teacher"):
        AdaptConfig(teacher="oracle").check()
