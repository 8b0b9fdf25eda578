"""Sparse coding of dense embeddings: Contrastive Sparse Representation (CSR) and matching pursuit.

Follows "Beyond Matryoshka: Revisiting Sparse Coding for Adaptive Representation" (CSR) and
the k-sparse autoencoder line of work (Makhzani & Frey; Gao et al., "Scaling and evaluating
sparse autoencoders"):

* :class:`SparseCoder` (torch): ``z = TopK_k(ReLU(W_enc (x - b_pre) + b_lat))``,
  ``x_hat = W_dec z + b_pre`` with unit-norm decoder columns; the decoder is either its own
  matrix (untied) or the transposed encoder (tied, encoder rows kept at unit norm).
* :class:`SparseCoderTrainer`: loss = reconstruction at a k of the ladder (8, 16, 32, 64 by
  default, one drawn per step, so that one coder serves any ``k <= k_max``: TopK codes are
  nested) + a multi-k term at ``4 * k_max`` (weight 1/8) + AuxK on dead latents (weight 1/32)
  + InfoNCE over query/document code pairs (in-batch negatives, score = dot product of codes,
  as retrieval scores them) + similarity distillation (the softmax over in-batch code dot
  products matches the one over dense cosines; self-supervised). Pairs come from training
  qrels when available and from self-supervised pseudo-queries (titles, first sentences)
  otherwise. Reports FVU, dead-latent fraction, L0.
* :func:`matching_pursuit`: greedy residual selection over a learned dictionary (non-negative
  coefficients), the classical alternative coder; its residual norm never increases.
* :class:`CSREncoder`: a :class:`~sparsearch.encoders.base.SparseEncoder` (spec ``csr[:ARG]``)
  that embeds texts with a :class:`~sparsearch.encoders.dense.DenseEncoder`, trains (or loads, or
  takes from the cache) a coder and emits latent codes over the vocabulary ``f0 .. f{h-1}``.
  ``k`` can be changed at any time (:meth:`CSREncoder.with_k`) without retraining.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_key, cached, texts_hash
from ..errors import CorruptIndexError, MissingExtraError
from ..evaluation import load_beir
from ..features import FeatureLabels
from ..vectors import SparseBatch, Vocabulary
from .base import SparseEncoder
from .dense import DenseEncoder

__all__ = [
    "SparseCoder", "TrainConfig", "TrainReport", "SparseCoderTrainer", "train_coder", "matching_pursuit",
    "MatchingPursuitCoder", "CSREncoder", "codes_to_batch", "fvu", "LATENT_PREFIX",
]

#: latent ``j`` is the term ``f"{LATENT_PREFIX}{j}"`` in sparse vectors and indexes
LATENT_PREFIX = "f"


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MissingExtraError("sparse coding needs torch (pip install 'sparsearch[dense]')") from e
    return torch


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Fraction of variance unexplained: ``||x - x_hat||^2 / ||x - mean(x)||^2``."""
    x = np.asarray(x, np.float64)
    den = float(((x - x.mean(0)) ** 2).sum())
    return float(((x - np.asarray(x_hat, np.float64)) ** 2).sum()) / max(den, 1e-12)


# ---------------------------------------------------------------------------------------------
# the coder


