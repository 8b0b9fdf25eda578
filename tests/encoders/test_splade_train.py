"""SpladeTrainer on CPU with a tiny random BERT: the loss goes down, FLOPS falls as lambda grows,
MarginMSE distillation works, and the trained model loads back as a SpladeEncoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the 'splade' extra)")
pytest.importorskip("transformers", reason="training needs transformers (the 'splade' extra)")

from sparsearch.encoders.splade import SpladeEncoder, splade_pool  # noqa: E402
from sparsearch.encoders.splade_train import (  # noqa: E402
    SpladeTrainer, TrainingExample, _mask_false_negatives, _pool, _winner_pool, examples_from_qrels, flops_regularizer, idf_flops_weights, margin_mse,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


TOPICS = {
    "pets": "cat dog kitten puppy pet fur paw leash",
    "space": "planet star galaxy orbit telescope moon comet rocket",
    "food": "bread cheese pasta soup salad fruit cake butter",
    "music": "guitar piano song melody drum violin concert rhythm",
    "law": "court judge lawyer trial verdict jury appeal statute",
    "sea": "ocean wave ship sailor fish coral tide harbor",
}


def synthetic_examples(n: int, seed: int = 0) -> list[TrainingExample]:
    rng = random.Random(seed)
    names = list(TOPICS)
    out = []
    for _ in range(n):
        t, other = rng.sample(names, 2)
        words, owords = TOPICS[t].split(), TOPICS[other].split()
        q = " ".join(rng.sample(words, 2))
        pos = " ".join(rng.sample(words, 5))
        neg = " ".join(rng.sample(owords, 5))
        out.append(TrainingExample(q, pos, [neg], teacher_positive=8.0, teacher_negatives=[1.0]))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer over the synthetic topics' words (tiny vocabulary: fast tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for t in TOPICS.values() for w in t.split()})
    vocab = {t: i for i, t in enumerate(special + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_model(tokenizer, seed: int = 0):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(cfg)


def make_trainer(tokenizer, **kw):
    kw.setdefault("lr", 3e-3)
    kw.setdefault("lambda_q", 0.0)
    kw.setdefault("lambda_d", 0.0)
    kw.setdefault("query_max_length", 8)
    kw.setdefault("doc_max_length", 12)
    return SpladeTrainer(tiny_model(tokenizer), tokenizer, device="cpu", seed=0, **kw)


def test_regularisers():
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert float(flops_regularizer(x)) == pytest.approx(2.0 ** 2 + 0 + 1.0 ** 2)
    assert float(margin_mse(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([5.0]), torch.tensor([1.0]))) \
        == pytest.approx(4.0)


def test_lambda_warmup_is_quadratic(tokenizer):
    tr = make_trainer(tokenizer, lambda_q=1.0, lambda_d=0.5, lambda_warmup_steps=10)
    assert tr.lambdas(0) == (0.0, 0.0)
    assert tr.lambdas(5) == pytest.approx((0.25, 0.125))
    assert tr.lambdas(10) == tr.lambdas(50) == pytest.approx((1.0, 0.5))


def test_loss_goes_down(tokenizer):
    ex = synthetic_examples(96)
    held_out = synthetic_examples(16, seed=1)
    tr = make_trainer(tokenizer, lr_schedule="constant")  # the learning signal, not the schedule
    before = tr.evaluate_loss(held_out)["rank_loss"]
    hist = tr.train(ex, batch_size=8, epochs=3)
    assert len(hist) == 36
    first = np.mean([h["rank_loss"] for h in hist[:5]])
    last = np.mean([h["rank_loss"] for h in hist[-5:]])
    assert last < 0.7 * first
    assert tr.evaluate_loss(held_out)["rank_loss"] < 0.7 * before


def test_flops_falls_as_lambda_grows(tokenizer):
    ex = synthetic_examples(64)
    free = make_trainer(tokenizer)
    free.train(ex, batch_size=8, max_steps=24)
    reg = make_trainer(tokenizer, lambda_q=3.0, lambda_d=3.0, lambda_warmup_steps=12)
    hist = reg.train(ex, batch_size=8, max_steps=24)
    lam = [h["lambda_d"] for h in hist]
    assert lam == sorted(lam) and lam[0] < lam[-1]
    held_out = synthetic_examples(16, seed=2)
    f_free, f_reg = free.evaluate_loss(held_out), reg.evaluate_loss(held_out)
    assert f_reg["flops"] < 0.5 * f_free["flops"]
    assert f_reg["nnz_d"] < f_free["nnz_d"] and f_reg["flops_reg_d"] < f_free["flops_reg_d"]
    # within the regularised run, FLOPS is lower once lambda is at full strength
    assert np.mean([h["flops"] for h in hist[-4:]]) < np.mean([h["flops"] for h in hist[:4]])


def test_margin_mse_distillation(tokenizer):
    ex = synthetic_examples(64)
    tr = make_trainer(tokenizer, contrastive_weight=0.0, distill_weight=1.0)
    hist = tr.train(ex, batch_size=8, max_steps=24)
    assert "rank_loss" not in hist[0]
    assert np.mean([h["margin_mse"] for h in hist[-4:]]) < np.mean([h["margin_mse"] for h in hist[:4]])


def test_inference_free_training(tokenizer):
    ex = synthetic_examples(64)
    idf = np.ones(len(tokenizer), dtype=np.float32)
    tr = make_trainer(tokenizer, query_idf=idf, lambda_d=0.01, lr=1e-2)
    q = tr.encode_queries_idf(["cat cat dog", "zzz"])
    assert q.shape == (2, len(tokenizer)) and float(q[0].sum()) == 2.0 and float(q[1].sum()) == 0.0
    hist = tr.train(ex, batch_size=8, max_steps=40)
    assert np.mean([h["rank_loss"] for h in hist[-4:]]) < 0.7 * np.mean([h["rank_loss"] for h in hist[:4]])


def test_idf_augmented_queries_train_the_model_side(tokenizer):
    """splade-idf training: queries are the model's vector plus weight x the IDF bag; lambda_q
    regularises the model's part only; training still lowers the loss."""
    batch = synthetic_examples(6, seed=2)
    idf = np.linspace(0.5, 3.0, len(tokenizer)).astype(np.float32)
    tr = make_trainer(tokenizer, query_idf=idf, query_idf_weight=0.5, lambda_q=0.2, lambda_warmup_steps=0)
    texts = [e.query for e in batch]
    with torch.no_grad():
        model_side = tr.encode(texts, tr.query_max_length)
        np.testing.assert_allclose(tr.encode_queries(texts).numpy(),
                                   (model_side + 0.5 * tr.encode_queries_idf(texts)).numpy(), atol=1e-6)
        parts = tr.evaluate_loss(batch)
    assert parts["flops_reg_q"] == pytest.approx(float(flops_regularizer(model_side)), rel=1e-5)
    assert parts["loss"] == pytest.approx(parts["rank_loss"] + 0.2 * parts["flops_reg_q"], rel=1e-5)
    ex = synthetic_examples(64)
    tr = make_trainer(tokenizer, query_idf=np.ones(len(tokenizer), np.float32), query_idf_weight=1.0, lr=1e-2)
    hist = tr.train(ex, batch_size=8, max_steps=40)
    assert np.mean([h["rank_loss"] for h in hist[-4:]]) < 0.7 * np.mean([h["rank_loss"] for h in hist[:4]])
    for bad in ({"query_idf_weight": 1.0}, {"query_idf": idf, "query_idf_weight": -1.0}):
        with pytest.raises(ValueError, match="query_idf_weight"):
            make_trainer(tokenizer, **bad)


