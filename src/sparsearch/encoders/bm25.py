"""BM25 as a sparse encoder.

Documents carry the whole BM25 term weight, queries carry term counts, so that the dot
product of a query and a document vector *is* the BM25 score (as in Anserini's "impact"
BM25 and bm25s's eager scoring). Two variants:

* ``lucene`` (default, Lucene >= 8 / Anserini): ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``,
  ``w = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))``.
* ``robertson`` (the original): ``idf = ln((N - df + 0.5) / (df + 0.5))``, clipped at 0 because
  sparse weights must be non-negative, ``w = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``.

Statistics grow with the index (as Lucene's do, segment by segment): :meth:`update_statistics`
folds new documents into ``N``, the document frequencies and the average length, appending
their new terms to the vocabulary. An index update (``add_texts``) does that, weights the new
documents with the updated statistics (those of their time, themselves included) and commits
the new state with them; documents indexed earlier keep the weights of their time (BM25 weights
are baked into the postings), and deleted documents stay counted, as in Lucene until a merge.
Queries are plain term counts, so the query side needs only the (grown) vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..text import Analyzer, WordAnalyzer, get_analyzer
from ..vectors import SparseBatch, Vocabulary
from .base import SparseEncoder

__all__ = ["BM25Encoder", "DEFAULT_K1", "DEFAULT_B"]

_STATE_FILE = "bm25_stats.json"
DEFAULT_K1 = 1.2
DEFAULT_B = 0.5
_ENCODER_OPTIONS = frozenset({"k1", "b", "method"})
_ANALYZER_OPTIONS = frozenset({"stopwords", "stemmer", "lowercase", "min_length", "language"})


class BM25Encoder(SparseEncoder):
    """BM25 document weights and term-count queries over an analyzer's terms.

    Args:
        k1: term-frequency saturation (>= 0).
        b: document-length normalisation in [0, 1].
        method: ``"lucene"`` or ``"robertson"`` (see module docstring).
        analyzer: defaults to :class:`~sparsearch.text.WordAnalyzer` with its default stopword
            list and stemmer (:data:`~sparsearch.text.DEFAULT_STOPWORDS`,
            :data:`~sparsearch.text.DEFAULT_STEMMER`).

    The defaults (k1, b, the stopword list and the stemmer) were chosen together by a grid
    search on training and development judgements only (SciFact train, NFCorpus train and
    dev; never a test split): ``benchmarks/bm25_analyzer.py``, whose grid, criterion and
    held-out test figures are in ``benchmarks/results/bm25_analyzer.md``.

    Analyzer settings go through :meth:`from_spec` (the CLI's ``--encoder-opt stopwords=lucene
    --encoder-opt stemmer=english``, or ``get_encoder("bm25", stopwords=..., stemmer=...)``) or an
    explicit ``analyzer``; they are part of :meth:`config`, so an index analyzes its queries the
    way it analyzed its documents (indexes built with earlier defaults keep theirs). ``language``
    (``--encoder-opt language=french``, or ``cjk`` for Chinese/Japanese/Korean character bigrams)
    chooses the language's stemmer and tokenization (:class:`~sparsearch.text.WordAnalyzer`). The previous
    defaults are ``BM25Encoder.from_spec(None, k1=1.5, b=0.75, stopwords="lucene", stemmer="english")``.
    """

    name = "bm25"

    def __init__(self, k1: float = DEFAULT_K1, b: float = DEFAULT_B, method: str = "lucene",
                 analyzer: Analyzer | None = None) -> None:
        if method not in ("lucene", "robertson"):
            raise InvalidInputError(f"unknown BM25 method {method!r} (use 'lucene' or 'robertson')")
        if not isinstance(k1, (int, float)) or not isinstance(b, (int, float)) or k1 < 0 or not 0 <= b <= 1:
            raise InvalidInputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.k1, self.b, self.method = float(k1), float(b), method
        self.analyzer = analyzer or WordAnalyzer()
        self.vocab = Vocabulary()
        self.df = np.zeros(0, dtype=np.int64)
        self.n_docs = 0
        self.n_tokens = 0
        self.avgdl = 0.0

    @classmethod
    def from_spec(cls, arg: str | None = None, **options: Any) -> "BM25Encoder":
        """``bm25`` or ``bm25:robertson`` / ``bm25:lucene``; options are ``k1``, ``b``, ``method``
        and the word analyzer's ``language``, ``stopwords``, ``stemmer``, ``lowercase``, ``min_length``
        (e.g. ``from_spec(None, stopwords="none", stemmer="porter")``, ``from_spec(None, language="german")``)."""
        if arg:
            options.setdefault("method", arg)
        unknown = sorted(set(options) - _ENCODER_OPTIONS - _ANALYZER_OPTIONS)
        if unknown:
            raise InvalidInputError(f"bm25: unknown option {unknown[0]!r} (options: "
                                    f"{', '.join(sorted(_ENCODER_OPTIONS | _ANALYZER_OPTIONS))})")
        analyzer_opts = {k: options.pop(k) for k in _ANALYZER_OPTIONS & set(options)}
        return cls(**options, analyzer=WordAnalyzer(**analyzer_opts) if analyzer_opts else None)

    # ------------------------------------------------------------- statistics
    def _term_ids(self, docs_terms: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Flatten analyzed docs to (row, term id) arrays; a term the statistics lack is refused
        (:class:`InvalidInputError`): its IDF is undefined, and dropping it would lose it silently."""
        lens = np.fromiter((len(t) for t in docs_terms), dtype=np.int64, count=len(docs_terms))
        get = self.vocab.get
        tids = np.fromiter((get(t) for terms in docs_terms for t in terms), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(len(docs_terms), dtype=np.int64), lens)
        if len(tids) and tids.min() < 0:
            bad = np.flatnonzero(tids < 0)
            term = next(t for terms in docs_terms for t in terms if get(t) < 0)
            raise InvalidInputError(f"BM25: term {term!r} ({len(np.unique(rows[bad]))} document(s)) is not in the "
                                    f"fitted statistics ({self.n_docs} documents); call update_statistics(texts) "
                                    f"first (index updates do) or fit on a corpus that includes these documents")
        return rows, tids

    @staticmethod
    def _counts(rows: np.ndarray, tids: np.ndarray, n_rows: int, n_terms: int):
        """Unique (row, term) pairs sorted by row then term, with their counts."""
        keys = np.sort(rows * max(n_terms, 1) + tids)
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
        uniq = keys[starts]
        counts = np.diff(np.append(starts, len(keys)))
        return uniq // max(n_terms, 1), uniq % max(n_terms, 1), counts

    def fit(self, texts: Sequence[str]) -> "BM25Encoder":
        """Learn the vocabulary, document frequencies and average length from a corpus."""
        return self.fit_statistics([self.partial_statistics(texts)])

    def partial_statistics(self, texts: Sequence[str]) -> dict[str, Any]:
        """Statistics of one part of a corpus: its terms in order of first occurrence, their
        document frequencies (int64, aligned with the terms), its documents and tokens."""
        docs_terms = self.analyzer.analyze_many(texts)
        local = Vocabulary()
        add = local.add
        lens = np.fromiter((len(t) for t in docs_terms), dtype=np.int64, count=len(docs_terms))
        tids = np.fromiter((add(t) for terms in docs_terms for t in terms), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(len(docs_terms), dtype=np.int64), lens)
        _, t, _ = self._counts(rows, tids, len(texts), len(local))
        return {"terms": local.terms, "df": np.bincount(t, minlength=len(local)).astype(np.int64),
                "n_docs": len(texts), "n_tokens": len(tids)}

    def fit_statistics(self, parts: Sequence[dict[str, Any]]) -> "BM25Encoder":
        """Merge part statistics in corpus order. Appending each part's new terms in its own
        order of first occurrence gives the corpus-wide first-occurrence order, so the
        vocabulary, df and avgdl equal those of ``fit`` on the whole corpus."""
        vocab = Vocabulary()
        df = np.zeros(0, dtype=np.int64)
        n_docs = n_tokens = 0
        for p in parts:
            ids = np.fromiter((vocab.add(t) for t in p["terms"]), dtype=np.int64, count=len(p["terms"]))
            if len(vocab) > len(df):
                df = np.concatenate([df, np.zeros(len(vocab) - len(df), np.int64)])
            df[ids] += p["df"]  # term ids are unique within a part
            n_docs += int(p["n_docs"])
            n_tokens += int(p["n_tokens"])
        self.vocab, self.df, self.n_docs, self.n_tokens = vocab, df, n_docs, n_tokens
        self.avgdl = float(n_tokens) / max(n_docs, 1)
        return self

    def statistics(self) -> dict[str, Any] | None:
        """The fitted statistics as one part (see :meth:`partial_statistics`); ``None`` before ``fit``."""
        if self.n_docs == 0:
            return None
        return {"terms": self.vocab.terms, "df": self.df, "n_docs": self.n_docs, "n_tokens": self.n_tokens}

    def idf(self) -> np.ndarray:
        """IDF per term id, float64 shape (V,)."""
        n, df = self.n_docs, self.df.astype(np.float64)
        if self.method == "lucene":
            return np.log1p((n - df + 0.5) / (df + 0.5))
        return np.maximum(np.log((n - df + 0.5) / (df + 0.5)), 0.0)

    # --------------------------------------------------------------- encoding
    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """BM25 weight of every (document, term); fits on ``texts`` first if never fitted.

        A term the fitted statistics lack raises :class:`InvalidInputError` (its IDF is undefined):
        grow the statistics with :meth:`update_statistics` first (``add_texts`` does).
        """
        if self.n_docs == 0:
            self.fit(texts)
        docs_terms = self.analyzer.analyze_many(texts)
        rows, tids = self._term_ids(docs_terms)
        dl = np.fromiter((len(t) for t in docs_terms), dtype=np.float64, count=len(texts))
        r, t, tf = self._counts(rows, tids, len(texts), len(self.vocab))
        tf = tf.astype(np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * dl[r] / max(self.avgdl, 1e-9))
        sat = tf / (tf + norm) if self.method == "lucene" else tf * (self.k1 + 1.0) / (tf + norm)
        w = (self.idf()[t] * sat).astype(np.float32)
        keep = w > 0
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r[keep], minlength=len(texts)))])
        return SparseBatch(indptr, t[keep], w[keep], self.vocab, list(ids) if ids is not None else None,
                           {"encoder": self.name})

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """Term counts of each query over its own small vocabulary (the index remaps by term)."""
        docs_terms = self.analyzer.analyze_many(texts)
        vocab = Vocabulary(t for terms in docs_terms for t in terms)
        lens = [len(t) for t in docs_terms]
        tids = np.fromiter((vocab.id(t) for terms in docs_terms for t in terms), dtype=np.int64, count=sum(lens))
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
        r, t, tf = self._counts(rows, tids, len(texts), len(vocab))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=len(texts)))])
        return SparseBatch(indptr, t, tf.astype(np.float32), vocab, list(ids) if ids is not None else None)

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {"name": self.name, "k1": self.k1, "b": self.b, "method": self.method,
                "analyzer": self.analyzer.config()}

    def save_state(self, directory: Path) -> None:
        """Corpus statistics, so that documents added later get consistent weights."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        state = {"n_docs": self.n_docs, "n_tokens": self.n_tokens, "avgdl": self.avgdl, "terms": self.vocab.terms,
                 "df": self.df.tolist()}
        (Path(directory) / _STATE_FILE).write_text(json.dumps(state))

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> "BM25Encoder":
        enc = cls(k1=config["k1"], b=config["b"], method=config["method"],
                  analyzer=get_analyzer(config.get("analyzer", {"type": "word"})))
        state_file = Path(directory) / _STATE_FILE if directory is not None else None
        if state_file is not None and state_file.exists():
            state = json.loads(state_file.read_text())
            enc.vocab = Vocabulary(state["terms"])
            enc.df = np.asarray(state["df"], dtype=np.int64)
            enc.n_docs, enc.avgdl = int(state["n_docs"]), float(state["avgdl"])
            # states saved before n_tokens was recorded: the token count avgdl was computed from
            enc.n_tokens = int(state.get("n_tokens", round(enc.avgdl * enc.n_docs)))
        return enc