def _make_coder_class():
    torch = _torch()
    nn = torch.nn

    class _SparseCoder(nn.Module):
        """Top-k sparse autoencoder over ``d``-dim inputs with ``h`` latents (see module doc)."""

        def __init__(self, d: int, h: int, k: int = 32, *, tied: bool = False, seed: int = 0) -> None:
            super().__init__()
            if not 0 < k <= h:
                raise ValueError(f"need 0 < k <= h, got k={k}, h={h}")
            self.d, self.h, self.k, self.tied = int(d), int(h), int(k), bool(tied)
            g = torch.Generator().manual_seed(seed)
            w = torch.randn(d, h, generator=g)
            w /= w.norm(dim=0, keepdim=True)
            self.pre_bias = nn.Parameter(torch.zeros(d))
            self.latent_bias = nn.Parameter(torch.zeros(h))
            self.W_enc = nn.Parameter(w.T.contiguous().clone())  # (h, d), initialised as W_dec^T
            if tied:
                self.register_parameter("W_dec_", None)
            else:
                self.W_dec_ = nn.Parameter(w.clone())  # (d, h), unit-norm columns

        # -------------------------------------------------------------- pieces
        @property
        def W_dec(self):
            """Decoder (d, h); columns have unit norm (after :meth:`normalize_decoder`)."""
            return self.W_enc.T if self.tied else self.W_dec_

        def preacts(self, x):
            return torch.nn.functional.linear(x - self.pre_bias, self.W_enc, self.latent_bias)

        @staticmethod
        def topk(pre, k: int):
            """Dense (n, h) codes keeping the ``k`` largest pre-activations, ReLU'd."""
            vals, idx = pre.topk(k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

        def encode(self, x, k: int | None = None):
            return self.topk(self.preacts(x), self.k if k is None else k)

        def decode(self, z):
            return z @ self.W_dec.T + self.pre_bias

        def forward(self, x, k: int | None = None):
            z = self.encode(x, k)
            return z, self.decode(z)

        @torch.no_grad()
        def normalize_decoder(self) -> None:
            if self.tied:
                self.W_enc.div_(self.W_enc.norm(dim=1, keepdim=True).clamp_min(1e-8))
            else:
                self.W_dec_.div_(self.W_dec_.norm(dim=0, keepdim=True).clamp_min(1e-8))

        def settings(self) -> dict[str, Any]:
            return {"d": self.d, "h": self.h, "k": self.k, "tied": self.tied}

        # ---------------------------------------------------------- numpy API
        @torch.no_grad()
        def encode_numpy(self, x: np.ndarray, k: int | None = None, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
            """Top-k codes of ``x`` as ``(indices int64 (n, k), values float32 (n, k))``.

            Values are ReLU'd, so a row can hold zeros when fewer than ``k`` pre-activations are
            positive; :func:`codes_to_batch` drops them.
            """
            k = self.k if k is None else int(k)
            if not 0 < k <= self.h:
                raise ValueError(f"k must be in [1, {self.h}], got {k}")
            xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            idx_out = np.empty((len(xs), k), np.int64)
            val_out = np.empty((len(xs), k), np.float32)
            for a in range(0, len(xs), batch):
                vals, idx = self.preacts(xs[a:a + batch]).topk(k, dim=-1)
                idx_out[a:a + batch] = idx.numpy()
                val_out[a:a + batch] = torch.relu(vals).numpy()
            return idx_out, val_out

        @torch.no_grad()
        def reconstruct_numpy(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
            xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            return self.forward(xs, k)[1].numpy()

        @torch.no_grad()
        def stats(self, x: np.ndarray, k: int | None = None) -> dict[str, float]:
            """FVU, L0 (mean non-zeros per row) and dead-latent fraction (never active on ``x``)."""
            k = self.k if k is None else int(k)
            idx, val = self.encode_numpy(x, k)
            z = np.zeros((len(x), self.h), np.float32)
            np.put_along_axis(z, idx, val, axis=1)
            x_hat = z @ self.W_dec.detach().numpy().T + self.pre_bias.detach().numpy()
            alive = np.zeros(self.h, bool)
            alive[idx[val > 0]] = True
            return {"k": k, "fvu": fvu(x, x_hat), "l0": float((val > 0).sum(1).mean()) if len(x) else 0.0,
                    "dead_fraction": float(1.0 - alive.mean())}

    return _SparseCoder


_CODER_CLASS = None


def SparseCoder(d: int, h: int, k: int = 32, *, tied: bool = False, seed: int = 0):  # noqa: N802 - a class factory
    """Create a top-k sparse coder (a ``torch.nn.Module``; torch is imported on first use).

    Args:
        d: input dimension; h: dictionary size (latents), typically 4x-16x ``d``;
        k: default number of non-zeros; tied: share encoder and decoder weights; seed: init seed.
    """
    global _CODER_CLASS
    if _CODER_CLASS is None:
        _CODER_CLASS = _make_coder_class()
    return _CODER_CLASS(d, h, k, tied=tied, seed=seed)


def codes_to_batch(idx: np.ndarray, val: np.ndarray, h: int, ids: Sequence[str] | None = None,
                   vocab: Vocabulary | None = None) -> SparseBatch:
    """(n, k) top-k indices/values -> :class:`SparseBatch` over ``f0..f{h-1}`` (zeros dropped)."""
    n, k = idx.shape
    order = np.argsort(idx, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    val = np.take_along_axis(val, order, 1)
    keep = val > 0
    counts = keep.sum(1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vocab = vocab if vocab is not None else Vocabulary.from_size(h, LATENT_PREFIX)
    return SparseBatch(indptr, idx[keep].astype(np.int32), val[keep].astype(np.float32), vocab,
                       list(ids) if ids is not None else None)


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainConfig:
    """Hyper-parameters of :class:`SparseCoderTrainer` (defaults fit SciFact-size data on 2 cores)."""

    h: int = 3072
    k: int = 32                      # default k of the trained coder
    k_ladder: tuple[int, ...] = (8, 16, 32, 64)  # reconstruction + contrastive at each (adaptive k)
    multi_k: int | None = None       # extra reconstruction term at this k (default 4 * max(k_ladder))
    multi_k_coef: float = 1 / 8
    aux_k: int = 256                 # AuxK: latents used to model the residual from dead latents
    aux_coef: float = 1 / 32
    dead_after: int = 20_000         # a latent is dead when it has not fired for this many inputs
    contrastive_coef: float = 1.0
    temperature: float = 0.05
    distill_coef: float = 1.0        # similarity distillation: code dot products mimic dense cosines
    teacher_temperature: float = 0.05
    tied: bool = False
    epochs: int = 30                 # passes over the reconstruction data
    batch_size: int = 512            # reconstruction inputs per step
    pair_batch: int = 256            # query/document pairs per step (in-batch negatives)
    lr: float = 1e-3
    ladder: str = "sample"           # "sample": one k of the ladder per step; "all": every k each step
    seed: int = 0
    threads: int | None = 1          # torch threads (1 is fastest on small, shared CPUs)

    def __post_init__(self) -> None:
        self.k_ladder = tuple(sorted({int(k) for k in self.k_ladder if 0 < int(k) <= self.h}))
        if not self.k_ladder:
            self.k_ladder = (min(self.k, self.h),)
        if self.multi_k is None:
            self.multi_k = min(4 * max(self.k_ladder), self.h)

    @property
    def k_max(self) -> int:
        return max(self.k_ladder)


@dataclass
class TrainReport:
    seconds: float = 0.0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)


class SparseCoderTrainer:
    """Train a :func:`SparseCoder` on embeddings (optionally with query/document pairs).

    >>> trainer = SparseCoderTrainer(TrainConfig(h=1536, k=32))           # doctest: +SKIP
    >>> coder = trainer.fit(doc_emb, queries=q_emb, pairs=[(qi, di), ...])  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig | None = None, **overrides: Any) -> None:
        self.config = config or TrainConfig(**overrides)
        if config is not None and overrides:
            self.config = TrainConfig(**{**asdict(config), **overrides})
        self.report = TrainReport()

    def fit(self, docs: np.ndarray, queries: np.ndarray | None = None,
            pairs: np.ndarray | Sequence[tuple[int, int]] | None = None, *, coder=None, log_every: int = 0):
        """Train and return the coder.

        Args:
            docs: (n, d) document embeddings (normalised).
            queries: (m, d) query-side embeddings (real queries and/or pseudo-queries); they are
                also reconstruction data.
            pairs: (p, 2) int rows ``(query row, doc row)`` for the InfoNCE term; ``None`` or
                empty disables it.
            coder: continue training this coder instead of a fresh one.
        """
        torch = _torch()
        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(int(self.config.threads))
        try:
            return self._fit(docs, queries, pairs, coder, log_every)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, docs, queries, pairs, coder, log_every):
        torch = _torch()
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        docs = np.ascontiguousarray(docs, dtype=np.float32)
        d = docs.shape[1]
        qs = np.zeros((0, d), np.float32) if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
        P = np.zeros((0, 2), np.int64) if pairs is None or len(pairs) == 0 else np.asarray(pairs, np.int64).reshape(-1, 2)
        if len(P) and (P[:, 0].max() >= len(qs) or P[:, 1].max() >= len(docs) or P.min() < 0):
            raise ValueError("pair indices out of range of the query/document arrays")
        X = torch.from_numpy(np.concatenate([docs, qs]))
        Q, D = torch.from_numpy(qs), torch.from_numpy(docs)
        n = len(X)
        if coder is None:
            coder = SparseCoder(d, cfg.h, cfg.k, tied=cfg.tied, seed=cfg.seed)
            with torch.no_grad():
                coder.pre_bias.copy_(X.mean(0))
        ks = cfg.k_ladder
        top = max(max(ks), cfg.multi_k)
        steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
        total = steps_per_epoch * cfg.epochs
        opt = torch.optim.Adam(coder.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 50) * min(1.0, 5.0 * (1 - s / max(total, 1))) + 1e-3)
        since_fired = torch.zeros(cfg.h, dtype=torch.long)
        t0 = time.perf_counter()
        step = 0
        coder.train()
        for epoch in range(cfg.epochs):
            perm = torch.from_numpy(rng.permutation(n))
            for b in range(steps_per_epoch):
                xb = X[perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
                nb = len(xb)
                if len(P):
                    sel = P[rng.integers(0, len(P), size=min(cfg.pair_batch, len(P)))]
                    xb = torch.cat([xb, Q[torch.from_numpy(sel[:, 0])], D[torch.from_numpy(sel[:, 1])]])
                pre = coder.preacts(xb)
                vals, idx = pre.topk(top, dim=-1)
                vals = torch.relu(vals)
                W = coder.W_dec
                var = ((xb - xb.mean(0)) ** 2).sum().clamp_min(1e-8)
                # adaptive k: reconstruct (and contrast) at every k of the ladder, or at one k
                # drawn per step ("sample", cheaper); TopK codes are nested, so each k is served
                step_ks = ks if cfg.ladder == "all" else (ks[int(rng.integers(len(ks)))],)
                loss_rec = 0.0
                codes = {}
                for kk in sorted(set(step_ks) | {cfg.multi_k, max(ks)}):
                    z = torch.zeros_like(pre).scatter(-1, idx[:, :kk], vals[:, :kk])
                    codes[kk] = z
                    if kk not in step_ks and kk != cfg.multi_k:
                        continue  # k_max codes only feed the dead-latent statistics / AuxK
                    err = ((xb - (z @ W.T + coder.pre_bias)) ** 2).sum() / var
                    if kk in step_ks:
                        loss_rec = loss_rec + err / len(step_ks)
                    if kk == cfg.multi_k:
                        loss_rec = loss_rec + cfg.multi_k_coef * err
                # AuxK: dead latents model the residual of the k_max reconstruction
                with torch.no_grad():
                    fired = torch.zeros(cfg.h, dtype=torch.bool)
                    fired[idx[:, :max(ks)][vals[:, :max(ks)] > 0]] = True
                    since_fired += len(xb)
                    since_fired[fired] = 0
                    dead = since_fired > cfg.dead_after
                n_dead = int(dead.sum())
                loss_aux = torch.zeros(())
                if n_dead and cfg.aux_coef > 0:
                    z_k = codes[max(ks)]
                    resid = (xb - (z_k @ W.T + coder.pre_bias)).detach()
                    ka = min(cfg.aux_k, n_dead)
                    za = coder.topk(pre.masked_fill(~dead, float("-inf")), ka)
                    loss_aux = ((za @ W.T - resid) ** 2).sum() / ((resid - resid.mean(0)) ** 2).sum().clamp_min(1e-8)
                # InfoNCE between query and document codes (score = dot product of codes)
                loss_con = torch.zeros(())
                if len(P) and cfg.contrastive_coef > 0:
                    m = len(sel)
                    labels = torch.arange(m)
                    # the same document can be paired twice in a batch: mask duplicate positives
                    same = torch.from_numpy(sel[:, 1][:, None] == sel[:, 1][None, :]) & ~torch.eye(m, dtype=torch.bool)
                    for kk in step_ks:
                        zq, zd = codes[kk][nb:nb + m], codes[kk][nb + m:]
                        logits = ((zq @ zd.T) / cfg.temperature).masked_fill(same, float("-inf"))
                        loss_con = loss_con + torch.nn.functional.cross_entropy(logits, labels) / len(step_ks)
                # similarity distillation (self-supervised): within the reconstruction batch, the
                # softmax over code dot products should match the softmax over dense cosines
                loss_dis = torch.zeros(())
                if cfg.distill_coef > 0 and nb > 1:
                    xr = xb[:nb]
                    eye = torch.eye(nb, dtype=torch.bool)
                    with torch.no_grad():
                        xn = torch.nn.functional.normalize(xr, dim=1)
                        teacher = torch.softmax((xn @ xn.T / cfg.teacher_temperature).masked_fill(eye, float("-inf")), 1)
                    for kk in step_ks:
                        zr = codes[kk][:nb]
                        logp = torch.log_softmax((zr @ zr.T / cfg.temperature).masked_fill(eye, float("-inf")), 1)
                        loss_dis = loss_dis - (teacher * logp.masked_fill(eye, 0.0)).sum(1).mean() / len(step_ks)
                loss = loss_rec + cfg.aux_coef * loss_aux + cfg.contrastive_coef * loss_con + cfg.distill_coef * loss_dis
                loss_rec, loss_aux, loss_con = loss_rec.detach(), loss_aux.detach(), loss_con.detach()
                loss_dis = loss_dis.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                coder.normalize_decoder()
                step += 1
                if log_every and step % log_every == 0:
                    row = {"step": step, "epoch": epoch, "loss": loss.item(), "rec": float(loss_rec),
                           "aux": float(loss_aux), "con": float(loss_con), "dis": float(loss_dis), "dead": n_dead / cfg.h,
                           "seconds": time.perf_counter() - t0}
                    self.report.history.append(row)
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                          flush=True)
        coder.eval()
        self.report.seconds = time.perf_counter() - t0
        self.report.steps = step
        self.report.final = {f"k={kk}": coder.stats(X.numpy(), kk) for kk in ks}
        return coder


def train_coder(docs: np.ndarray, queries: np.ndarray | None = None, pairs=None, **config: Any):
    """Shortcut: ``SparseCoderTrainer(TrainConfig(**config)).fit(docs, queries, pairs)``."""
    return SparseCoderTrainer(TrainConfig(**config)).fit(docs, queries, pairs)


# ---------------------------------------------------------------------------------------------
# matching pursuit


def matching_pursuit(x: np.ndarray, dictionary: np.ndarray, k: int, *, bias: np.ndarray | None = None,
                     nonneg: bool = True, return_residual_norms: bool = False, batch: int = 4096):
    """Greedy matching pursuit of ``x - bias`` over unit-norm atoms (columns of ``dictionary``).

    Each of ``k`` steps picks the atom most correlated with the residual (largest positive
    correlation with ``nonneg``, largest absolute otherwise), adds the correlation to its
    coefficient and subtracts its projection; ``||r||^2`` drops by the squared correlation, so
    residual norms never increase. An atom can be picked again (its coefficient accumulates),
    so rows have at most ``k`` non-zeros. Rows stop early when no positive correlation is left
    (``nonneg``).

    Returns:
        ``codes`` float32 (n, h); with ``return_residual_norms`` also (n, k + 1) norms after
        each step (column 0: before any).
    """
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    D = np.ascontiguousarray(dictionary, dtype=np.float32)
    if D.shape[0] != x.shape[1]:
        raise ValueError(f"dictionary has {D.shape[0]} rows, inputs have dimension {x.shape[1]}")
    norms = np.linalg.norm(D, axis=0)
    if np.any(np.abs(norms - 1) > 1e-3):
        D = D / np.maximum(norms, 1e-12)
    n, h = len(x), D.shape[1]
    codes = np.zeros((n, h), np.float32)
    rnorms = np.zeros((n, k + 1), np.float32)
    for a in range(0, n, batch):
        r = x[a:a + batch] - (0 if bias is None else np.asarray(bias, np.float32))
        rows = np.arange(len(r))
        rnorms[a:a + batch, 0] = np.linalg.norm(r, axis=1)
        for t in range(k):
            c = r @ D
            j = np.argmax(c, 1) if nonneg else np.argmax(np.abs(c), 1)
            coef = c[rows, j]
            if nonneg:
                coef = np.maximum(coef, 0)
            codes[a + rows, j] += coef
            r -= coef[:, None] * D[:, j].T
            rnorms[a:a + batch, t + 1] = np.linalg.norm(r, axis=1)
    return (codes, rnorms) if return_residual_norms else codes


class MatchingPursuitCoder:
    """Matching pursuit over a trained coder's dictionary (decoder columns) and pre-bias."""

    def __init__(self, dictionary: np.ndarray, bias: np.ndarray | None = None, k: int = 32) -> None:
        self.dictionary = np.ascontiguousarray(dictionary, dtype=np.float32)
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        self.k = int(k)
        self.h = self.dictionary.shape[1]

    @classmethod
    def from_coder(cls, coder, k: int | None = None) -> "MatchingPursuitCoder":
        return cls(coder.W_dec.detach().numpy(), coder.pre_bias.detach().numpy(), coder.k if k is None else k)

    def encode_numpy(self, x: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes as ``(indices (n, k), values (n, k))`` like :meth:`SparseCoder.encode_numpy`."""
        k = self.k if k is None else int(k)
        codes = matching_pursuit(x, self.dictionary, k, bias=self.bias)
        idx = np.argsort(-codes, axis=1, kind="stable")[:, :k]
        return idx.astype(np.int64), np.take_along_axis(codes, idx, 1)


# ---------------------------------------------------------------------------------------------
# the encoder


_SENT = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str, max_words: int = 32) -> str:
    """Self-supervised pseudo-query: the first sentence of ``text`` (at most ``max_words`` words)."""
    s = _SENT.split(text.strip(), maxsplit=1)[0]
    return " ".join(s.split()[:max_words])


_CODER_FILE = "coder.pt"
_META_FILE = "csr.json"
_LABELS_FILE = "labels.json"


class CSREncoder(SparseEncoder):
    """Dense embeddings -> sparse latent codes (spec ``csr``, ``csr:MODEL`` or ``csr:CODER_DIR``).

    Args:
        model: dense model (hub id or folder); ``None``: the bundled all-MiniLM-L6-v2.
        k: non-zeros per document vector (any ``k <= h``; the coder is trained for the ladder
            ``k_ladder`` and keeps working at other values).
        query_k: non-zeros per query vector (default ``k``).
        expansion / h: dictionary size ``h = expansion * d`` unless ``h`` is given.
        coder: ``"topk"`` (the trained encoder) or ``"mp"`` (matching pursuit over its dictionary).
        train_data: a BEIR folder whose ``qrels/train.tsv`` (queries -> documents) supplies
            contrastive pairs at :meth:`fit` time, in addition to self-supervised pairs.
        pseudo_queries: ``"title"`` (BEIR titles when ``train_data`` is given, else first
            sentences), ``"first_sentence"`` or ``"none"``.
        labels: compute human-readable latent labels from the fitted corpus.
        cache: reuse a coder trained earlier on the same corpus and settings.
        Remaining keyword options go to :class:`TrainConfig` (epochs, lr, tied, ...).
    """

    name = "csr"

    def __init__(self, model: str | None = None, *, k: int = 32, query_k: int | None = None, expansion: int = 8,
                 h: int | None = None, coder: str = "topk", train_data: str | None = None,
                 pseudo_queries: str = "title", labels: bool = True, cache: bool = True,
                 dense_options: dict[str, Any] | None = None, **train_options: Any) -> None:
        if coder not in ("topk", "mp"):
            raise ValueError(f"unknown coder {coder!r}; use 'topk' or 'mp'")
        self.dense = DenseEncoder(model, **(dense_options or {}))
        self.k = int(k)
        self.query_k = int(query_k) if query_k is not None else None
        self.expansion = int(expansion)
        self._h = int(h) if h is not None else None
        self.coder_kind = coder
        self.train_data = train_data
        self.pseudo_queries = pseudo_queries
        self.want_labels = bool(labels)
        self.cache = bool(cache)
        self.train_options = dict(train_options)
        self.coder = None
        self.labels = None
        self.train_report: TrainReport | None = None
        self.vocab: Vocabulary | None = None

    # -------------------------------------------------------------- settings
    @property
    def h(self) -> int:
        if self.coder is not None:
            return self.coder.h
        return self._h if self._h is not None else self.expansion * self.dense.dim

    def with_k(self, k: int, query_k: int | None = None, coder: str | None = None) -> "CSREncoder":
        """A copy sharing the trained coder, encoding with ``k`` non-zeros (adaptive k, no retraining)."""
        other = copy.copy(self)
        other.k = int(k)
        other.query_k = int(query_k) if query_k is not None else None
        if coder is not None:
            if coder not in ("topk", "mp"):
                raise ValueError(f"unknown coder {coder!r}; use 'topk' or 'mp'")
            other.coder_kind = coder
        return other

    def train_config(self, d: int) -> TrainConfig:
        opts = dict(self.train_options)
        opts.setdefault("h", self._h if self._h is not None else self.expansion * d)
        opts.setdefault("k", self.k)
        if "k_ladder" in opts:
            opts["k_ladder"] = tuple(opts["k_ladder"])
        return TrainConfig(**opts)

    # --------------------------------------------------------------- training
    def fit_embeddings(self, docs: np.ndarray, queries: np.ndarray | None = None, pairs=None, *,
                       cache_id: str | None = None, log_every: int = 0) -> "CSREncoder":
        """Train the coder on precomputed embeddings (see :meth:`SparseCoderTrainer.fit`).

        ``cache_id`` (e.g. a hash of the texts behind the arrays) enables the trained-coder cache.
        """
        torch = _torch()
        cfg = self.train_config(docs.shape[1])
        trainer = SparseCoderTrainer(cfg)

        def compute():
            coder = trainer.fit(docs, queries, pairs, log_every=log_every)
            self.train_report = trainer.report
            return coder

        def save(coder, p: Path) -> None:
            torch.save({"settings": coder.settings(), "state": coder.state_dict(),
                        "report": asdict(trainer.report)}, p)

        def load(p: Path):
            blob = _load_blob(p)
            self.train_report = TrainReport(**blob.get("report", {}))
            return _coder_from_blob(blob)

        if cache_id is None:
            self.coder = compute()
        else:
            key = cache_key(kind="csr-coder", model=self.dense.model_id, config=asdict(cfg), data=cache_id)
            self.coder = cached(key, compute, save, load, suffix=".pt", enabled=self.cache)
        self.vocab = Vocabulary.from_size(self.coder.h, LATENT_PREFIX)
        return self

    def fit(self, texts: Sequence[str], *, queries: Sequence[str] | None = None,
            pairs: Sequence[tuple[int, int]] | None = None, log_every: int = 0) -> "CSREncoder":
        """Embed ``texts`` and train the coder (or take it from the cache).

        Contrastive pairs: ``(query row, text row)`` over ``queries`` when given, plus one
        self-supervised pseudo-query per text (its BEIR title, or its first sentence), plus
        the ``train_data`` qrels. An already trained coder (``csr:CODER_DIR``) is kept as is.
        """
        if self.coder is not None:
            if self.want_labels and self.labels is None:
                self.label_features(texts)
            return self
        texts = list(texts)
        q_texts: list[str] = list(queries or [])
        P: list[tuple[int, int]] = [(int(a), int(b)) for a, b in (pairs or [])]
        doc_texts = texts
        if self.train_data:
            ds = load_beir(self.train_data, "train")
            pos = {d: i for i, d in enumerate(ds.doc_ids)}
            if ds.doc_texts() != texts:  # the train corpus is another collection: add its documents
                base = len(doc_texts)
                doc_texts = texts + ds.doc_texts()
                pos = {d: base + i for d, i in pos.items()}
            for qid, rel in ds.qrels.items():
                for did, grade in rel.items():
                    if grade > 0 and did in pos:
                        q_texts.append(ds.queries[qid])
                        P.append((len(q_texts) - 1, pos[did]))
            if self.pseudo_queries == "title":
                titles, _ = ds.titles_and_bodies()
                for did, t in zip(ds.doc_ids, titles):
                    if t.strip():
                        q_texts.append(t)
                        P.append((len(q_texts) - 1, pos[did]))
        if self.pseudo_queries in ("first_sentence",) or (self.pseudo_queries == "title" and not self.train_data):
            for i, t in enumerate(texts):
                s = first_sentence(t)
                if s and s != t:
                    q_texts.append(s)
                    P.append((len(q_texts) - 1, i))
        D = self.dense.encode_documents(doc_texts)
        Q = self.dense.encode_queries(q_texts) if q_texts else None
        cache_id = texts_hash(doc_texts + ["\x00queries"] + q_texts + ["\x00pairs", json.dumps(P)])
        self.fit_embeddings(D, Q, np.asarray(P, np.int64).reshape(-1, 2), cache_id=cache_id, log_every=log_every)
        if self.want_labels:
            self.label_features(texts, doc_emb=D[:len(texts)])
        return self

    def label_features(self, texts: Sequence[str], doc_emb: np.ndarray | None = None, **options: Any):
        """Label every latent from the documents that activate it most (:mod:`sparsearch.features`)."""
        emb = self.dense.encode_documents(texts) if doc_emb is None else doc_emb
        self.labels = FeatureLabels.fit(self.codes(emb, max(self.k, 32)), list(texts), **options)
        return self.labels

    # --------------------------------------------------------------- encoding
    def _require(self):
        if self.coder is None:
            raise RuntimeError("CSREncoder is not trained: call fit(texts) or load a coder (csr:CODER_DIR)")
        if self.vocab is None:
            self.vocab = Vocabulary.from_size(self.coder.h, LATENT_PREFIX)
        return self.coder

    def codes(self, emb: np.ndarray, k: int | None = None, ids: Sequence[str] | None = None) -> SparseBatch:
        """Sparse codes of precomputed embeddings with ``k`` non-zeros (default ``self.k``)."""
        coder = self._require()
        k = self.k if k is None else int(k)
        if self.coder_kind == "mp":
            idx, val = MatchingPursuitCoder.from_coder(coder, k).encode_numpy(emb, k)
        else:
            idx, val = coder.encode_numpy(emb, k)
        return codes_to_batch(idx, val, coder.h, ids, self.vocab)

    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        self._require()
        return self.codes(self.dense.encode_documents(list(texts)), self.k, ids)

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        self._require()
        return self.codes(self.dense.encode_queries(list(texts)), self.query_k or self.k, ids)

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {"name": self.name, "dense": self.dense.config(), "k": self.k, "query_k": self.query_k,
                "h": self.h if (self.coder is not None or self._h is not None) else None,
                "expansion": self.expansion, "coder": self.coder_kind,
                "train": {k: list(v) if isinstance(v, tuple) else v for k, v in self.train_options.items()}}

    def save_state(self, directory: Path) -> None:
        """Write ``coder.pt`` (weights), ``csr.json`` (config) and ``labels.json`` into ``directory``."""
        torch = _torch()
        coder = self._require()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": coder.settings(), "state": coder.state_dict()}, directory / _CODER_FILE)
        (directory / _META_FILE).write_text(json.dumps(self.config(), indent=1))
        if self.labels is not None:
            self.labels.save(directory / _LABELS_FILE)

    def save(self, directory: str | Path) -> None:
        """Save a trained encoder to load later with ``csr:DIRECTORY`` or :meth:`load`."""
        self.save_state(Path(directory))

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "CSREncoder":
        directory = Path(directory)
        config = json.loads((directory / _META_FILE).read_text())
        return cls.from_config(config, directory, **overrides)

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None, **overrides: Any) -> "CSREncoder":
        dense = dict(config.get("dense") or {})
        model = dense.pop("model", None)
        opts = {"k": config.get("k", 32), "query_k": config.get("query_k"), "expansion": config.get("expansion", 8),
                "h": config.get("h"), "coder": config.get("coder", "topk"), **(config.get("train") or {})}
        opts.update(overrides)
        # the dense config names its encoder ("name": "dense"); the rest are DenseEncoder options
        enc = cls(model, dense_options={k: v for k, v in dense.items() if k not in ("model", "name")}, **opts)
        if directory is not None and (Path(directory) / _CODER_FILE).exists():
            enc.coder = _coder_from_blob(_load_blob(Path(directory) / _CODER_FILE))
            enc.vocab = Vocabulary.from_size(enc.coder.h, LATENT_PREFIX)
            if (Path(directory) / _LABELS_FILE).exists():
                enc.labels = FeatureLabels.load(Path(directory) / _LABELS_FILE)
        return enc

    @classmethod
    def from_spec(cls, arg: str | None = None, **options: Any) -> "CSREncoder":
        """``csr`` (bundled MiniLM), ``csr:MODEL`` (hub id / folder) or ``csr:DIR`` (a saved encoder)."""
        if arg and (Path(arg) / _META_FILE).exists():
            return cls.load(arg, **options)
        return cls(arg, **options)


def _load_blob(path: Path) -> dict[str, Any]:
    """A saved coder (tensors and plain values), loaded weights-only: a pickled object in the file
    (which could run code) is refused, never executed."""
    torch = _torch()
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for anything not weights-only
        raise CorruptIndexError(f"{path}: not a weights-only coder checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or "settings" not in blob or "state" not in blob:
        raise CorruptIndexError(f"{path}: not a sparsearch coder checkpoint")
    return blob


def _coder_from_blob(blob: dict[str, Any]):
    s = blob["settings"]
    coder = SparseCoder(s["d"], s["h"], s["k"], tied=s["tied"])
    coder.load_state_dict(blob["state"])
    coder.eval()
    return coder