def test_anchor_keeps_documents_near_the_starting_model(tokenizer):
    """anchor_weight: the loss adds weight x mean ||d - d0||^2, d0 from a frozen copy of the
    starting model (0 before any step); with a strong anchor, training moves documents less."""
    batch = synthetic_examples(6, seed=3)
    tr = make_trainer(tokenizer, anchor_weight=0.5)
    parts = tr.evaluate_loss(batch)
    assert parts["anchor"] == pytest.approx(0.0, abs=1e-9)
    assert all(not p.requires_grad for p in tr._anchor.parameters())
    ex = synthetic_examples(64)
    docs = [e.positive for e in ex[:16]]
    moved = {}
    for w in (0.0, 50.0):
        tr = make_trainer(tokenizer, anchor_weight=w, lr=1e-2)
        with torch.no_grad():
            start = tr.encode(docs, tr.doc_max_length)
        hist = tr.train(ex, batch_size=8, max_steps=30)
        with torch.no_grad():
            moved[w] = float(((tr.encode(docs, tr.doc_max_length) - start) ** 2).sum(1).mean())
        if w:
            assert hist[-1]["anchor"] > 0 and tr._anchor is not None
            assert hist[-1]["loss"] == pytest.approx(hist[-1]["rank_loss"] + w * hist[-1]["anchor"], rel=1e-4)
        else:
            assert tr._anchor is None and "anchor" not in hist[-1]
    assert moved[50.0] < 0.5 * moved[0.0]
    with pytest.raises(ValueError, match="anchor_weight"):
        make_trainer(tokenizer, anchor_weight=-1.0)


