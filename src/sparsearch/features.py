"""Human-readable labels for sparse latents, and labelled explanations of search hits.

A latent ``j`` (term ``"f{j}"`` in a sparse-coding index) is labelled by the words that are
most characteristic of the documents that activate it most:

* take its ``top_docs`` documents by activation ``a_i``;
* for each word ``w``: ``p_top(w) = sum_i a_i [w in doc i] / sum_i a_i`` (activation-weighted
  document frequency among them) and ``p_corpus(w) = df(w) / N``;
* weight ``p_top(w) * log(p_top(w) / p_corpus(w))`` (the word's term of the KL divergence
  between the two: frequent among the top documents *and* rare in the corpus), keeping words
  seen in at least two of the top documents (when it has two).

>>> labels = FeatureLabels.fit(doc_codes, doc_texts)                  # doctest: +SKIP
>>> labels.label(123)                                                  # doctest: +SKIP
'insulin, glucose, diabetes'
>>> explain_hit(index, query_vector, docnum, labels)                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .text import WordAnalyzer
from .vectors import SparseBatch

__all__ = ["FeatureLabels", "LabelledContribution", "latent_id", "explain_hit"]

_LATENT = re.compile(r"^[A-Za-z_]*?(\d+)$")
_HAS_LETTER = re.compile(r"[^\W\d_]")


def latent_id(term: str | int) -> int:
    """``"f123"`` (or ``123``) -> 123; ``ValueError`` for a term that names no latent."""
    if isinstance(term, (int, np.integer)):
        return int(term)
    m = _LATENT.match(str(term))
    if not m:
        raise ValueError(f"term {term!r} is not a latent id (expected e.g. 'f123')")
    return int(m.group(1))


@dataclass(frozen=True)
class LabelledContribution:
    """One latent's share of a score, with its label."""

    term: str
    latent: int
    label: str
    query_weight: float
    doc_weight: float
    contribution: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FeatureLabels:
    """Per-latent label words with weights (see module docstring)."""

    def __init__(self, words: Sequence[Sequence[tuple[str, float]]], n_active: Sequence[int] | None = None) -> None:
        self.words_ = [[(str(w), float(s)) for w, s in ws] for ws in words]
        self.n_active = list(n_active) if n_active is not None else [0] * len(self.words_)

    def __len__(self) -> int:
        return len(self.words_)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, codes: SparseBatch | sp.spmatrix | np.ndarray, texts: Sequence[str], *, top_docs: int = 25,
            n_words: int = 5, min_top_df: int = 2, analyzer: Any = None) -> "FeatureLabels":
        """Label every latent (column of ``codes``, shape (n_docs, h)) from ``texts``.

        Args:
            codes: document codes; SparseBatch, scipy matrix or dense array.
            texts: the documents' texts, same order as the rows of ``codes``.
            top_docs: documents per latent to read its label from.
            n_words: label words kept per latent.
            min_top_df: a word must occur in at least this many of a latent's top documents
                (lowered to the number of top documents when a latent has fewer).
            analyzer: object with ``tokens(text) -> list[str]``; default: lowercase words with
                English stopwords removed, unstemmed (labels stay readable).
        """
        if isinstance(codes, SparseBatch):
            A = codes.to_scipy()
        elif sp.issparse(codes):
            A = sp.csr_matrix(codes)
        else:
            A = sp.csr_matrix(np.asarray(codes, np.float32))
        n, h = A.shape
        if n != len(texts):
            raise ValueError(f"{n} code rows for {len(texts)} texts")
        if analyzer is None:
            analyzer = WordAnalyzer(stemmer=None, min_length=3)
        # binary document-word matrix
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, t in enumerate(texts):
            toks = {w for w in analyzer.tokens(t) if _HAS_LETTER.search(w)}
            for w in toks:
                cols.append(vocab.setdefault(w, len(vocab)))
            rows.extend([i] * len(toks))
        words = np.array(sorted(vocab, key=vocab.get), dtype=object)
        B = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(vocab)))
        df = np.asarray(B.sum(0)).ravel()
        p_corpus = np.maximum(df, 1) / max(n, 1)
        # top documents per latent, as a (h, n) activation matrix S
        C = A.tocsc()
        C.eliminate_zeros()
        s_rows, s_cols, s_vals = [], [], []
        n_active = np.diff(C.indptr)
        for j in range(h):
            a, b = C.indptr[j], C.indptr[j + 1]
            if a == b:
                continue
            vals = C.data[a:b]
            take = np.argsort(-vals, kind="stable")[:top_docs]
            s_rows.extend([j] * len(take))
            s_cols.extend(C.indices[a:b][take].tolist())
            s_vals.extend(vals[take].tolist())
        S = sp.csr_matrix((np.asarray(s_vals, np.float64), (s_rows, s_cols)), shape=(h, n))
        Sb = sp.csr_matrix((np.ones(len(s_vals)), (s_rows, s_cols)), shape=(h, n))
        mass = np.asarray(S.sum(1)).ravel()
        n_top = np.diff(S.indptr)
        W = (S @ B).tocsr()          # activation-weighted df among the top docs
        Wc = (Sb @ B).tocsr()        # plain df among the top docs (same sparsity pattern)
        W.sort_indices()
        Wc.sort_indices()
        out: list[list[tuple[str, float]]] = []
        for j in range(h):
            a, b = W.indptr[j], W.indptr[j + 1]
            if a == b or mass[j] <= 0:
                out.append([])
                continue
            widx = W.indices[a:b]
            p_top = W.data[a:b] / mass[j]
            cnt = Wc.data[Wc.indptr[j]:Wc.indptr[j + 1]]
            need = min(min_top_df, n_top[j])
            score = p_top * np.log(p_top / p_corpus[widx])
            ok = (cnt >= need) & (score > 0)
            widx, score = widx[ok], score[ok]
            order = np.lexsort((words[widx].astype(str), -score))[:n_words]
            out.append([(str(words[widx[o]]), float(score[o])) for o in order])
        return cls(out, n_active.tolist())

    # -------------------------------------------------------------- queries
    def words(self, latent: int | str) -> list[tuple[str, float]]:
        """``[(word, weight), ...]`` of a latent, most characteristic first."""
        j = latent_id(latent)
        if not 0 <= j < len(self.words_):
            raise IndexError(f"latent {j} out of range [0, {len(self.words_)})")
        return list(self.words_[j])

    def label(self, latent: int | str, n: int = 3) -> str:
        """Short label: the ``n`` top words joined by commas (``"(unlabelled)"`` for a dead latent)."""
        ws = self.words(latent)[:n]
        return ", ".join(w for w, _ in ws) if ws else "(unlabelled)"

    def explain(self, contributions: Iterable[Any], n_words: int = 3) -> list[LabelledContribution]:
        """Attach labels to ``index.explain()`` output (objects or tuples ``(term, qw, dw, contribution)``)."""
        out = []
        for c in contributions:
            if hasattr(c, "term"):
                term, qw, dw, con = c.term, c.query_weight, c.doc_weight, c.contribution
            else:
                term, qw, dw, con = c[0], c[1], c[2], c[3]
            j = latent_id(term)
            out.append(LabelledContribution(str(term), j, self.label(j, n_words), float(qw), float(dw), float(con)))
        return out

    # ---------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        return {"format": "sparsearch-feature-labels-1", "n_active": self.n_active,
                "words": [[[w, round(s, 6)] for w, s in ws] for ws in self.words_]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "FeatureLabels":
        if obj.get("format") != "sparsearch-feature-labels-1":
            raise ValueError("not a sparsearch feature-label file")
        return cls([[(w, s) for w, s in ws] for ws in obj["words"]], obj.get("n_active"))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureLabels":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def explain_hit(index: Any, query: SparseBatch, docnum: int, labels: FeatureLabels | None = None,
                top: int = 10, n_words: int = 3) -> list[LabelledContribution]:
    """The latents that contributed most to ``docnum``'s score for a one-row ``query``, labelled.

    ``labels`` defaults to the labels of the index's encoder (a CSR encoder fitted with labels).
    """
    if labels is None:
        enc = index.load_encoder()
        labels = getattr(enc, "labels", None)
        if labels is None:
            raise ValueError("the index's encoder has no feature labels; pass labels=")
    return labels.explain(index.explain(query, docnum)[:top], n_words)
