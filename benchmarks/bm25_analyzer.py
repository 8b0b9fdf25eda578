"""Choose BM25's default analyzer (stopword list, stemmer) and k1/b on train/dev judgements only.

Tuning sets: SciFact train, NFCorpus train, NFCorpus dev (never a test split, never Cranfield).
Every (stopwords, stemmer, k1, b) of the grid indexes the corpus with sparsearch's exact index
(default 8-bit impacts, what users get) and retrieves the top-10 of every tuning query; the
criterion is the mean nDCG@10 over the three tuning sets, ties going to the first setting in
grid order. Then, in the same run, the chosen setting is scored on the held-out test splits of
SciFact, NFCorpus and Cranfield next to the previous default (Lucene stopwords, Snowball English
stemmer, k1=1.5, b=0.75) and next to bm25s (its default tokenizer with stopwords="en",
method="lucene", its default k1/b; once without a stemmer, its tokenizer's default, and once with
PyStemmer's English stemmer, as its README indexes).

    python benchmarks/bm25_analyzer.py                      # the whole grid, ~15 min on 2 cores
    python benchmarks/bm25_analyzer.py --k1 1.2 --b 0.75    # a smaller grid

Writes ``benchmarks/results/bm25_analyzer.json`` (every grid point, the choice, the test table)
and ``.md`` (the same as tables).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import bm25s
    import Stemmer
except ImportError as e:
    sys.exit(f"needs the bench extra (pip install -e '.[bench]'): {e}")

from sparsearch.encoders.bm25 import DEFAULT_B, DEFAULT_K1, BM25Encoder
from sparsearch.evaluation import evaluate, load_beir, load_qrels, to_run
from sparsearch.index import build_index
from sparsearch.text import DEFAULT_STEMMER, DEFAULT_STOPWORDS, Analyzer, WordAnalyzer

TUNING = [("scifact", "train"), ("nfcorpus", "train"), ("nfcorpus", "dev")]
TEST = ["scifact", "nfcorpus", "cranfield"]
OLD_DEFAULT = {"stopwords": "lucene", "stemmer": "english", "k1": 1.5, "b": 0.75}
RESULTS = Path(__file__).resolve().parent / "results"


class CachedAnalyzer(Analyzer):
    """An analyzer that analyzes each distinct text once (the grid re-encodes the same corpus
    for every k1/b; analysis does not depend on them)."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self._cache: dict[str, list[str]] = {}

    def analyze(self, text: str) -> list[str]:
        terms = self._cache.get(text)
        if terms is None:
            terms = self._cache[text] = self.inner.analyze(text)
        return terms

    def config(self) -> dict[str, Any]:
        return self.inner.config()


def frange(lo: float, hi: float, step: float) -> list[float]:
    return [round(float(x), 2) for x in np.arange(lo, hi + step / 2, step)]


def search_ndcg(index, enc: BM25Encoder, doc_ids: Sequence[str], query_sets, k: int = 10) -> list[float]:
    """nDCG@10 of each (query ids, query texts, qrels) set on one index."""
    out = []
    for qids, qtexts, qrels in query_sets:
        scores, docnums = index.search(enc.encode_queries(qtexts, qids), k)
        out.append(evaluate(to_run(scores, docnums, doc_ids, qids), qrels, ["nDCG@10"])["nDCG@10"])
    return out


def grid(data: Path, stopwords: list[str], stemmers: list[str], k1s: list[float], bs: list[float],
         tmp: Path) -> list[dict[str, Any]]:
    """One row per grid point: its settings and nDCG@10 on each tuning set."""
    rows: dict[tuple, dict[str, Any]] = {}
    by_collection: dict[str, list[str]] = {}
    for name, split in TUNING:
        by_collection.setdefault(name, []).append(split)
    for name, splits in by_collection.items():
        ds = load_beir(data / name, splits[0])
        texts, doc_ids = ds.doc_texts(), ds.doc_ids
        query_sets = []
        for split in splits:
            qrels = load_qrels(data / name / "qrels" / f"{split}.tsv")
            qids = [q for q in ds.all_queries if q in qrels]
            query_sets.append((qids, [ds.all_queries[q] for q in qids], qrels))
        print(f"{name}: {len(texts):,} docs; tuning queries " +
              ", ".join(f"{s} {len(q[0])}" for s, q in zip(splits, query_sets)), file=sys.stderr, flush=True)
        for sw in stopwords:
            for stem in stemmers:
                t = time.perf_counter()
                analyzer = CachedAnalyzer(WordAnalyzer(stemmer=stem, stopwords=sw))
                stats = BM25Encoder(analyzer=analyzer).fit(texts).statistics()
                points = [(k1, b, True) for k1 in k1s for b in bs]
                if (sw, stem) == (OLD_DEFAULT["stopwords"], OLD_DEFAULT["stemmer"]) and \
                        (OLD_DEFAULT["k1"], OLD_DEFAULT["b"], True) not in points:
                    points.append((OLD_DEFAULT["k1"], OLD_DEFAULT["b"], False))  # a reference, not a candidate
                for k1, b, in_grid in points:
                    enc = BM25Encoder(k1=k1, b=b, analyzer=analyzer).fit_statistics([stats])
                    index = build_index(enc.encode_documents(texts, doc_ids), tmp / "idx", encoder=enc)
                    row = rows.setdefault((sw, stem, k1, b), {"stopwords": sw, "stemmer": stem, "k1": k1, "b": b,
                                                              "in_grid": in_grid})
                    for split, v in zip(splits, search_ndcg(index, enc, doc_ids, query_sets)):
                        row[f"{name}/{split}"] = v
                print(f"  {sw:>7} / {stem:<7} {len(points)} points in {time.perf_counter() - t:.1f}s",
                      file=sys.stderr, flush=True)
    out = list(rows.values())
    for r in out:
        r["mean"] = float(np.mean([r[f"{n}/{s}"] for n, s in TUNING]))
    return out


