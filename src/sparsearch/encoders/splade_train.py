"""Training SPLADE models: contrastive ranking loss, FLOPS regularisation, MarginMSE distillation.

The loss of a batch of ``B`` queries, each with one positive and ``n`` hard negatives, is

* **in-batch + hard negatives** cross-entropy: query ``i`` scores all ``B * (1 + n)`` documents
  of the batch (its own positive, the other queries' positives, every hard negative) by dot
  product and should put its own positive first;
* **MarginMSE** distillation (optional, Hofstaetter et al.): when teacher scores are given, the
  student margin ``s(q, d+) - s(q, d-)`` regresses onto the teacher's margin for every negative;
* **FLOPS** regularisation (Paria et al.; SPLADE): ``sum_t (mean_i w_{i,t})^2`` over the batch's
  query vectors and, separately, document vectors, weighted by ``lambda_q`` and ``lambda_d``. Both
  lambdas grow quadratically from 0 to their final value over ``lambda_warmup_steps`` steps, as in
  SPLADE's training recipe, so that the ranking signal shapes the vectors before sparsity bites.

With ``query_idf`` the trainer trains an *inference-free* model: queries are IDF-weighted token
bags (no model), only documents go through the model.

Everything runs on CPU (tests train a tiny random BERT in seconds) and on a GPU when present.
The trained model is a plain Hugging Face masked-LM: ``save`` it and load it with
:class:`~sparsearch.encoders.splade.SpladeEncoder` (``--encoder splade:DIR`` on the command line).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .splade import resolve_model

__all__ = ["TrainingExample", "SpladeTrainer", "flops_regularizer", "margin_mse", "examples_from_qrels"]


@dataclass
class TrainingExample:
    """A query, one relevant document, hard negatives, and optional teacher scores.

    ``teacher_positive`` and ``teacher_negatives`` (one per negative) enable MarginMSE.
    """

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    teacher_positive: float | None = None
    teacher_negatives: list[float] | None = None


def flops_regularizer(reps):
    """FLOPS regulariser of a batch of vectors (B, V): ``sum_t (mean_i |w_{i,t}|)^2``."""
    return (reps.abs().mean(dim=0) ** 2).sum()


def margin_mse(student_pos, student_neg, teacher_pos, teacher_neg):
    """MarginMSE: mean squared error between student and teacher score margins."""
    return ((student_pos - student_neg) - (teacher_pos - teacher_neg)).pow(2).mean()


def _pool(logits, mask):
    import torch

    return (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1).to(logits.dtype)).amax(dim=1)


class SpladeTrainer:
    """Fine-tune (or train from scratch) a masked-LM as a SPLADE encoder.

    Args:
        model: folder or hub id of a masked-LM checkpoint (``None``: the bundled SPLADE-tiny), or a
            loaded ``transformers`` masked-LM module (then pass ``tokenizer`` too).
        tokenizer: tokenizer matching ``model`` (loaded from ``model`` when it is a path).
        lambda_q, lambda_d: final FLOPS weights of query and document vectors.
        lambda_warmup_steps: steps of the quadratic lambda warm-up (0: constant lambdas).
        lr, weight_decay, warmup_steps: AdamW with linear learning-rate warm-up.
        contrastive_weight: weight of the in-batch + hard-negative cross-entropy.
        distill_weight: weight of MarginMSE (used on examples that carry teacher scores).
        query_max_length, doc_max_length: token limits.
        grad_clip: gradient-norm clip (``None``: off).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available.
        seed: seeds python, numpy and torch (shuffling, dropout).
        query_idf: inference-free training (as :class:`~sparsearch.encoders.splade.SpladeDocEncoder`
            encodes): a query is the bag of its tokenizer tokens weighted by this IDF array
            (indexed by token id, e.g. ``SpladeDocEncoder(...).fit(corpus).idf()``); only the
            document side goes through the model and ``lambda_q`` is unused.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, lambda_q: float = 3e-4,
                 lambda_d: float = 1e-4, lambda_warmup_steps: int = 1000, lr: float = 2e-5,
                 weight_decay: float = 0.01, warmup_steps: int = 0, contrastive_weight: float = 1.0,
                 distill_weight: float = 0.0, query_max_length: int = 32, doc_max_length: int = 256,
                 grad_clip: float | None = 1.0, device: str | None = None, seed: int = 0,
                 query_idf: Any = None) -> None:
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if model is None or isinstance(model, (str, Path)):
            path = resolve_model(None if model is None else str(model))
            self.model = AutoModelForMaskedLM.from_pretrained(path)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a loaded model")
            self.model, self.tokenizer = model, tokenizer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.lambda_q, self.lambda_d = float(lambda_q), float(lambda_d)
        self.lambda_warmup_steps = int(lambda_warmup_steps)
        self.contrastive_weight, self.distill_weight = float(contrastive_weight), float(distill_weight)
        self.query_max_length, self.doc_max_length = int(query_max_length), int(doc_max_length)
        self.grad_clip = grad_clip
        self.warmup_steps = int(warmup_steps)
        self.lr = float(lr)
        self.query_idf = None
        if query_idf is not None:
            self.query_idf = torch.as_tensor(np.asarray(query_idf, dtype=np.float32), device=self.device)
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        params = [
            {"params": [p for n, p in self.model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in self.model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(params, lr=self.lr)
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self._rng = random.Random(seed)

    # ------------------------------------------------------------ schedules
    def lambdas(self, step: int | None = None) -> tuple[float, float]:
        """(lambda_q, lambda_d) at ``step``: quadratic warm-up ``lambda * min(1, step / T)^2``."""
        step = self.step_count if step is None else step
        if self.lambda_warmup_steps <= 0:
            f = 1.0
        else:
            f = min(1.0, step / self.lambda_warmup_steps) ** 2
        return self.lambda_q * f, self.lambda_d * f

    def _lr_factor(self) -> float:
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.step_count + 1) / self.warmup_steps)

    # ------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], max_length: int):
        """Differentiable SPLADE vectors (B, V) of ``texts`` (model in its current mode)."""
        x = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        x = {k: v.to(self.device) for k, v in x.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return _pool(self.model(**x).logits, x["attention_mask"])

    def encode_queries_idf(self, texts: Sequence[str]):
        """Inference-free query vectors (B, V): IDF of each distinct non-special token, no model."""
        import torch

        V = self.query_idf.shape[0]
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.query_max_length)["input_ids"]
        bag = torch.zeros((len(ids), V), device=self.device)
        for i, x in enumerate(ids):
            if x:
                bag[i, torch.tensor([t for t in x if t < V], dtype=torch.long, device=self.device)] = 1.0
        special = [t for t in self.tokenizer.all_special_ids if t < V]
        if special:
            bag[:, special] = 0.0
        return bag * self.query_idf

    # ------------------------------------------------------------- training
    def loss(self, batch: Sequence[TrainingExample]) -> tuple[Any, dict[str, float]]:
        """Total loss of a batch and its parts (ranking, MarginMSE, FLOPS, lambdas, sparsity)."""
        import torch
        import torch.nn.functional as F

        n_neg = min(len(e.negatives) for e in batch)
        queries = [e.query for e in batch]
        docs = [e.positive for e in batch] + [e.negatives[j] for e in batch for j in range(n_neg)]
        if self.query_idf is None:
            q = self.encode(queries, self.query_max_length)              # (B, V)
        else:
            q = self.encode_queries_idf(queries)                         # fixed, no gradient
        d = self.encode(docs, self.doc_max_length)                       # (B * (1 + n_neg), V)
        B = len(batch)
        scores = q @ d.T                                                 # (B, B * (1 + n_neg))
        parts: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        if self.contrastive_weight > 0:
            rank = F.cross_entropy(scores, torch.arange(B, device=self.device))
            total = total + self.contrastive_weight * rank
            parts["rank_loss"] = float(rank.detach())
        teach = [i for i, e in enumerate(batch)
                 if e.teacher_positive is not None and e.teacher_negatives is not None
                 and len(e.teacher_negatives) >= n_neg]
        if self.distill_weight > 0 and teach and n_neg > 0:
            idx = torch.tensor(teach, device=self.device)
            s_pos = scores[idx, idx].unsqueeze(1).expand(-1, n_neg)
            neg_cols = B + idx.unsqueeze(1) * n_neg + torch.arange(n_neg, device=self.device)
            s_neg = scores[idx.unsqueeze(1), neg_cols]
            t_pos = torch.tensor([[batch[i].teacher_positive] * n_neg for i in teach], device=self.device)
            t_neg = torch.tensor([batch[i].teacher_negatives[:n_neg] for i in teach], device=self.device)
            mm = margin_mse(s_pos, s_neg, t_pos, t_neg)
            total = total + self.distill_weight * mm
            parts["margin_mse"] = float(mm.detach())
        lq, ld = self.lambdas()
        fq, fd = flops_regularizer(q), flops_regularizer(d)
        total = total + ld * fd + (lq * fq if self.query_idf is None else 0.0)
        with torch.no_grad():
            nzq, nzd = (q > 0), (d > 0)
            flops = float((nzq.float().mean(0) * nzd.float().mean(0)).sum())
            parts.update(flops_reg_q=float(fq), flops_reg_d=float(fd), lambda_q=lq, lambda_d=ld,
                         nnz_q=float(nzq.sum(1).float().mean()), nnz_d=float(nzd.sum(1).float().mean()),
                         flops=flops)
        parts["loss"] = float(total.detach())
        return total, parts

    def train_step(self, batch: Sequence[TrainingExample]) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the logged figures."""
        import torch

        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * self._lr_factor()
        loss, parts = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        parts["step"] = self.step_count
        self.history.append(parts)
        return parts

    def train(self, examples: Sequence[TrainingExample], *, batch_size: int = 16, epochs: int = 1,
              max_steps: int | None = None, shuffle: bool = True, progress: bool = False) -> list[dict[str, float]]:
        """Train for ``epochs`` passes (or ``max_steps`` steps) over ``examples``; returns the history."""
        if not examples:
            raise ValueError("no training examples")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n_batches = math.ceil(len(examples) / batch_size)
        total = n_batches * epochs if max_steps is None else max_steps
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="SPLADE training", unit="step")
        done = 0
        order = list(range(len(examples)))
        while done < total:
            if shuffle:
                self._rng.shuffle(order)
            for s in range(0, len(order), batch_size):
                if done >= total:
                    break
                parts = self.train_step([examples[i] for i in order[s: s + batch_size]])
                done += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{parts['loss']:.3f}", nnz_d=f"{parts['nnz_d']:.0f}")
        if bar is not None:
            bar.close()
        return self.history

    def evaluate_loss(self, batch: Sequence[TrainingExample]) -> dict[str, float]:
        """Loss parts of ``batch`` without training (eval mode, no gradients)."""
        import torch

        self.model.eval()
        with torch.no_grad():
            return self.loss(batch)[1]

    def save(self, directory: str | Path) -> Path:
        """Save model and tokenizer (a folder that ``SpladeEncoder(directory)`` loads)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory


def examples_from_qrels(queries: Mapping[str, str], corpus: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                        negatives: Mapping[str, Iterable[str]] | None = None, *, n_negatives: int = 1,
                        teacher: Mapping[str, Mapping[str, float]] | None = None,
                        seed: int = 0) -> list[TrainingExample]:
    """Training examples from judgements: one per (query, relevant document).

    Hard negatives come from ``negatives[qid]`` (e.g. BM25's top results) minus the relevant
    documents, else random documents. ``teacher[qid][docid]`` scores enable MarginMSE.
    """
    rng = random.Random(seed)
    doc_ids = list(corpus)
    out = []
    for qid, rel in qrels.items():
        if qid not in queries:
            continue
        positives = [d for d, g in rel.items() if g > 0 and d in corpus]
        pool = [d for d in (negatives or {}).get(qid, []) if d not in rel and d in corpus]
        for pos in positives:
            negs = pool[:n_negatives]
            while len(negs) < n_negatives and len(doc_ids) > len(rel):
                d = rng.choice(doc_ids)
                if d not in rel and d not in negs:
                    negs.append(d)
            t = (teacher or {}).get(qid)
            out.append(TrainingExample(
                queries[qid], corpus[pos], [corpus[d] for d in negs],
                teacher_positive=t.get(pos) if t else None,
                teacher_negatives=[t.get(d, 0.0) for d in negs] if t else None))
    return out
