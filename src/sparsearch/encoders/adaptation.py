"""Adapting a learned sparse encoder to a collection: label-free (teacher distillation) or supervised.

**Label-free** (no relevance judgements, :func:`adapt`): GPL-style distillation from a teacher
that already retrieves well on the collection without labels.

1. *Pseudo-queries* from the corpus itself (:func:`pseudo_queries`): every title, and sentences
   drawn from the bodies (inverse-cloze style: a sentence asks for the document it came from).
   Queries of a ``train`` / ``dev`` split may be added as unlabelled text.
2. *Teacher* (:func:`teacher_lists`): BM25 and the bundled dense MiniLM model, fused by min-max
   (the hybrid default), ranks the corpus for every pseudo-query. Its fused score is the
   teacher score of a (query, document) pair.
3. *Examples* (:func:`examples_from_teacher`): the positive is the source document of the
   pseudo-query (the teacher's top hit for an unlabelled real query); hard negatives are drawn
   from the teacher's top ranks; every example carries the teacher's scores of its documents
   for MarginMSE (measured in units of the student's margin spread, :func:`margin_spread`).
4. *Training* with :class:`~sparsearch.encoders.splade_train.SpladeTrainer`: in-batch + hard
   negative cross-entropy plus MarginMSE; the inference-free encoder (``splade-doc``) trains
   only its document side against IDF-weighted query bags with IDF-aware FLOPS.

**Supervised** (:func:`finetune`): examples from ``qrels/train.tsv`` with teacher-mined hard
negatives; the same trainer.

The trained model is saved with its tokenizer and ``provenance.json`` (base model and its
digest, collection, recipe, steps, seed, wall time, examples/s), which the encoders copy into
every index manifest they build (``--encoder splade-doc:DIR``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..cache import cache_key, cached, texts_hash
from ..errors import InvalidInputError
from ..evaluation import BeirDataset, load_beir
from ..fusion import fuse_topk
from ..index.builder import build_index
from .bm25 import BM25Encoder
from .dense import DenseEncoder, DenseSearcher
from .splade import PROVENANCE_FILE, SpladeDocEncoder, resolve_model
from .splade_train import SpladeTrainer, TrainingExample

__all__ = ["AdaptConfig", "pseudo_queries", "teacher_lists", "examples_from_teacher", 
           "adapt", "finetune", "margin_spread", "ENCODERS"]

ENCODERS = ("splade-doc", "splade", "splade-idf")
#: teachers: what ranks the corpus for a pseudo-query (negatives, MarginMSE scores)
TEACHERS = {"hybrid": "bm25+dense minmax", "bm25": "bm25"}
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass
class AdaptConfig:
    """Recipe of an adaptation run (every field is recorded in the model's provenance).

    Attributes:
        encoder: ``"splade-doc"`` (inference-free: only documents go through the model),
            ``"splade"`` (queries and documents) or ``"splade-idf"`` (queries and documents, the
            query vector plus ``idf_weight`` times the corpus-IDF token bag).
        base_model: folder or hub id of the starting masked-LM (``None``: bundled SPLADE-tiny).
        titles: use document titles as pseudo-queries.
        sentences_per_doc: body sentences drawn per document as pseudo-queries.
        sentence_words: draw them from the first this many words of the body only (``None``: all),
            so that the sentence lies in the part of the document training reads
            (``doc_max_length`` tokens, about 0.75 words per token with the title first).
        remove_query: probability that a pseudo-query is cut out of its source document in the
            training positive (inverse cloze task: the model must represent the rest of the
            document so that the query still finds it, i.e. learn expansion terms).
        split_queries: splits whose *query texts* (never their judgements) are added as
            unlabelled pseudo-queries, e.g. ``("train",)``; the test split is refused.
        max_queries: cap on pseudo-queries (a seeded sample); ``None``: all. In supervised
            fine-tuning: judged pairs per epoch (a fresh seeded sample each epoch).
        teacher: ``"hybrid"`` (BM25 + dense MiniLM, min-max fused) or ``"bm25"``.
        depth: teacher ranks kept per query (the negatives are drawn from them).
        skip_top: teacher ranks skipped when drawing negatives (likely relevant documents).
        n_negatives: hard negatives per example.
        epochs, batch_size, lr: optimisation.
        lambda_q, lambda_d: FLOPS weights (``lambda_q`` unused by ``splade-doc``).
        idf_flops: IDF-aware FLOPS on the document side (``splade-doc`` and ``splade-idf``).
        idf_weight: weight of the IDF token bag in ``splade-idf`` queries.
        anchor_weight: weight of the anchor of document vectors to the base model's
            (:class:`~sparsearch.encoders.splade_train.SpladeTrainer`; 0: off).
        distill_weight: weight of MarginMSE against the teacher (0: cross-entropy only).
        doc_max_length: document tokens in training (encoding uses the encoder's own limit).
        max_seconds: time budget of the training loop.
        threads: torch threads while training (``None``: torch's default).
        seed: seeds sampling, shuffling and initialisation.
    """

    encoder: str = "splade-doc"
    base_model: str | None = None
    titles: bool = True
    sentences_per_doc: int = 1
    sentence_words: int | None = 80
    remove_query: float = 0.0
    split_queries: tuple[str, ...] = ()
    max_queries: int | None = 6000
    teacher: str = "hybrid"
    depth: int = 30
    skip_top: int = 2
    n_negatives: int = 1
    epochs: int = 1
    batch_size: int = 16
    lr: float = 5e-5
    lambda_q: float = 1e-3
    lambda_d: float = 1e-3
    idf_flops: bool = True
    idf_weight: float = 1.0
    anchor_weight: float = 0.0
    distill_weight: float = 1.0
    doc_max_length: int = 128
    max_seconds: float | None = 1500.0
    threads: int | None = None
    seed: int = 0

    def check(self) -> "AdaptConfig":
        if self.teacher not in TEACHERS:
            raise InvalidInputError(f"adapt: teacher must be one of {tuple(TEACHERS)}, not {self.teacher!r}")
        if self.encoder not in ENCODERS:
            raise InvalidInputError(f"adapt: encoder must be one of {ENCODERS}, not {self.encoder!r}")
        if "test" in self.split_queries:
            raise InvalidInputError("adapt: the test split's queries are never used for adaptation")
        if self.depth <= self.skip_top + self.n_negatives:
            raise InvalidInputError("adapt: depth must exceed skip_top + n_negatives")
        if self.sentences_per_doc < 0 or self.n_negatives < 1 or self.epochs < 1 or self.batch_size < 2:
            raise InvalidInputError("adapt: sentences_per_doc >= 0, n_negatives >= 1, epochs >= 1, batch_size >= 2")
        return self


def _sentences(text: str) -> list[str]:
    """Sentences of ``text`` with at least 4 words."""
    return [s.strip() for s in _SENTENCE.split(text) if len(s.split()) >= 4]


def pseudo_queries(ds: BeirDataset, config: AdaptConfig) -> list[tuple[str, str | None]]:
    """``(query text, source doc id)`` pairs: titles, sampled body sentences, unlabelled split
    queries (source ``None``). A title that is the whole document is skipped (nothing to find)."""
    rng = random.Random(config.seed)
    out: list[tuple[str, str | None]] = []
    for doc_id, doc in ds.corpus.items():
        title, body = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
        if config.titles and len(title.split()) >= 2 and body:
            out.append((title, doc_id))
        # only sentences that training sees: documents are cut at doc_max_length tokens
        seen = " ".join(body.split()[: config.sentence_words]) if config.sentence_words else body
        sents = [s for s in _sentences(seen) if s.rstrip(" .") != title.rstrip(" .")]
        for s in rng.sample(sents, min(config.sentences_per_doc, len(sents))):
            out.append((s, doc_id))
    for split in config.split_queries:
        if ds.path is None:
            raise InvalidInputError("adapt: split queries need a dataset loaded from disk")
        qids = ds.split_qrels(split)
        out.extend((ds.all_queries[q], None) for q in qids if q in ds.all_queries)
    if config.max_queries is not None and len(out) > config.max_queries:
        out = rng.sample(out, config.max_queries)
    return out


def teacher_lists(doc_texts: Sequence[str], queries: Sequence[str], depth: int, *, teacher: str = "hybrid",
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top-``depth`` per query: ``"hybrid"``, BM25 + dense MiniLM fused by min-max
    (equal weights), or ``"bm25"`` alone.

    Returns ``(scores float32 (nq, depth), docnums int64 (nq, depth))`` over ``doc_texts`` order,
    ``-1`` padding. The lists (and the dense document embeddings) are cached on disk
    (:mod:`sparsearch.cache`), keyed by the texts, the queries and the encoders' settings.
    """
    if teacher not in TEACHERS:
        raise InvalidInputError(f"adapt: teacher must be one of {TEACHERS}, not {teacher!r}")
    key = cache_key(kind="teacher-lists", teacher=TEACHERS[teacher], docs=texts_hash(doc_texts),
                    queries=texts_hash(queries), depth=depth, bm25=BM25Encoder().config(),
                    dense=DenseEncoder().config() if teacher == "hybrid" else None)
    return cached(key, lambda: _teacher_lists(doc_texts, queries, depth, teacher, progress),
                  lambda v, p: np.savez(p, scores=v[0], docnums=v[1]),
                  lambda p: tuple(np.load(p)[k] for k in ("scores", "docnums")))


def _teacher_lists(doc_texts: Sequence[str], queries: Sequence[str], depth: int, teacher: str,
                   progress: bool) -> tuple[np.ndarray, np.ndarray]:
    ids = [str(i) for i in range(len(doc_texts))]
    bm25 = BM25Encoder()
    docs = bm25.encode_documents(list(doc_texts), ids)
    wide = min(max(depth, 100), len(doc_texts))  # each list deeper than the kept depth: the fusion sees overlap
    with tempfile.TemporaryDirectory(prefix="sparsearch-teacher-") as tmp:
        index = build_index(docs, Path(tmp) / "bm25", encoder=bm25)
        lexical = index.search(bm25.encode_queries(list(queries)), wide if teacher == "hybrid" else depth)
    if teacher == "bm25":
        return lexical
    dense = DenseEncoder()
    emb = dense.encode_documents(list(doc_texts), progress=progress)
    semantic = DenseSearcher(emb).search(dense.encode_queries(list(queries), progress=progress), wide)
    return fuse_topk([lexical, semantic], depth, method="minmax")


def margin_spread(trainer: SpladeTrainer, examples: Sequence[TrainingExample], n: int = 64) -> tuple[float, float]:
    """Standard deviations of the student's and the teacher's score margins ``s(q, d+) - s(q, d-)``
    over the first ``n`` examples (the model as it starts training)."""
    import torch

    sample = list(examples[:n])
    trainer.model.eval()
    student, teacher = [], []
    with torch.no_grad():
        for s in range(0, len(sample), 16):
            batch = sample[s: s + 16]
            q = trainer.encode_queries([e.query for e in batch])
            for i, e in enumerate(batch):
                d = trainer.encode([e.positive, *e.negatives], trainer.doc_max_length)
                sc = (d @ q[i]).tolist()
                student += [sc[0] - x for x in sc[1:]]
                teacher += [e.teacher_positive - x for x in e.teacher_negatives]
    return float(np.std(student)), float(np.std(teacher))


def examples_from_teacher(pairs: Sequence[tuple[str, str | None]], doc_ids: Sequence[str],
                          doc_texts: Sequence[str], lists: tuple[np.ndarray, np.ndarray],
                          config: AdaptConfig, epoch: int = 0,
                          exclude: Sequence[set[int]] | None = None) -> list[TrainingExample]:
    """One example per pseudo-query: its source document (else the teacher's top hit) as the
    positive, ``n_negatives`` drawn from teacher ranks ``[skip_top, depth)`` (the source and
    ``exclude[i]``, e.g. the query's other judged-relevant documents, left out), and the
    teacher's scores of all of them (row ``i`` of ``lists`` belongs to ``pairs[i]``)."""
    rng = random.Random(config.seed * 1000 + epoch)
    position = {d: i for i, d in enumerate(doc_ids)}
    scores, docnums = lists
    out = []
    for qi, (query, source) in enumerate(pairs):
        row = {int(d): float(s) for d, s in zip(docnums[qi], scores[qi]) if d >= 0}
        ranked = [int(d) for d in docnums[qi] if d >= 0]
        if not ranked:
            continue
        pos = position[source] if source is not None else ranked[0]
        banned = exclude[qi] if exclude is not None else ()
        pool = [d for d in ranked[config.skip_top:] if d != pos and d not in banned]
        if len(pool) < config.n_negatives:
            continue
        negs = rng.sample(pool, config.n_negatives)
        floor = min(row.values())  # a source outside the teacher's list scores below all of it
        positive = doc_texts[pos]
        if source is not None and rng.random() < config.remove_query:
            # inverse cloze: the document must be found without the words that made its query
            positive = " ".join(positive.replace(query, " ").split()) or positive
        out.append(TrainingExample(query, positive, [doc_texts[d] for d in negs],
                                   teacher_positive=row.get(pos, floor),
                                   teacher_negatives=[row[d] for d in negs],
                                   positive_id=doc_ids[pos], negative_ids=[doc_ids[d] for d in negs],
                                   relevant_ids=frozenset(doc_ids[d] for d in banned)))
    return out


def _digest(path: str) -> str:
    """SHA-256 of a model folder's weight files (names and bytes), short."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*")):
        if f.suffix in (".safetensors", ".bin") and f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _corpus_digest(ds: BeirDataset) -> str:
    h = hashlib.sha256()
    for d, doc in ds.corpus.items():
        h.update(f"{d}\t{doc.get('title', '')}\t{doc.get('text', '')}\n".encode())
    return h.hexdigest()[:16]


def _trainer(config: AdaptConfig, doc_texts: Sequence[str]) -> SpladeTrainer:
    """The trainer of a recipe; inference-free: IDF query bags fitted on ``doc_texts``."""
    kw: dict[str, Any] = dict(lr=config.lr, lambda_q=config.lambda_q, lambda_d=config.lambda_d,
                              doc_max_length=config.doc_max_length, seed=config.seed,
                              distill_weight=config.distill_weight, threads=config.threads,
                              anchor_weight=config.anchor_weight)
    if config.encoder in ("splade-doc", "splade-idf"):
        kw["query_idf"] = SpladeDocEncoder(config.base_model).fit(list(doc_texts)).idf()
        if config.encoder == "splade-idf":
            kw["query_idf_weight"] = config.idf_weight
        if config.idf_flops:
            kw["flops_weights"] = "idf"
    return SpladeTrainer(config.base_model, **kw)


def _save(trainer: SpladeTrainer, out: str | Path, provenance: dict[str, Any]) -> Path:
    out = Path(out)
    trainer.save(out)
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return out


def _provenance(kind: str, ds: BeirDataset, config: AdaptConfig, trainer: SpladeTrainer, n_examples: int,
                seconds: float, extra: Mapping[str, Any]) -> dict[str, Any]:
    base = resolve_model(config.base_model)
    steps = trainer.step_count
    return {
        "kind": kind, "encoder": config.encoder, "base_model": config.base_model or "splade-tiny",
        "base_model_digest": _digest(base), "data": str(ds.path) if ds.path else ds.name,
        "corpus_digest": _corpus_digest(ds), "n_docs": len(ds.corpus),
        "recipe": {**asdict(config), "split_queries": list(config.split_queries)},  # as JSON reads it back
        "examples": n_examples, "steps": steps, "seed": config.seed, "train_seconds": round(seconds, 1),
        "examples_per_second": round(steps * config.batch_size / seconds, 2) if seconds > 0 else None,
        "stop_reason": trainer.stop_reason, "device": str(trainer.device), "sparsearch": __version__,
        **extra,
    }


def _train(trainer: SpladeTrainer, make: Any, config: AdaptConfig, progress: bool) -> tuple[int, float, float]:
    """Scale the teacher margins, train with examples re-drawn every epoch;
    (examples, seconds, teacher factor)."""
    examples = make(0)
    if not examples:
        raise InvalidInputError("adapt: no training examples (empty corpus or no usable pseudo-queries)")
    scale = 1.0
    if config.distill_weight > 0:
        # MarginMSE in units of the student's margin spread: teacher margins are rescaled to the
        # student's spread, and the loss divided by its square, so that distill_weight = 1 weighs
        # like the cross-entropy whatever the score range (raw margins of IDF-weighted queries
        # reach tens, and their squared errors would drown the FLOPS regulariser).
        s_std, t_std = margin_spread(trainer, examples)
        scale = s_std / t_std if t_std > 0 else 1.0
        trainer.distill_weight = config.distill_weight / max(s_std, 1e-6) ** 2
    for e in examples:
        _rescale(e, scale)

    def resample(epoch: int) -> list[TrainingExample]:
        ex = make(epoch)
        for e in ex:
            _rescale(e, scale)
        return ex

    t0 = time.monotonic()
    trainer.train(examples, batch_size=config.batch_size, epochs=config.epochs, max_seconds=config.max_seconds,
                  progress=progress, resample=resample)
    return len(examples), time.monotonic() - t0, scale


def _rescale(e: TrainingExample, scale: float) -> None:
    if e.teacher_positive is not None and e.teacher_negatives is not None:
        e.teacher_positive *= scale
        e.teacher_negatives = [x * scale for x in e.teacher_negatives]


def adapt(data: str | Path | BeirDataset, out: str | Path, config: AdaptConfig | None = None, *,
          progress: bool = False) -> dict[str, Any]:
    """Label-free adaptation of a learned sparse encoder to the collection at ``data``.

    Reads only the corpus (and, with ``config.split_queries``, unlabelled query texts); saves
    the model to ``out`` and returns its provenance (also in ``out/provenance.json``).
    """
    config = (config or AdaptConfig()).check()
    ds = data if isinstance(data, BeirDataset) else load_beir(data, split=None)
    doc_ids, doc_texts = ds.doc_ids, ds.doc_texts()
    pairs = pseudo_queries(ds, config)
    t0 = time.monotonic()
    lists = teacher_lists(doc_texts, [q for q, _ in pairs], config.depth, teacher=config.teacher, progress=progress)
    teacher_seconds = time.monotonic() - t0
    trainer = _trainer(config, doc_texts)
    n, seconds, factor = _train(trainer, lambda ep: examples_from_teacher(pairs, doc_ids, doc_texts, lists, config, ep),
                        config, progress)
    prov = _provenance("label-free", ds, config, trainer, n, seconds,
                       {"pseudo_queries": len(pairs), "teacher": TEACHERS[config.teacher],
                        "teacher_seconds": round(teacher_seconds, 1), "teacher_factor": factor})
    _save(trainer, out, prov)
    return prov


def finetune(data: str | Path | BeirDataset, out: str | Path, config: AdaptConfig | None = None, *,
             split: str = "train", progress: bool = False) -> dict[str, Any]:
    """Supervised fine-tuning on the judgements of ``split`` (never ``test``), with hard negatives
    and MarginMSE from the same teacher as :func:`adapt`."""
    config = (config or AdaptConfig()).check()
    if split == "test":
        raise InvalidInputError("finetune: training on the test split's judgements is refused")
    ds = data if isinstance(data, BeirDataset) else load_beir(data, split=None)
    qrels = ds.split_qrels(split)
    doc_ids, doc_texts = ds.doc_ids, ds.doc_texts()
    position = {d: i for i, d in enumerate(doc_ids)}
    judged = [(q, rel) for q, rel in qrels.items() if q in ds.all_queries]
    pairs = [(ds.all_queries[q], d) for q, rel in judged for d, g in rel.items() if g > 0 and d in position]
    if not pairs:
        raise InvalidInputError(f"finetune: no usable judgements in qrels/{split}.tsv")
    relevant = {ds.all_queries[q]: {position[d] for d, g in rel.items() if g > 0 and d in position}
                for q, rel in judged}
    t0 = time.monotonic()
    queries = sorted({q for q, _ in pairs})
    qi = {q: i for i, q in enumerate(queries)}
    scores, docnums = teacher_lists(doc_texts, queries, config.depth, teacher=config.teacher, progress=progress)
    teacher_seconds = time.monotonic() - t0
    rows = np.array([qi[q] for q, _ in pairs])
    lists = (scores[rows], docnums[rows])
    exclude = [relevant[q] for q, _ in pairs]  # judged relevant: never a negative
    trainer = _trainer(config, doc_texts)

    def make(epoch: int) -> list[TrainingExample]:
        # at most max_queries judged pairs per epoch, a fresh seeded draw each epoch
        rows = list(range(len(pairs)))
        if config.max_queries is not None and len(rows) > config.max_queries:
            rows = sorted(random.Random(config.seed * 1000 + epoch).sample(rows, config.max_queries))
        return examples_from_teacher([pairs[i] for i in rows], doc_ids, doc_texts,
                                     (lists[0][rows], lists[1][rows]), config, epoch, [exclude[i] for i in rows])

    n, seconds, factor = _train(trainer, make, config, progress)
    prov = _provenance("supervised", ds, config, trainer, n, seconds,
                       {"split": split, "judged_pairs": len(pairs), "teacher": TEACHERS[config.teacher],
                        "teacher_seconds": round(teacher_seconds, 1), "teacher_factor": factor})
    _save(trainer, out, prov)
    return prov