def bm25s_run(texts: list[str], doc_ids: list[str], qids: list[str], qtexts: list[str], stemmer, k: int):
    """bm25s with its own tokenizer (stopwords="en"), method="lucene", default k1/b."""
    def tokenize(xs):
        return bm25s.tokenize(xs, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)

    retriever = bm25s.BM25(method="lucene")
    retriever.index(tokenize(texts), show_progress=False)
    q_tokens = [[t for t in q if t in retriever.vocab_dict] for q in tokenize(qtexts)]
    known = [i for i, q in enumerate(q_tokens) if q]  # bm25s refuses a query with no known term
    docs, scores = retriever.retrieve([q_tokens[i] for i in known], k=min(k, len(texts)), show_progress=False)
    return {qids[i]: {doc_ids[d]: float(s) for d, s in zip(docs[j], scores[j]) if s > 0} for j, i in enumerate(known)}


def test_table(data: Path, chosen: dict[str, Any], tmp: Path, k: int = 1000) -> list[dict[str, Any]]:
    systems = [("sparsearch, chosen default", chosen), ("sparsearch, previous default", OLD_DEFAULT)]
    rows = []
    for name in TEST:
        ds = load_beir(data / name, "test")
        texts, doc_ids, qids, qtexts = ds.doc_texts(), ds.doc_ids, ds.query_ids, ds.query_texts()
        for label, s in systems:
            enc = BM25Encoder(k1=s["k1"], b=s["b"], analyzer=WordAnalyzer(stemmer=s["stemmer"],
                                                                        stopwords=s["stopwords"])).fit(texts)
            index = build_index(enc.encode_documents(texts, doc_ids), tmp / "test-idx", encoder=enc)
            scores, docnums = index.search(enc.encode_queries(qtexts, qids), k)
            rows.append({"collection": name, "system": label, **evaluate(to_run(scores, docnums, doc_ids, qids),
                                                                          ds.qrels)})
        for label, stem in (("bm25s, default tokenizer (no stemmer)", None),
                            ("bm25s, tokenizer + PyStemmer english", Stemmer.Stemmer("english"))):
            rows.append({"collection": name, "system": label,
                         **evaluate(bm25s_run(texts, doc_ids, qids, qtexts, stem, k), ds.qrels)})
        print(f"{name} test: " + ", ".join(f"{r['system']} {r['nDCG@10']:.4f}" for r in rows[-4:]),
              file=sys.stderr, flush=True)
    return rows


def fmt_setting(r: dict[str, Any]) -> str:
    return f"{r['stopwords']} / {r['stemmer']} / k1={r['k1']:g} / b={r['b']:g}"


