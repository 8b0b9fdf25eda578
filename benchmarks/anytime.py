"""Anytime search (score-at-a-time, impact-ordered postings) against exact and approximate search.

    python benchmarks/anytime.py [--data ../shared/data] [--synthetic-docs 1000000] [--queries 200]
                                 [--passes 3] [--root indexes/anytime-bench] [--out benchmarks/results/anytime]

For SciFact (BM25 and inference-free SPLADE-tiny, test queries) and a synthetic SPLADE-like
collection (``benchmarks/synthetic.py``, ``--synthetic-docs``; 0 skips it):

* exact search (block-max MaxScore) gives the reference top 10 and the exact latency;
* anytime search (``AnytimeParams``) at a grid of ``max_postings`` and of ``budget_ms``;
* on SciFact, the Seismic-style approximate index (default build, a few ``query_cut`` values);
  on the synthetic set the approximate index takes minutes to build, so the approximate
  and pyseismic-lsr latencies come from the committed ``approx_vs_peers_synthetic1m.json``
  (another run; said so in the output), and anytime is also run at a budget equal to
  pyseismic-lsr's fastest latency at recall@10 >= 0.90 there.

Reported per setting: recall@10 against the exact top 10, nDCG@10 (SciFact), mean postings
processed, latency one query at a time on one thread (mean and p99 over the queries; the median
over ``--passes`` passes, every setting interleaved in each pass). Indexes are built once under
``--root`` and reused. Writes ``OUT_<collection>.json``, ``OUT.md`` and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sparsearch.evaluation import evaluate, load_beir, recall_at_k, time_queries, to_run  # noqa: E402
from sparsearch.index import Index, anytime, build_index  # noqa: E402
from sparsearch.index.approximate import ApproximateIndex  # noqa: E402
from sparsearch.searching import AnytimeParams, ApproxParams, ExactParams  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402

MAX_POSTINGS = (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)
BUDGETS_MS = {"scifact": (0.005, 0.01, 0.02, 0.05, 0.1, 0.2), "synthetic": (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)}
QUERY_CUTS = (3, 5, 10, 20)
PEERS_FILE = ROOT / "benchmarks" / "results" / "approx_vs_peers_synthetic1m.json"


def open_or_build_scifact(data: Path, root: Path, encoder: str) -> Index:
    out = root / f"scifact-{encoder}"
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "sparsearch.cli", "index", str(data / "scifact"), "--out", str(out),
                        "--encoder", encoder], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return Index.open(out)


def open_or_build_synthetic(root: Path, n_docs: int) -> Index:
    import synthetic

    out = root / f"synthetic-{n_docs // 1000}k"
    if not (out / "manifest.json").exists():
        build_index(SparseBatch.concat(list(synthetic.documents(n_docs))), out, overwrite=True)
    return Index.open(out)


def timed(search, singles: list[SparseBatch]) -> tuple[np.ndarray, list]:
    """Per-query latency (s) and the per-query (scores, docnums) of one pass."""
    out: list = [None] * len(singles)

    def one(i: int) -> None:
        out[i] = search(singles[i])

    return time_queries(one, len(singles)), out


def seismic_at(recall: float) -> dict | None:
    """pyseismic-lsr's fastest committed setting at ``recall`` or above (1 thread), or None."""
    if not PEERS_FILE.exists():
        return None
    rows = [r for rows in json.loads(PEERS_FILE.read_text()).values() for r in rows]
    ok = [r for r in rows if r.get("system") == "pyseismic-lsr" and r.get("recall", 0) >= recall]
    return min(ok, key=lambda r: r["mean_ms"]) if ok else None


def run_collection(name: str, idx: Index, qv: SparseBatch, qids: list[str], qrels, passes: int,
                   approx: ApproximateIndex | None, budgets: tuple[float, ...]) -> list[dict]:
    singles = [qv[i: i + 1] for i in range(len(qv))]
    ref_s, ref_d = idx.search(qv, 20, ExactParams(), dtype=np.float64)  # deeper than 10: tie-aware recall
    settings: list[tuple[str, str, object, object]] = [("exact", "block-max MaxScore", idx, ExactParams(threads=1))]
    settings += [("anytime", f"max_postings={m:,}", idx, AnytimeParams(max_postings=m, threads=1)) for m in MAX_POSTINGS]
    settings += [("anytime", f"budget_ms={b:g}", idx, AnytimeParams(budget_ms=b, threads=1)) for b in budgets]
    if approx is not None:
        settings += [("approximate", f"query_cut={c}", approx, ApproxParams(query_cut=c, threads=1)) for c in QUERY_CUTS]
    t0 = time.perf_counter()
    idx.impact_ordered()
    build_s = time.perf_counter() - t0
    lat: dict[int, list[np.ndarray]] = {i: [] for i in range(len(settings))}
    hits: dict[int, list] = {}
    for p in range(passes):
        order = range(len(settings)) if p % 2 == 0 else reversed(range(len(settings)))
        for i in order:
            _, label, searcher, params = settings[i]
            ms, out = timed(lambda q, s=searcher, pr=params: s.search(q, 10, pr), singles)
            lat[i].append(ms)
            hits[i] = out
    rows = []
    for i, (system, label, _, params) in enumerate(settings):
        found = np.concatenate([h[1] for h in hits[i]])
        scores = np.concatenate([h[0] for h in hits[i]])
        mean_ms = float(np.median([x.mean() for x in lat[i]]) * 1e3)
        p99_ms = float(np.median([np.percentile(x, 99) for x in lat[i]]) * 1e3)
        row = {"collection": name, "system": system, "setting": label, "mean_ms": mean_ms, "p99_ms": p99_ms,
               "recall@10": float(recall_at_k(found, ref_d, 10, exact_scores=ref_s))}
        if qrels is not None:
            row["nDCG@10"] = evaluate(to_run(scores, found, idx.doc_ids, qids), qrels, ["nDCG@10"])["nDCG@10"]
        if system == "anytime":
            row["postings"] = float(anytime.search(idx, qv, 10, params).postings.mean())
        rows.append(row)
    io = idx.impact_ordered()
    rows.append({"collection": name, "system": "impact-ordered postings", "setting": "built in memory",
                 "build_s": build_s, "bytes": io.nbytes, "index_postings": idx.stats()["n_postings"]})
    return rows