def test_saved_model_loads_as_encoder(tokenizer, tmp_path):
    tr = make_trainer(tokenizer)
    tr.train(synthetic_examples(16), batch_size=8, max_steps=2)
    d = tr.save(tmp_path / "trained")
    enc = SpladeEncoder(str(d), cache=False)
    b = enc.encode_queries(["cat dog"])
    tr.model.eval()
    with torch.no_grad():
        ref = tr.encode(["cat dog"], enc.query_max_length).numpy()
    np.testing.assert_allclose(b.to_scipy().toarray(), ref, atol=1e-5)


def test_examples_from_qrels():
    corpus = {"a": "cats", "b": "dogs", "c": "fish", "d": "birds"}
    ex = examples_from_qrels({"q": "cat"}, corpus, {"q": {"a": 1}}, {"q": ["a", "c"]}, n_negatives=2,
                             teacher={"q": {"a": 5.0, "c": 1.0}})
    assert len(ex) == 1 and ex[0].positive == "cats" and ex[0].negatives[0] == "fish"
    assert len(ex[0].negatives) == 2 and "cats" not in ex[0].negatives
    assert ex[0].teacher_positive == 5.0 and ex[0].teacher_negatives[0] == 1.0


# ------------------------------------------------ issue 20: the six trainer defects


def record_batches(tr, train=True):
    """Make ``tr.train_step`` record its batches (and skip the optimisation when ``train`` is False)."""
    seen = []
    step = tr.train_step

    def wrapped(batch):
        seen.append(list(batch))
        if train:
            return step(batch)
        tr.step_count += 1
        return {"loss": 0.0}

    tr.train_step = wrapped
    return seen


def test_pool_takes_the_max_of_raw_logits_first():
    """Defect 1: same values and gradients as the reference pooling (activation over every token)."""
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(4, 7, 11, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    mask[3, 6:] = 0
    with torch.no_grad():  # a padding position with the largest logit must not count
        logits[2, 4, :] = 50.0
    upstream = torch.rand(4, 11, generator=gen, dtype=torch.float64)
    ref = splade_pool(logits, mask)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), logits)
    new = _pool(logits, mask)
    (g_new,) = torch.autograd.grad((new * upstream).sum(), logits)
    assert (ref == 0).any() and (ref > 0).any()  # both branches of the ReLU are exercised
    torch.testing.assert_close(new, ref)
    torch.testing.assert_close(g_new, g_ref)
    assert float(g_new[2, 2:].abs().sum()) == 0.0
    # the activation runs on the pooled (B, V) array, not on every token's (B, L, V) logits
    fresh = _pool(logits, mask)
    assert fresh.grad_fn.name().startswith("Log1P") and tuple(fresh.grad_fn._saved_self.shape) == (4, 11)
    assert fresh.grad_fn.next_functions[0][0].name().startswith("Relu")