def markdown(report: dict[str, Any]) -> str:
    rows, chosen, test, meta = report["grid"], report["chosen"], report["test"], report["meta"]
    cols = [f"{n}/{s}" for n, s in TUNING]
    ranked = sorted((r for r in rows if r["in_grid"]), key=lambda r: -r["mean"])
    old = next((r for r in rows if all(r[key] == v for key, v in OLD_DEFAULT.items())), None)
    header = ["| stopwords | stemmer | k1 | b | " + " | ".join(cols) + " | mean |",
              "|---|---|---|---|" + "---|" * (len(cols) + 1)]

    def row(r: dict[str, Any]) -> str:
        return (f"| {r['stopwords']} | {r['stemmer']} | {r['k1']:g} | {r['b']:g} | "
                + " | ".join(f"{r[c]:.4f}" for c in cols) + f" | {r['mean']:.4f} |")

    best: dict[tuple, dict[str, Any]] = {}
    for r in ranked:
        best.setdefault((r["stopwords"], r["stemmer"]), r)
    lines = [
        "# BM25 default analyzer and k1/b, chosen on train/dev judgements",
        "",
        f"`python benchmarks/bm25_analyzer.py` ({meta['date']}, {meta['machine']}, grid {meta['grid_seconds']:.0f}s). "
        "Tuning sets: " + ", ".join(cols) + ". Criterion: mean nDCG@10 over the three tuning sets (exact "
        "search, 8-bit impacts, top-10); ties go to the first setting in grid order. Test splits were used "
        "only for the table at the end, after the choice.",
        "",
        f"Grid: stopwords {meta['stopwords']} x stemmer {meta['stemmers']} x k1 {meta['k1']} x b {meta['b']} "
        f"({len(ranked)} settings; the previous default, when outside the grid, is scored as a reference, "
        "not a candidate).",
        "",
        f"**Chosen: {fmt_setting(chosen)}** (mean {chosen['mean']:.4f}).",
        "",
        "## Best k1/b per analyzer (tuning nDCG@10)",
        "",
        *header,
        *(row(r) for r in best.values()),
        "",
        "## Top 15 settings (tuning nDCG@10)",
        "",
        *header,
        *(row(r) for r in ranked[:15]),
    ]
    if old:
        place = (f"rank {ranked.index(old) + 1} of {len(ranked)}" if old["in_grid"] else
                 f"{sum(r['mean'] > old['mean'] for r in ranked)} of the {len(ranked)} grid settings score higher")
        lines += ["", f"Previous default ({fmt_setting(old)}): " + ", ".join(f"{c} {old[c]:.4f}" for c in cols)
                  + f", mean {old['mean']:.4f} ({place})."]
    lines += ["", "## Held-out test splits (same run)", "",
              "| collection | system | nDCG@10 | R@100 |", "|---|---|---|---|"]
    lines += [f"| {r['collection']} | {r['system']} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} |" for r in test]
    lines += ["", "Acceptance (chosen default >= bm25s on every test split, nDCG@10; the issue's reference is "
              "bm25s's default tokenizer, the variant with PyStemmer's English stemmer is shown too):", ""]
    lines += [f"- {name}: {verdict}" for name, verdict in report["acceptance"].items()]
    lib = meta["library_default"]
    lines += ["", f"Library defaults at the time of this run: stopwords={lib['stopwords']}, "
              f"stemmer={lib['stemmer']}, k1={lib['k1']:g}, b={lib['b']:g}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")))
    ap.add_argument("--stopwords", nargs="+", default=["lucene", "english", "none"])
    ap.add_argument("--stemmers", nargs="+", default=["english", "porter", "none"])
    ap.add_argument("--k1", type=float, nargs="+", default=frange(0.6, 2.0, 0.2))
    ap.add_argument("--b", type=float, nargs="+", default=frange(0.3, 1.0, 0.1))
    ap.add_argument("--out", type=Path, default=RESULTS / "bm25_analyzer",
                    help="writes OUT.json and OUT.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rows = grid(args.data, args.stopwords, args.stemmers, args.k1, args.b, Path(tmp))
        grid_s = time.perf_counter() - t
        chosen = max((r for r in rows if r["in_grid"]), key=lambda r: r["mean"])  # the first of equal means
        print(f"chosen: {fmt_setting(chosen)}, mean tuning nDCG@10 {chosen['mean']:.4f}", file=sys.stderr)
        test = test_table(args.data, chosen, Path(tmp))
    acceptance = {}
    for name in TEST:
        ours = next(r["nDCG@10"] for r in test if r["collection"] == name and r["system"].endswith("chosen default"))
        acceptance[name] = "; ".join(
            f"vs {r['system']}: {'PASS' if ours >= r['nDCG@10'] else 'FAIL'} ({ours:.4f} vs {r['nDCG@10']:.4f})"
            for r in test if r["collection"] == name and r["system"].startswith("bm25s"))
    report = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "python": platform.python_version(), "bm25s": bm25s.__version__, "grid_seconds": grid_s,
                 "stopwords": args.stopwords, "stemmers": args.stemmers, "k1": args.k1, "b": args.b,
                 "tuning": [f"{n}/{s}" for n, s in TUNING], "criterion": "max mean nDCG@10 over the tuning sets",
                 "library_default": {"stopwords": DEFAULT_STOPWORDS, "stemmer": DEFAULT_STEMMER,
                                     "k1": DEFAULT_K1, "b": DEFAULT_B}},
        "chosen": chosen, "test": test, "acceptance": acceptance, "grid": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
