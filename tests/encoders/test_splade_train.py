"""SpladeTrainer on CPU with a tiny random BERT: the loss goes down, FLOPS falls as lambda grows,
MarginMSE distillation works, and the trained model loads back as a SpladeEncoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the 'splade' extra)")
pytest.importorskip("transformers", reason="training needs transformers (the 'splade' extra)")

from sparsearch.encoders.splade import SpladeEncoder  # noqa: E402
from sparsearch.encoders.splade_train import (  # noqa: E402
    SpladeTrainer, TrainingExample, examples_from_qrels, flops_regularizer, margin_mse,
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
    return SpladeTrainer(tiny_model(tokenizer), tokenizer, query_max_length=8, doc_max_length=12, device="cpu",
                         seed=0, **kw)


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
    tr = make_trainer(tokenizer)
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