def test_lambda_warmup_follows_the_run_length(tokenizer):
    """Defect 2: by default the warm-up is a third of the run, so a short run reaches the final lambdas."""
    ex = synthetic_examples(32)
    tr = make_trainer(tokenizer, lambda_q=0.2, lambda_d=0.1)
    hist = tr.train(ex, batch_size=8, max_steps=12)
    assert tr.lambda_warmup() == 4
    lam = [h["lambda_d"] for h in hist]
    assert lam[0] == 0.0 and lam == sorted(lam)
    assert lam[4:] == pytest.approx([0.1] * 8) and hist[-1]["lambda_q"] == pytest.approx(0.2)
    # an explicit warm-up still wins
    slow = make_trainer(tokenizer, lambda_q=0.2, lambda_d=0.1, lambda_warmup_steps=1000)
    assert slow.train(ex, batch_size=8, max_steps=12)[-1]["lambda_d"] < 0.001
    frac = make_trainer(tokenizer, lambda_d=0.1, lambda_warmup_fraction=0.5)
    frac.train(ex, batch_size=8, epochs=3)
    assert frac.lambda_warmup() == 6
    none = make_trainer(tokenizer, lambda_d=0.1, lambda_warmup_fraction=0.0)
    assert none.train(ex, batch_size=8, max_steps=2)[0]["lambda_d"] == pytest.approx(0.1)


def test_query_length_matches_the_encoder(tokenizer, tmp_path):
    """Defect 3: the trainer's default query limit is the encoder's, so a long query trains as it is encoded."""
    tr = SpladeTrainer(tiny_model(tokenizer), tokenizer, device="cpu", doc_max_length=12)
    d = tr.save(tmp_path / "m")
    enc = SpladeEncoder(str(d), cache=False, backend="torch")
    assert tr.query_max_length == enc.query_max_length > 32
    words = TOPICS["space"].split() + TOPICS["sea"].split()
    long_query = " ".join(words * 3)  # 48 tokens: beyond the old limit of 32
    assert len(tokenizer(long_query)["input_ids"]) > 40
    tr.model.eval()
    with torch.no_grad():
        ours = tr.encode([long_query], tr.query_max_length).numpy()
    np.testing.assert_allclose(enc.encode_queries([long_query]).to_scipy().toarray(), ours, atol=1e-5)


def test_train_time_budget(tokenizer):
    """Defect 4: no step starts after ``max_seconds``."""
    tr = make_trainer(tokenizer)
    tr.clock = lambda: float(tr.step_count)  # every step takes one 'second'
    hist = tr.train(synthetic_examples(32), batch_size=8, epochs=10, max_seconds=5)
    assert len(hist) == 5 and tr.stop_reason == "max_seconds"
    assert tr.epoch_stats[-1]["partial"] and tr.epoch_stats[-1]["steps"] == 1


def test_train_epoch_hook_validates_and_stops(tokenizer):
    """Defect 4: a per-epoch hook gets the epoch's statistics, may validate, and may stop training."""
    held_out = synthetic_examples(8, seed=3)
    calls = []

    def hook(epoch, stats):
        calls.append((epoch, stats, tr.evaluate_loss(held_out)["rank_loss"]))
        return epoch == 1

    tr = make_trainer(tokenizer)
    hist = tr.train(synthetic_examples(32), batch_size=8, epochs=5, on_epoch=hook)
    assert [c[0] for c in calls] == [0, 1] and len(hist) == 8 and tr.stop_reason == "on_epoch"
    stats = calls[1][1]
    assert stats["steps"] == 4 and stats["step"] == 8 and not stats["partial"]
    assert stats["loss"] == pytest.approx(np.mean([h["loss"] for h in hist[4:]]))
    assert calls[1][2] < calls[0][2]  # validation after each epoch; the model trains on after it
    assert tr.epoch_stats == [c[1] for c in calls]
    # without a hook every epoch runs
    tr2 = make_trainer(tokenizer)
    tr2.train(synthetic_examples(32), batch_size=8, epochs=3)
    assert tr2.stop_reason == "epochs" and [s["epoch"] for s in tr2.epoch_stats] == [0, 1, 2]


