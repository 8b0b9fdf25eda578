"""Hybrid retrieval on the shared collections: the label-free default fusion, chosen on train/dev
splits only, then test figures next to every single representation, tuned fusion, depth and latency.

Protocol (no setting is ever chosen on test qrels):

1. One hybrid index per collection with four representations: bm25, dense (bundled MiniLM),
   splade-doc (inference-free) and splade (SPLADE-tiny, query + document).
2. Each representation's top ``MAX_DEPTH`` lists are computed once per split; every fusion below
   is applied to those lists (truncated to its depth), so the comparison is exact and cheap.
3. **Default fusion (label-free):** among the candidate methods (RRF with k in {20, 60}, min-max,
   z-score; equal weights; depth 100 or 1000) the one with the best mean nDCG@10 of the default
   hybrid (bm25 + dense) over the choosing splits (scifact train, nfcorpus train, nfcorpus dev)
   becomes ``DEFAULT_FUSION``. Cranfield has test qrels only and is never used to choose.
4. **Tuned fusion:** weights and method fitted on the collection's own train split
   (``sparsearch.fusion.tune_fusion``, as ``sparsearch tune-fusion --split train``: RRF k=60,
   min-max, z-score; weights on a 0.1 grid, 0.2 for four representations), reported on test.
5. Test figures (final): every single representation, the default hybrid of each member set, the
   tuned hybrids; the effect of the depth on quality and on latency; single-query latency (k=10,
   1 thread, exact, excluding query encoding) of each representation and of the fusion, and the
   query-encoding time of each representation.

Run: ``.venv/bin/python benchmarks/hybrid.py`` (writes benchmarks/results/hybrid.json and .md;
indexes under indexes/bench-hybrid/, reused when present; encodings come from the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-thread latency, as every benchmark here

import numpy as np

from sparsearch.evaluation import LatencyStats, evaluate, load_beir, time_queries, to_run
from sparsearch.fusion import fuse_topk, tune_fusion
from sparsearch.index.hybrid import HybridIndex, build_hybrid, make_encoder
from sparsearch.searching import ExactParams, HybridParams

DATA = Path(os.environ.get("SPARSEARCH_DATA", "../shared/data"))
COLLECTIONS = ("scifact", "nfcorpus", "cranfield")
CHOOSING = (("scifact", "train"), ("nfcorpus", "train"), ("nfcorpus", "dev"))
MEMBERS = ("bm25", "dense", "splade-doc", "splade")
SETS = (("bm25", "dense"), ("bm25", "dense", "splade-doc"), ("bm25", "dense", "splade"), MEMBERS)
DEFAULT_SET = ("bm25", "dense")
CANDIDATES = ({"fusion": "rrf", "rrf_k": 60.0}, {"fusion": "rrf", "rrf_k": 20.0},
              {"fusion": "minmax", "rrf_k": 60.0}, {"fusion": "zscore", "rrf_k": 60.0})
DEPTHS = (10, 20, 50, 100, 200, 500, 1000)
MAX_DEPTH = 1000
OUT = Path(__file__).parent / "results"


def splits_of(name: str) -> list[str]:
    return [s for s in ("train", "dev", "test") if (DATA / name / "qrels" / f"{s}.tsv").exists()]


def open_or_build(name: str, root: Path, rebuild: bool) -> HybridIndex:
    path = root / f"{name}-hybrid"
    if path.exists() and not rebuild:
        return HybridIndex.open(path)
    ds = load_beir(DATA / name, "test")
    encoders = [(m, make_encoder(m)) for m in MEMBERS]
    return build_hybrid(path, ds.doc_texts(), ds.doc_ids, encoders, documents=ds.corpus, overwrite=True,
                        log=lambda m: print(f"  {name}: {m}", file=sys.stderr, flush=True))


def fused(lists: dict, members: tuple[str, ...], cand: dict, depth: int, weights=None, k: int = 10):
    parts = [(lists[m][0][:, :depth], lists[m][1][:, :depth]) for m in members]
    if len(parts) == 1:
        return parts[0][0][:, :k], parts[0][1][:, :k]
    return fuse_topk(parts, k, cand["fusion"], weights, cand["rrf_k"])


def ndcg(result, idx: HybridIndex, qids: list[str], qrels) -> float:
    return float(evaluate(to_run(*result, idx.doc_ids, qids), qrels, ("nDCG@10",))["nDCG@10"])


def latency(idx: HybridIndex, qv, params: HybridParams, n: int = 300) -> dict[str, float]:
    """p50 ms per representation and for the fusion, single query, k=10, 1 thread."""
    parts: dict[str, list[float]] = {}
    n = min(n, len(qv))

    def one(i: int) -> None:
        for name, sec in idx.search_detailed(qv[i:i + 1], 10, params)[3].items():
            parts.setdefault(name, []).append(sec)

    total = time_queries(one, n)
    out = {name: LatencyStats.measure(np.asarray(v[-n:])).summary()["p50_ms"] for name, v in parts.items()}
    out["total"] = LatencyStats.measure(total).summary()["p50_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("indexes/bench-hybrid"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite hybrid.md from hybrid.json")
    args = ap.parse_args()
    if args.render:
        (OUT / "hybrid.md").write_text(render(json.loads((OUT / "hybrid.json").read_text())))
        return
    t_start = time.time()
    built = {c: open_or_build(c, args.root, args.rebuild) for c in ("cranfield", "nfcorpus", "scifact")}  # dense of scifact cached last
    indexes = {c: built[c] for c in COLLECTIONS}
    lists, qids, qrels, enc_ms = {}, {}, {}, {}
    for c, idx in indexes.items():
        enc = idx.load_encoder()
        for split in splits_of(c):
            ds = load_beir(DATA / c, split)
            qv = enc.encode_queries(ds.query_texts(), ds.query_ids)
            if split == "test":
                enc_ms[c] = {m: 1e3 * s / len(qv) for m, s in enc.last_seconds.items()}
            _, _, lst, _ = idx.search_detailed(qv, MAX_DEPTH, HybridParams(depth=MAX_DEPTH))
            lists[c, split], qids[c, split], qrels[c, split] = lst, list(qv.ids), ds.qrels
            print(f"{c}/{split}: {len(qv)} queries searched", file=sys.stderr, flush=True)

    # 1. the label-free default, chosen on the choosing splits only
    choice_rows = []
    for cand in CANDIDATES:
        for depth in (100, 1000):
            vals = {f"{c}/{s}": ndcg(fused(lists[c, s], DEFAULT_SET, cand, depth), indexes[c], qids[c, s],
                                     qrels[c, s]) for c, s in CHOOSING}
            choice_rows.append({**cand, "depth": depth, **vals, "mean": float(np.mean(list(vals.values())))})
    best = max(choice_rows, key=lambda r: r["mean"])
    default = {"fusion": best["fusion"], "rrf_k": best["rrf_k"]}
    default_depth = best["depth"]

    # 2. test figures
    test: dict[str, dict] = {}
    for c, idx in indexes.items():
        lst, q, qr = lists[c, "test"], qids[c, "test"], qrels[c, "test"]
        row: dict[str, float] = {m: ndcg(fused(lst, (m,), default, MAX_DEPTH), idx, q, qr) for m in MEMBERS}
        for members in SETS:
            row["+".join(members)] = ndcg(fused(lst, members, default, default_depth), idx, q, qr)
            for cand in CANDIDATES:
                row[f"{'+'.join(members)} {cand['fusion']}{int(cand['rrf_k']) if cand['fusion'] == 'rrf' else ''}"] = \
                    ndcg(fused(lst, members, cand, default_depth), idx, q, qr)
        if (c, "train") in lists:  # tuned on the collection's own train split
            for members in SETS:
                tr = lists[c, "train"]
                ch = tune_fusion([(tr[m][0][:, :default_depth], tr[m][1][:, :default_depth]) for m in members],
                                 idx.doc_ids, qids[c, "train"], qrels[c, "train"],
                                 step=0.1 if len(members) <= 3 else 0.2)
                row[f"{'+'.join(members)} tuned"] = ndcg(
                    fused(lst, members, {"fusion": ch.fusion, "rrf_k": ch.rrf_k}, default_depth, ch.weights),
                    idx, q, qr)
                row[f"{'+'.join(members)} tuned setting"] = {"fusion": ch.fusion, "weights": list(ch.weights),
                                                             "rrf_k": ch.rrf_k, "train nDCG@10": ch.score}
        row["depth"] = {str(d): ndcg(fused(lst, DEFAULT_SET, default, d), idx, q, qr) for d in DEPTHS}
        test[c] = row

    # 3. latency (exact, k=10, 1 thread; query encoding excluded and reported apart)
    speed = {}
    for c, idx in indexes.items():
        ds = load_beir(DATA / c, "test")
        qv = idx.load_encoder().encode_queries(ds.query_texts(), ds.query_ids)
        speed[c] = {"per_representation_p50_ms": {}, "by_depth_p50_ms": {}, "query_encoding_ms": enc_ms[c]}
        three = ("bm25", "dense", "splade-doc")
        sub = HybridIndex(idx.path, idx.manifest, [idx.member(m) for m in three])
        speed[c]["bm25+dense+splade-doc"] = latency(sub, qv, HybridParams(
            depth=default_depth, threads=1, sparse=ExactParams(threads=1), **default))
        for d in (10, 100, 1000):
            speed[c]["by_depth_p50_ms"][str(d)] = latency(sub, qv, HybridParams(
                depth=d, threads=1, sparse=ExactParams(threads=1), **default))["total"]
        print(f"{c}: latency done", file=sys.stderr, flush=True)

    report = {"protocol": __doc__, "choosing_splits": [f"{c}/{s}" for c, s in CHOOSING],
              "candidates": choice_rows, "default": {**default, "depth": default_depth}, "test": test,
              "latency": speed, "seconds": time.time() - t_start}
    OUT.mkdir(exist_ok=True)
    (OUT / "hybrid.json").write_text(json.dumps(report, indent=1))
    (OUT / "hybrid.md").write_text(render(report))
    print(render(report))


def render(r: dict) -> str:
    lines = ["# Hybrid retrieval: default fusion chosen on train/dev, test nDCG@10", "",
             f"Choosing splits: {', '.join(r['choosing_splits'])} (default hybrid bm25+dense, equal weights).", "",
             "| fusion | depth | " + " | ".join(r["choosing_splits"]) + " | mean |",
             "|---|---|" + "---|" * (len(r["choosing_splits"]) + 1)]
    for row in r["candidates"]:
        name = row["fusion"] + (f" k={row['rrf_k']:g}" if row["fusion"] == "rrf" else "")
        lines.append(f"| {name} | {row['depth']} | " + " | ".join(f"{row[s]:.4f}" for s in r["choosing_splits"])
                     + f" | {row['mean']:.4f} |")
    d = r["default"]
    lines += ["", f"**Chosen default:** {d['fusion']}" + (f" k={d['rrf_k']:g}" if d["fusion"] == "rrf" else "")
              + f", depth {d['depth']}, equal weights.", "", "## Test nDCG@10", ""]
    cols = list(COLLECTIONS)
    lines += ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    keys = [k for k in r["test"][cols[0]] if not isinstance(r["test"][cols[0]][k], dict)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{r['test'][c][k]:.4f}" if k in r["test"][c] else "-" for c in cols)
                     + " |")
    for members in ("bm25+dense", "bm25+dense+splade-doc"):
        lines += ["", f"Gain of {members} (default fusion) over the best single representation:", ""]
        for c in cols:
            t = r["test"][c]
            best_single = max(MEMBERS, key=lambda m: t[m])
            lines.append(f"- {c}: {t[members]:.4f} vs {best_single} {t[best_single]:.4f}: "
                         f"{100 * (t[members] / t[best_single] - 1):+.1f}%")
    lines += ["", "## Depth per representation (default fusion, bm25+dense): test nDCG@10", "",
              "| depth | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for dd in DEPTHS:
        lines.append(f"| {dd} | " + " | ".join(f"{r['test'][c]['depth'][str(dd)]:.4f}" for c in cols) + " |")
    lines += ["", "## Latency, p50 ms, k=10, exact, 1 thread, one query at a time (query encoding excluded)", "",
              "| collection | bm25 | dense | splade-doc | fusion | total | total at depth 10 / 100 / 1000 | "
              "encoding ms/query bm25 / dense / splade-doc / splade |", "|---|---|---|---|---|---|---|---|"]
    for c in cols:
        s = r["latency"][c]
        t = s["bm25+dense+splade-doc"]
        e = s["query_encoding_ms"]
        lines.append(f"| {c} | {t['bm25']:.3f} | {t['dense']:.3f} | {t['splade-doc']:.3f} | {t['fusion']:.3f} | "
                     f"{t['total']:.3f} | " + " / ".join(f"{s['by_depth_p50_ms'][x]:.3f}" for x in ("10", "100", "1000"))
                     + " | " + " / ".join(f"{e[m]:.2f}" for m in MEMBERS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
