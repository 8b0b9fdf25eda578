"""Training SPLADE models: contrastive ranking loss, FLOPS regularisation, MarginMSE distillation.

The loss of a batch of ``B`` queries, each with one positive and ``n`` hard negatives, is

* **in-batch + hard negatives** cross-entropy: query ``i`` scores all ``B * (1 + n)`` documents
  of the batch (its own positive, the other queries' positives, every hard negative) by dot
  product and should put its own positive first. Batches are drawn so that no query appears
  twice in one batch when that can be avoided (one example's positive would otherwise be a
  false in-batch negative of the other);
* **MarginMSE** distillation (optional, Hofstaetter et al.): when teacher scores are given, the
  student margin ``s(q, d+) - s(q, d-)`` regresses onto the teacher's margin for every negative;
* **FLOPS** regularisation (Paria et al.; SPLADE): ``sum_t (mean_i w_{i,t})^2`` over the batch's
  query vectors and, separately, document vectors, weighted by ``lambda_q`` and ``lambda_d``. Both
  lambdas grow quadratically from 0 to their final value over the lambda warm-up (by default a
  third of the steps of the :meth:`SpladeTrainer.train` call), as in SPLADE's training recipe,
  so that the ranking signal shapes the vectors before sparsity bites. The document side may be
  weighted per term (``flops_weights``): IDF-aware FLOPS (Geng et al. 2024) penalises
  informative (high-IDF) terms less than frequent ones (:func:`idf_flops_weights`).

With ``query_idf`` the trainer trains an *inference-free* model: queries are IDF-weighted token
bags (no model), only documents go through the model, and the only regulariser is the
document side's (``lambda_d``, optionally IDF-aware).

:meth:`SpladeTrainer.train` takes a time budget, a per-epoch hook (validation, early stopping),
a linear learning-rate decay and a hook that re-draws the examples (negatives) between epochs.

Everything runs on CPU (tests train a tiny random BERT in seconds) and on a GPU when present.
The trained model is a plain Hugging Face masked-LM: ``save`` it and load it with
:class:`~sparsearch.encoders.splade.SpladeEncoder` (``--encoder splade:DIR`` on the command line).
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .splade import SpladeEncoder, _Captured, _find_head, resolve_model

__all__ = ["TrainingExample", "SpladeTrainer", "flops_regularizer", "idf_flops_weights", "margin_mse",
           "examples_from_qrels"]

# token limits of the encoders that load the trained model: training sees what encoding sees
_ENCODER_DEFAULTS = inspect.signature(SpladeEncoder.__init__).parameters
QUERY_MAX_LENGTH: int = _ENCODER_DEFAULTS["query_max_length"].default
DOC_MAX_LENGTH: int = _ENCODER_DEFAULTS["max_length"].default
LR_SCHEDULES = ("linear", "constant")
#: ``winner``: backward through each max-pool's winning token only (:func:`_winner_pool`);
#: ``full``: autograd through all ``tokens x vocabulary`` logits (:func:`_pool`). Same gradients.
POOLINGS = ("winner", "full")
_VOCAB_BLOCK = 2048  # decoder rows per block of the no-grad logits in _winner_pool


@dataclass
class TrainingExample:
    """A query, one relevant document, hard negatives, and optional teacher scores.

    ``teacher_positive`` and ``teacher_negatives`` (one per negative) enable MarginMSE. With
    document ids (``positive_id``, ``negative_ids``) and the ids of every document known to be
    relevant to the query (``relevant_ids``), another example's document in the batch that is
    the query's own positive or one of its relevant documents is not used as its negative.
    """

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    teacher_positive: float | None = None
    teacher_negatives: list[float] | None = None
    positive_id: str | None = None
    negative_ids: list[str] | None = None
    relevant_ids: frozenset[str] = frozenset()


def flops_regularizer(reps, weights=None):
    """FLOPS regulariser of a batch of vectors (B, V): ``sum_t c_t (mean_i |w_{i,t}|)^2``.

    ``weights`` (V,): the per-term factors ``c_t`` (``None``: all 1, plain FLOPS).
    """
    per_term = reps.abs().mean(dim=0) ** 2
    return per_term.sum() if weights is None else (per_term * weights).sum()


def idf_flops_weights(idf: Any, power: float = 1.0) -> np.ndarray:
    """Per-term FLOPS weights for IDF-aware FLOPS: informative terms are penalised less.

    ``c_t = (mean_idf / idf_t) ** power`` where ``mean_idf`` is the mean IDF of the terms that
    occur in the corpus (``idf_t > 0``), so a term of average IDF keeps weight 1 and ``lambda_d``
    keeps its meaning; a term no document contains (``idf_t == 0``: a query never matches it,
    as :class:`~sparsearch.encoders.splade.SpladeDocEncoder` drops it) gets the largest weight of
    any corpus term. ``idf``: the query side's IDF per token id (e.g. ``SpladeDocEncoder.idf()``).
    """
    idf = np.asarray(idf, dtype=np.float64)
    seen = idf > 0
    if not seen.any():
        return np.ones(idf.shape, dtype=np.float32)
    w = np.ones(idf.shape, dtype=np.float64)
    w[seen] = (idf[seen].mean() / idf[seen]) ** float(power)
    w[~seen] = w[seen].max()
    return w.astype(np.float32)


def margin_mse(student_pos, student_neg, teacher_pos, teacher_neg):
    """MarginMSE: mean squared error between student and teacher score margins."""
    return ((student_pos - student_neg) - (teacher_pos - teacher_neg)).pow(2).mean()


def _pool(logits, mask):
    """SPLADE pooling ``max_i log1p(relu(logit_{i,t}))`` over the unmasked tokens, (B, L, V) -> (B, V).

    ``log1p(relu(.))`` is monotone, so it is applied after the max: the max runs over the raw
    logits with padding positions set to the lowest float, and the activation touches ``B x V``
    numbers instead of ``B x L x V`` (as the ONNX export does). Values and gradients equal
    :func:`~sparsearch.encoders.splade.splade_pool`'s.
    """
    import torch

    padded = logits.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(logits.dtype).min)
    return torch.log1p(torch.relu(padded.amax(dim=1)))


def _winner_pool(hidden, weight, bias, mask):
    """SPLADE pooling through the winning token only: (B, L, H) decoder inputs -> (B, V) vectors.

    Equal in value and gradient to :func:`_pool` over the full logits ``hidden @ weight.T + bias``,
    without keeping the ``B x L x V`` logits for the backward pass: the gradient of a max over
    tokens flows to its arg-max token only, and ``relu`` stops it wherever the max is <= 0. So
    the logits are computed without autograd (one text at a time, real tokens only), and only
    the pairs (text, term) whose max is positive (a few hundred per text, not ``V``) are
    recomputed with autograd from the winning token's hidden state and the term's decoder row.
    The backward pass then costs ``O(nnz x H)`` instead of ``O(L x V x H)``.

    Args:
        hidden: (B, L, H) inputs of the decoder (after the masked-LM head's transform).
        weight: (V, H) decoder matrix; bias: (V,) or ``None``.
        mask: (B, L) attention mask (1 = real token).
    """
    import torch

    B, V = hidden.shape[0], weight.shape[0]
    with torch.no_grad():
        h, w = hidden.detach(), weight.detach()
        best = torch.empty((B, V), dtype=h.dtype, device=h.device)
        arg = torch.empty((B, V), dtype=torch.long, device=h.device)
        for i in range(B):  # one text at a time: padding rows never computed
            pos = mask[i].nonzero(as_tuple=True)[0]
            hi = h[i, pos].T                                             # (H, tokens)
            for s in range(0, V, _VOCAB_BLOCK):  # (block, tokens) logits stay cache-resident;
                m, a = (w[s: s + _VOCAB_BLOCK] @ hi).max(dim=1)         # a row-wise max is the fast one
                best[i, s: s + _VOCAB_BLOCK], arg[i, s: s + _VOCAB_BLOCK] = m, pos[a]
        if bias is not None:
            best += bias.detach()
    bi, ti = torch.nonzero(best > 0, as_tuple=True)
    vals = (hidden[bi, arg[bi, ti]] * weight[ti]).sum(-1)
    if bias is not None:
        vals = vals + bias[ti]
    out = hidden.new_zeros((B, V))
    return out.index_put((bi, ti), torch.log1p(torch.relu(vals)))


def _mask_false_negatives(scores, batch: Sequence["TrainingExample"], n_neg: int):
    """``scores`` (B, B * (1 + n_neg)) with ``-inf`` where the column's document is the row's own
    positive or relevant to its query (known by id) in another example's place: on collections
    with many relevant documents per query (NFCorpus: ~38), in-batch "negatives" are often
    relevant, and pushing them down taught the model to empty its vectors."""
    import torch

    ids = [e.positive_id for e in batch] + [
        (e.negative_ids[j] if e.negative_ids is not None and j < len(e.negative_ids) else None)
        for e in batch for j in range(n_neg)]
    if not any(ids):
        return scores
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for i, e in enumerate(batch):
        own = e.relevant_ids | ({e.positive_id} if e.positive_id is not None else set())
        for j, d in enumerate(ids):
            if j != i and d is not None and d in own:
                mask[i, j] = True
    return scores.masked_fill(mask, float("-inf")) if mask.any() else scores


def _spread_batches(order: Sequence[int], keys: Sequence[Any], n_batches: int) -> list[list[int]]:
    """``order`` dealt into ``n_batches`` batches so that equal keys land in different batches.

    Indices are grouped by key (groups in order of first appearance, largest first) and dealt
    round-robin: the ``k`` members of a group go to ``k`` different batches whenever
    ``k <= n_batches`` (otherwise as evenly as possible). Batch sizes differ by at most one.
    """
    groups: dict[Any, list[int]] = {}
    for i in order:
        groups.setdefault(keys[i], []).append(i)
    flat = [i for g in sorted(groups.values(), key=len, reverse=True) for i in g]
    return [flat[j::n_batches] for j in range(n_batches)]


class SpladeTrainer:
    """Fine-tune (or train from scratch) a masked-LM as a SPLADE encoder.

    Args:
        model: folder or hub id of a masked-LM checkpoint (``None``: the bundled SPLADE-tiny), or a
            loaded ``transformers`` masked-LM module (then pass ``tokenizer`` too).
        tokenizer: tokenizer matching ``model`` (loaded from ``model`` when it is a path).
        lambda_q, lambda_d: final FLOPS weights of query and document vectors (each its own scale;
            inference-free training uses ``lambda_d`` only).
        lambda_warmup_steps: steps of the quadratic lambda warm-up (0: constant lambdas). Default
            ``None``: ``lambda_warmup_fraction`` of the planned steps of the first :meth:`train`
            call, so a short fine-tune reaches its final lambdas too (before any ``train`` call,
            e.g. with bare :meth:`train_step` calls, the lambdas are at full strength).
        lambda_warmup_fraction: that fraction (default a third).
        lr, weight_decay, warmup_steps: AdamW with linear learning-rate warm-up.
        lr_schedule: ``"linear"`` (default): after the warm-up, the learning rate decays linearly
            towards 0 over the planned steps of each :meth:`train` call; ``"constant"``: no decay.
        contrastive_weight: weight of the in-batch + hard-negative cross-entropy.
        distill_weight: weight of MarginMSE (used on examples that carry teacher scores).
        query_max_length, doc_max_length: token limits; by default those of
            :class:`~sparsearch.encoders.splade.SpladeEncoder` (queries and documents are trained
            as they will be encoded).
        grad_clip: gradient-norm clip (``None``: off).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available.
        seed: seeds python, numpy and torch (shuffling, dropout).
        query_idf: inference-free training (as :class:`~sparsearch.encoders.splade.SpladeDocEncoder`
            encodes): a query is the bag of its tokenizer tokens weighted by this IDF array
            (indexed by token id, e.g. ``SpladeDocEncoder(...).fit(corpus).idf()``); only the
            document side goes through the model and ``lambda_q`` is unused.
        anchor_weight: weight of an anchor that keeps document vectors near the starting
            model's: the batch mean of ``||d - d0||^2``, ``d0`` from a frozen copy of the model as
            it was when the trainer was made (0: off, no copy kept). Ranking losses on
            pseudo-queries otherwise empty documents of every term their query does not need.
        query_idf_weight: with ``query_idf``, queries go through the model too and the IDF bag
            times this weight is added to the model's query vector (as
            :class:`~sparsearch.encoders.splade.SpladeIdfEncoder` encodes); ``lambda_q`` then
            regularises the model's part. ``None`` (default): the IDF bag alone.
        pooling: ``"winner"`` (default; :func:`_winner_pool`, same values and gradients as
            ``"full"`` at a fraction of the time and memory) or ``"full"`` (:func:`_pool`).
        threads: torch intra-op threads while training (``None``: torch's count when the trainer
            is made); set again at every :meth:`train` call.
        flops_weights: per-term factors of the document-side FLOPS (an array indexed by token id),
            or ``"idf"``: IDF-aware FLOPS from ``query_idf`` (:func:`idf_flops_weights`).
            ``None``: plain FLOPS.
    """

    def __init__(self, model: Any = None, tokenizer: Any = None, *, lambda_q: float = 3e-4,
                 lambda_d: float = 1e-4, lambda_warmup_steps: int | None = None,
                 lambda_warmup_fraction: float = 1 / 3, lr: float = 2e-5, weight_decay: float = 0.01,
                 warmup_steps: int = 0, lr_schedule: str = "linear", contrastive_weight: float = 1.0,
                 distill_weight: float = 0.0, query_max_length: int = QUERY_MAX_LENGTH,
                 doc_max_length: int = DOC_MAX_LENGTH, grad_clip: float | None = 1.0, device: str | None = None,
                 seed: int = 0, query_idf: Any = None, flops_weights: Any = None, pooling: str = "winner",
                 threads: int | None = None, query_idf_weight: float | None = None,
                 anchor_weight: float = 0.0) -> None:
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        # pinned now and re-applied by every train() call: torch, numba's OpenMP layer and the
        # dense encoder share one OpenMP runtime, and a parallel index search in the same process
        # (the teacher's) resets its thread count behind torch's back, oversubscribing the cores
        self.threads = int(threads) if threads else torch.get_num_threads()
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        torch.set_num_threads(self.threads)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {lr_schedule!r}")
        if not 0.0 <= lambda_warmup_fraction <= 1.0:
            raise ValueError("lambda_warmup_fraction must be in [0, 1]")
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
        if not anchor_weight >= 0:
            raise ValueError(f"anchor_weight must be >= 0, got {anchor_weight!r}")
        self.anchor_weight = float(anchor_weight)
        self._anchor = None
        if self.anchor_weight > 0:  # the starting model, frozen: the documents' anchor
            self._anchor = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.lambda_q, self.lambda_d = float(lambda_q), float(lambda_d)
        self.lambda_warmup_steps = None if lambda_warmup_steps is None else int(lambda_warmup_steps)
        self.lambda_warmup_fraction = float(lambda_warmup_fraction)
        self._auto_lambda_warmup: int | None = None
        self.contrastive_weight, self.distill_weight = float(contrastive_weight), float(distill_weight)
        self.query_max_length, self.doc_max_length = int(query_max_length), int(doc_max_length)
        self.grad_clip = grad_clip
        self.warmup_steps = int(warmup_steps)
        self.lr_schedule = lr_schedule
        self._lr_plan: tuple[int, int] | None = None  # (first step, end step) of the running train() call
        self.lr = float(lr)
        self.query_idf = None
        if query_idf is not None:
            self.query_idf = torch.as_tensor(np.asarray(query_idf, dtype=np.float32), device=self.device)
        if query_idf_weight is not None and (query_idf is None or not query_idf_weight >= 0):
            raise ValueError("query_idf_weight needs query_idf and must be >= 0")
        self.query_idf_weight = None if query_idf_weight is None else float(query_idf_weight)
        self.flops_weights = None
        if isinstance(flops_weights, str):
            if flops_weights != "idf":
                raise ValueError(f"flops_weights must be an array or 'idf', not {flops_weights!r}")
            if query_idf is None:
                raise ValueError("flops_weights='idf' needs query_idf")
            flops_weights = idf_flops_weights(query_idf)
        if flops_weights is not None:
            self.flops_weights = torch.as_tensor(np.asarray(flops_weights, dtype=np.float32), device=self.device)
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        params = [
            {"params": [p for n, p in self.model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in self.model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(params, lr=self.lr)
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self.epoch_stats: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.clock: Callable[[], float] = time.monotonic
        self._rng = random.Random(seed)

    # ------------------------------------------------------------ schedules
    def lambda_warmup(self) -> int:
        """Steps of the lambda warm-up in effect (the explicit value, else the one set by ``train``)."""
        if self.lambda_warmup_steps is not None:
            return self.lambda_warmup_steps
        return self._auto_lambda_warmup or 0

    def lambdas(self, step: int | None = None) -> tuple[float, float]:
        """(lambda_q, lambda_d) at ``step``: quadratic warm-up ``lambda * min(1, step / T)^2``."""
        step = self.step_count if step is None else step
        warmup = self.lambda_warmup()
        f = 1.0 if warmup <= 0 else min(1.0, step / warmup) ** 2
        return self.lambda_q * f, self.lambda_d * f

    def _lr_factor(self, step: int | None = None) -> float:
        """Learning-rate factor at ``step``: linear warm-up, then the schedule's decay."""
        step = self.step_count if step is None else step
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "linear" and self._lr_plan is not None:
            start, end = max(self._lr_plan[0], self.warmup_steps), self._lr_plan[1]
            if end > start:
                return max(0.0, min(1.0, (end - step) / (end - start)))
        return 1.0

    # ------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], max_length: int, model: Any = None):
        """Differentiable SPLADE vectors (B, V) of ``texts`` by ``model`` (default: the trained
        model, in its current mode)."""
        model = self.model if model is None else model
        x = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        x = {k: v.to(self.device) for k, v in x.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        head = _find_head(model) if self.pooling == "winner" else None
        if not head:
            return _pool(model(**x).logits, x["attention_mask"])
        parent, child, bias = head
        dec, captured = getattr(parent, child), {}

        def grab(_mod, args):  # the decoder's input, with its autograd history; skip the projection
            captured["h"] = args[0]
            raise _Captured

        handle = dec.register_forward_pre_hook(grab)
        try:
            model(**x)
        except _Captured:
            pass
        finally:
            handle.remove()
        return _winner_pool(captured["h"], dec.weight, bias, x["attention_mask"])

    def encode_queries(self, texts: Sequence[str]):
        """Query vectors (B, V) as training scores them: through the model, inference-free IDF
        bags (fixed, no gradient) when the trainer has ``query_idf``, or their weighted sum
        with ``query_idf_weight``."""
        return self._query_parts(texts)[0]

    def _query_parts(self, texts: Sequence[str]):
        """(query vectors as scored, the model's part of them or ``None`` when there is none)."""
        if self.query_idf is None:
            q = self.encode(texts, self.query_max_length)
            return q, q
        bag = self.encode_queries_idf(texts)
        if self.query_idf_weight is None:
            return bag, None
        q = self.encode(texts, self.query_max_length)
        return q + self.query_idf_weight * bag, q

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
        q, q_model = self._query_parts(queries)                          # (B, V)
        d = self.encode(docs, self.doc_max_length)                       # (B * (1 + n_neg), V)
        B = len(batch)
        scores = q @ d.T                                                 # (B, B * (1 + n_neg))
        ranking = _mask_false_negatives(scores, batch, n_neg)
        parts: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        if self.contrastive_weight > 0:
            rank = F.cross_entropy(ranking, torch.arange(B, device=self.device))
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
        fq = flops_regularizer(q_model) if q_model is not None else torch.zeros((), device=self.device)
        fd = flops_regularizer(d, self.flops_weights)
        total = total + ld * fd + lq * fq
        if self._anchor is not None:
            with torch.no_grad():
                d0 = self.encode(docs, self.doc_max_length, self._anchor)
            anchor = ((d - d0) ** 2).sum(1).mean()
            total = total + self.anchor_weight * anchor
            parts["anchor"] = float(anchor.detach())
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
        lr = self.lr * self._lr_factor()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss, parts = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        parts["lr"] = lr
        parts["step"] = self.step_count
        self.history.append(parts)
        return parts

    def batches(self, examples: Sequence[TrainingExample], batch_size: int,
                shuffle: bool = True) -> list[list[TrainingExample]]:
        """One epoch's batches: shuffled (when ``shuffle``), no query twice in a batch when avoidable.

        When the plain chunks of the (shuffled) order repeat a query within a batch, the
        examples are dealt round-robin by query instead (:func:`_spread_batches`; same number
        of batches, sizes differ by at most one).
        """
        order = list(range(len(examples)))
        if shuffle:
            self._rng.shuffle(order)
        chunks = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
        keys = [e.query for e in examples]
        if any(len({keys[i] for i in c}) < len(c) for c in chunks):
            chunks = _spread_batches(order, keys, len(chunks))
            if shuffle:
                self._rng.shuffle(chunks)
        return [[examples[i] for i in c] for c in chunks]

    def train(self, examples: Sequence[TrainingExample], *, batch_size: int = 16, epochs: int = 1,
              max_steps: int | None = None, shuffle: bool = True, progress: bool = False,
              max_seconds: float | None = None,
              on_epoch: Callable[[int, dict[str, Any]], bool | None] | None = None,
              resample: Callable[[int], Sequence[TrainingExample]] | None = None) -> list[dict[str, float]]:
        """Train for ``epochs`` passes (or ``max_steps`` steps) over ``examples``; returns the history.

        Args:
            max_seconds: time budget of the call (wall clock, :attr:`clock`): no step starts after it.
                The schedules (lambda warm-up, learning-rate decay) follow the planned steps, not
                the budget: plan ``epochs`` / ``max_steps`` to fit it.
            on_epoch: called after every epoch (also one cut short by ``max_steps`` or the time
                budget) with the epoch index and its statistics: ``epoch``, ``steps`` (of the
                epoch), ``step`` (total), ``seconds`` (since the call started), ``partial`` and
                the mean of every logged figure over the epoch's steps (``loss``, ``rank_loss``,
                ``nnz_d``...). Returning ``True`` stops training (early stopping after a
                validation, say). The statistics are also kept in :attr:`epoch_stats`.
            resample: called with the epoch index before every epoch after the first; returns
                that epoch's examples (e.g. negatives drawn afresh with
                ``examples_from_qrels(..., sample_from=50, seed=epoch)``).

        :attr:`stop_reason` says why the call ended: ``"epochs"``, ``"max_steps"``,
        ``"max_seconds"`` or ``"on_epoch"``.
        """
        import torch

        if not examples:
            raise ValueError("no training examples")
        torch.set_num_threads(self.threads)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n_batches = math.ceil(len(examples) / batch_size)
        planned = n_batches * epochs if max_steps is None else max_steps
        if self.lambda_warmup_steps is None and self._auto_lambda_warmup is None:
            self._auto_lambda_warmup = self.step_count + round(self.lambda_warmup_fraction * planned)
        self._lr_plan = (self.step_count, self.step_count + planned)
        start = self.clock()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=planned, desc="SPLADE training", unit="step")
        done, epoch, stop = 0, 0, None
        current = examples

        def out_of_time() -> bool:
            return max_seconds is not None and self.clock() - start >= max_seconds

        try:
            while stop is None:
                if max_steps is None and epoch >= epochs:
                    stop = "epochs"
                    break
                if out_of_time():
                    stop = "max_seconds"
                    break
                if epoch > 0 and resample is not None:
                    current = list(resample(epoch))
                    if not current:
                        raise ValueError(f"resample({epoch}) returned no examples")
                logged: list[dict[str, float]] = []
                cut = False
                for batch in self.batches(current, batch_size, shuffle):
                    if (max_steps is not None and done >= max_steps) or (logged and out_of_time()):
                        cut = True
                        break
                    parts = self.train_step(batch)
                    logged.append(parts)
                    done += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{parts['loss']:.3f}", nnz_d=f"{parts.get('nnz_d', 0.0):.0f}")
                if max_steps is not None and done >= max_steps:
                    stop = "max_steps"
                elif cut:
                    stop = "max_seconds"
                if not logged:
                    break
                stats = self._epoch_stats(epoch, logged, self.clock() - start, partial=cut)
                self.epoch_stats.append(stats)
                if on_epoch is not None and on_epoch(epoch, stats) is True and stop is None:
                    stop = "on_epoch"
                epoch += 1
        finally:
            self._lr_plan = None
            if bar is not None:
                bar.close()
        self.stop_reason = stop
        return self.history

    def _epoch_stats(self, epoch: int, logged: list[dict[str, float]], seconds: float,
                     partial: bool) -> dict[str, Any]:
        names = sorted({k for p in logged for k in p if k != "step"})
        means = {k: float(np.mean([p[k] for p in logged if k in p])) for k in names}
        return {**means, "epoch": epoch, "steps": len(logged), "step": self.step_count, "seconds": seconds,
                "partial": partial}

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
                        seed: int = 0, sample_from: int | None = None) -> list[TrainingExample]:
    """Training examples from judgements: one per (query, relevant document).

    Hard negatives come from ``negatives[qid]`` (e.g. BM25's top results, best first) minus the
    relevant documents: its first ``n_negatives``, or with ``sample_from`` a seeded random draw
    of ``n_negatives`` among its first ``sample_from`` (one draw per example; vary ``seed`` to
    re-draw, e.g. per epoch). Missing negatives are random documents. ``teacher[qid][docid]``
    scores enable MarginMSE.
    """
    if sample_from is not None and sample_from < 1:
        raise ValueError("sample_from must be >= 1")
    rng = random.Random(seed)
    doc_ids = list(corpus)
    out = []
    for qid, rel in qrels.items():
        if qid not in queries:
            continue
        positives = [d for d, g in rel.items() if g > 0 and d in corpus]
        pool = [d for d in (negatives or {}).get(qid, []) if d not in rel and d in corpus]
        n_free = len(doc_ids) - sum(1 for d in rel if d in corpus)  # documents that may serve as negatives
        for pos in positives:
            if sample_from is None:
                negs = pool[:n_negatives]
            else:
                top = pool[:sample_from]
                negs = rng.sample(top, min(n_negatives, len(top)))
            while len(negs) < min(n_negatives, n_free):
                d = rng.choice(doc_ids)
                if d not in rel and d not in negs:
                    negs.append(d)
            t = (teacher or {}).get(qid)
            out.append(TrainingExample(
                queries[qid], corpus[pos], [corpus[d] for d in negs],
                teacher_positive=t.get(pos) if t else None,
                teacher_negatives=[t.get(d, 0.0) for d in negs] if t else None,
                positive_id=pos, negative_ids=list(negs), relevant_ids=frozenset(positives)))
    return out