def test_train_learning_rate_decays_linearly(tokenizer):
    """Defect 4: linear warm-up, then linear decay towards 0 over the run; ``constant`` keeps it."""
    ex = synthetic_examples(32)
    tr = make_trainer(tokenizer, lr=1e-3, warmup_steps=2)
    lrs = [h["lr"] for h in tr.train(ex, batch_size=8, max_steps=10)]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    assert lrs[2:] == pytest.approx([1e-3 * (10 - s) / 8 for s in range(2, 10)])
    assert lrs[-1] > 0
    flat = make_trainer(tokenizer, lr=1e-3, lr_schedule="constant")
    assert [h["lr"] for h in flat.train(ex, batch_size=8, max_steps=6)] == pytest.approx([1e-3] * 6)
    with pytest.raises(ValueError):
        make_trainer(tokenizer, lr_schedule="cosine")


def test_train_redraws_examples_between_epochs(tokenizer):
    """Defect 4: ``resample(epoch)`` supplies every later epoch's examples (fresh negatives)."""
    first = synthetic_examples(16, seed=0)
    fresh = {e: synthetic_examples(16, seed=10 + e) for e in (1, 2)}
    asked = []

    def resample(epoch):
        asked.append(epoch)
        return fresh[epoch]

    tr = make_trainer(tokenizer)
    seen = record_batches(tr)
    tr.train(first, batch_size=8, epochs=3, resample=resample)
    assert asked == [1, 2] and len(seen) == 6
    ids = [{id(e) for b in seen[2 * k: 2 * k + 2] for e in b} for k in range(3)]
    assert ids[0] == {id(e) for e in first}
    assert ids[1] == {id(e) for e in fresh[1]} and ids[2] == {id(e) for e in fresh[2]}


def test_examples_from_qrels_samples_negatives():
    """Defect 5: seeded sampling of negatives from the top-N candidates."""
    corpus = {f"d{i}": f"text {i}" for i in range(40)}
    ranked = [f"d{i}" for i in range(40)]
    qrels = {"q": {"d0": 1, "d1": 1}}
    top = examples_from_qrels({"q": "x"}, corpus, qrels, {"q": ranked}, n_negatives=3)
    assert [e.negatives for e in top] == [["text 2", "text 3", "text 4"]] * 2  # default: the top-ranked

    def draw(seed):
        ex = examples_from_qrels({"q": "x"}, corpus, qrels, {"q": ranked}, n_negatives=3, sample_from=10, seed=seed)
        return [tuple(e.negatives) for e in ex]

    assert draw(1) == draw(1)
    assert len({draw(s)[0] for s in range(6)}) > 1
    for s in range(6):
        for negs in draw(s):
            assert len(set(negs)) == 3
            assert all(2 <= int(n.split()[1]) <= 11 for n in negs)  # the 10 best non-relevant candidates


def test_batches_keep_a_query_out_of_its_own_batch(tokenizer):
    """Defect 5: two examples of one query never share a batch when that can be avoided."""
    ex = [TrainingExample(f"q{i}", f"p{i}-{j}", ["n"]) for i, k in enumerate([4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1])
          for j in range(k)]  # 17 examples, the multi-positive queries next to each other
    tr = make_trainer(tokenizer)
    for shuffle in (False, True):
        seen = record_batches(tr, train=False)
        tr.train(ex, batch_size=4, epochs=20, shuffle=shuffle)
        assert len(seen) == 20 * 5 and all(len(b) <= 4 for b in seen)
        for b in seen:
            assert len({e.query for e in b}) == len(b)
        assert sorted(e.positive for b in seen[:5] for e in b) == sorted(e.positive for e in ex)
    # unavoidable (6 examples of one query, 3 batches): spread as evenly as possible
    many = [TrainingExample("q", f"p{j}", ["n"]) for j in range(6)] + [TrainingExample("r", "p", ["n"])]
    batches = tr.batches(many, 3)
    assert len(batches) == 3 and max(sum(e.query == "q" for e in b) for b in batches) == 2
    # queries that are all distinct keep the plain shuffled chunks
    plain = synthetic_examples(20)
    assert [len(b) for b in tr.batches(plain, 8)] == [8, 8, 4]