def render(all_rows: list[dict], out: Path, notes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md = ["# Anytime search (score-at-a-time over impact-ordered postings) vs exact and approximate", "",
          "2 shared cores; k=10, one query at a time on one thread; recall@10 against the exact top 10; latency the "
          "median over passes of each setting's mean (every setting interleaved in each pass). "
          "`benchmarks/anytime.py`.", ""] + notes
    names = list(dict.fromkeys(r["collection"] for r in all_rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in all_rows if r["collection"] == name]
        md += ["", f"## {name}", "", "| system | setting | recall@10 | nDCG@10 | mean ms | p99 ms | postings/query |",
               "|---|---|---|---|---|---|---|"]
        for r in rows:
            if "recall@10" not in r:
                md.append(f"| {r['system']} | {r['setting']}: {r['bytes'] / 2**20:.1f} MiB for "
                          f"{r['index_postings']:,} postings, {r['build_s']:.2f} s |  |  |  |  |  |")
                continue
            nd = f"{r['nDCG@10']:.4f}" if "nDCG@10" in r else ""
            po = f"{r['postings']:,.0f}" if "postings" in r else ""
            md.append(f"| {r['system']} | {r['setting']} | {r['recall@10']:.3f} | {nd} | {r['mean_ms']:.3f} | "
                      f"{r['p99_ms']:.3f} | {po} |")
        for system, marker in (("anytime", "o"), ("approximate", "s"), ("exact", "*"), ("pyseismic-lsr", "^")):
            pts = sorted((r["mean_ms"], r["recall@10"]) for r in rows if r.get("system") == system
                         and "recall@10" in r and (system != "anytime" or r["setting"].startswith("budget")))
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=system)
        ax.set_xscale("log")
        ax.set_xlabel("mean latency, ms (1 thread)")
        ax.set_ylabel("recall@10")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--synthetic-docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200, help="synthetic queries")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--root", type=Path, default=ROOT / "indexes" / "anytime-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "anytime")
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    all_rows: list[dict] = []
    notes: list[str] = []
    ds = load_beir(a.data / "scifact")
    for enc in ("bm25", "splade-doc"):
        idx = open_or_build_scifact(a.data, a.root, enc)
        qv = idx.load_encoder().encode_queries(ds.query_texts(), ds.query_ids)
        approx = ApproximateIndex.open(idx) if ApproximateIndex.exists(idx) else ApproximateIndex.build(idx)
        rows = run_collection(f"scifact {enc}", idx, qv, ds.query_ids, ds.qrels, a.passes, approx, BUDGETS_MS["scifact"])
        all_rows += rows
        (a.out.parent / f"{a.out.name}_scifact_{enc}.json").write_text(json.dumps(rows, indent=1))
    if a.synthetic_docs:
        import synthetic

        name = f"synthetic {a.synthetic_docs // 1000}k"
        idx = open_or_build_synthetic(a.root, a.synthetic_docs)
        peer = seismic_at(0.90)
        budgets = BUDGETS_MS["synthetic"]
        if peer is not None:
            budgets = tuple(sorted(set(budgets) | {round(peer["mean_ms"], 3)}))
            notes.append(f"Synthetic: pyseismic-lsr's fastest setting at recall@10 >= 0.90 in the committed "
                         f"`{PEERS_FILE.name}` (another run, same machine class) is {peer['setting']}: recall "
                         f"{peer['recall']:.3f} at {peer['mean_ms']:.3f} ms; anytime is run at that budget too.")
            all_rows.append({"collection": name, "system": "pyseismic-lsr", "setting": peer["setting"] + " (committed run)",
                             "mean_ms": peer["mean_ms"], "p99_ms": peer.get("p99_ms", float("nan")),
                             "recall@10": peer["recall"]})
        rows = run_collection(name, idx, synthetic.queries(a.queries), [str(i) for i in range(a.queries)], None,
                              a.passes, None, budgets)
        all_rows += rows
        (a.out.parent / f"{a.out.name}_synthetic.json").write_text(json.dumps(rows, indent=1))
    render(all_rows, a.out, notes)


if __name__ == "__main__":
    main()