def test_idf_aware_flops():
    """Defect 6: the weighted regulariser is ``sum_t c_t (mean_i |w_it|)^2``; IDF weights favour informative terms."""
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    w = torch.tensor([0.5, 7.0, 3.0])
    assert float(flops_regularizer(x, w)) == pytest.approx(0.5 * 2.0 ** 2 + 7.0 * 0 + 3.0 * 1.0 ** 2)
    assert float(flops_regularizer(x, torch.ones(3))) == pytest.approx(float(flops_regularizer(x)))
    idf = np.array([0.0, 1.0, 2.0, 4.0, 0.0], dtype=np.float32)
    c = idf_flops_weights(idf)
    mean = (1.0 + 2.0 + 4.0) / 3
    np.testing.assert_allclose(c, [mean / 1.0, mean / 1.0, mean / 2.0, mean / 4.0, mean / 1.0], rtol=1e-6)
    np.testing.assert_allclose(idf_flops_weights(idf, power=2.0)[1:4], [(mean / v) ** 2 for v in (1, 2, 4)],
                               rtol=1e-6)
    assert c[3] < c[2] < c[1]  # the rarer the term, the lighter its penalty


def test_flops_weights_reach_the_loss(tokenizer):
    """Defect 6: the document-side weights enter the loss and its gradient (inference-free and q+d)."""
    batch = synthetic_examples(6, seed=4)
    V = len(tokenizer)
    idf = np.linspace(0.5, 3.0, V).astype(np.float32)
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.0, 5.0, V).astype(np.float32)
    for query_idf in (None, idf):
        tr = make_trainer(tokenizer, lambda_d=0.3, lambda_warmup_steps=0, flops_weights=weights,
                          query_idf=query_idf)
        parts = tr.evaluate_loss(batch)
        with torch.no_grad():
            docs = [e.positive for e in batch] + [e.negatives[0] for e in batch]
            d = tr.encode(docs, tr.doc_max_length)
        expected = float((torch.as_tensor(weights) * d.abs().mean(0) ** 2).sum())
        assert parts["flops_reg_d"] == pytest.approx(expected, rel=1e-5)
        assert parts["loss"] == pytest.approx(parts["rank_loss"] + 0.3 * expected, rel=1e-5)
    # zero weights on every term remove the regulariser's gradient; large weights change it
    grads = {}
    for name, w in (("zero", np.zeros(V, np.float32)), ("big", np.full(V, 100.0, np.float32))):
        tr = make_trainer(tokenizer, lambda_d=0.3, lambda_warmup_steps=0, flops_weights=w, query_idf=idf)
        tr.model.train()
        loss, parts = tr.loss(batch)
        loss.backward()
        grads[name] = tr.model.cls.predictions.decoder.bias.grad.clone()
        if name == "zero":
            assert parts["loss"] == pytest.approx(parts["rank_loss"])
    assert not torch.allclose(grads["zero"], grads["big"])
    tr = make_trainer(tokenizer, lambda_d=0.3, query_idf=idf, flops_weights="idf")
    np.testing.assert_allclose(tr.flops_weights.numpy(), idf_flops_weights(idf))
    with pytest.raises(ValueError):
        make_trainer(tokenizer, flops_weights="idf")


def test_winner_pool_equals_full_pooling_in_values_and_gradients():
    """The backward pass through each max's winning token only gives _pool's values and gradients."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    weight = torch.randn(40, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    bias = (0.5 * torch.randn(40, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    with torch.no_grad():  # a padding token with the largest logits must not win
        hidden[1, 5] = 40.0 * weight[7] / weight[7].norm()
    upstream = torch.rand(3, 40, generator=gen, dtype=torch.float64)
    ref = _pool(hidden @ weight.T + bias, mask)
    g_ref = torch.autograd.grad((ref * upstream).sum() + (ref ** 2).sum(), (hidden, weight, bias))
    new = _winner_pool(hidden, weight, bias, mask)
    g_new = torch.autograd.grad((new * upstream).sum() + (new ** 2).sum(), (hidden, weight, bias))
    assert (ref == 0).any() and (ref > 0).any()
    torch.testing.assert_close(new, ref)
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b)
    assert float(g_new[0][1, 4:].abs().sum()) == 0.0  # padding gets no gradient


def test_winner_pooling_trains_like_full_pooling(tokenizer):
    """Whole trainer: the same losses step by step with either pooling (same seed, same batches)."""
    ex = synthetic_examples(32)
    losses = {}
    for pooling in ("full", "winner"):
        tr = make_trainer(tokenizer, pooling=pooling, lambda_q=1e-2, lambda_d=1e-2, distill_weight=0.5)
        losses[pooling] = [tr.train_step(ex[i: i + 8])["loss"] for i in range(0, 32, 8)]
    np.testing.assert_allclose(losses["winner"], losses["full"], rtol=1e-4)
    with pytest.raises(ValueError, match="pooling"):
        make_trainer(tokenizer, pooling="mean")


def test_trainer_pins_its_thread_count(tokenizer):
    """Something else in the process (numba's OpenMP layer, an encoder) may reset torch's threads;
    train() sets the trainer's count again."""
    n = torch.get_num_threads()
    try:
        tr = make_trainer(tokenizer, threads=1)
        torch.set_num_threads(2)
        tr.train(synthetic_examples(8), batch_size=4, epochs=1)
        assert torch.get_num_threads() == 1 and tr.threads == 1
        with pytest.raises(ValueError, match="threads"):
            make_trainer(tokenizer, threads=-1)
    finally:
        torch.set_num_threads(n)


def test_in_batch_documents_relevant_to_a_query_are_not_its_negatives():
    """NFCorpus-like judgements: example 1's positive is also relevant to query 0, and example 2
    repeats query 0's positive; neither may count as a negative of query 0."""
    batch = [TrainingExample("q0", "a", ["x"], positive_id="A", negative_ids=["X"], relevant_ids=frozenset({"A", "B"})),
             TrainingExample("q1", "b", ["y"], positive_id="B", negative_ids=["Y"], relevant_ids=frozenset({"B"})),
             TrainingExample("q2", "a", ["z"], positive_id="A", negative_ids=["Z"])]
    scores = torch.arange(18, dtype=torch.float32).reshape(3, 6)
    masked = _mask_false_negatives(scores, batch, 1)
    assert torch.isinf(masked[0, 1]) and torch.isinf(masked[0, 2])  # B is relevant to q0; A is its own positive
    assert not torch.isinf(masked[1, 0])  # A is not known to be relevant to q1
    assert torch.isinf(masked[2, 0])  # q2's positive A in example 0's place
    assert int(torch.isinf(masked).sum()) == 3 and masked[0, 0] == 0 and masked[1, 1] == 7
    no_ids = [TrainingExample("q", "a", ["x"]), TrainingExample("r", "b", ["y"])]
    plain = torch.ones(2, 4)
    assert _mask_false_negatives(plain, no_ids, 1) is plain
    ex = examples_from_qrels({"q": "query"}, {"d1": "one", "d2": "two", "d3": "three"}, {"q": {"d1": 1, "d2": 1}},
                             {"q": ["d3"]})
    assert [(e.positive_id, e.negative_ids, e.relevant_ids) for e in ex] == [
        ("d1", ["d3"], frozenset({"d1", "d2"})), ("d2", ["d3"], frozenset({"d1", "d2"}))]
