"""How build time, memory, index size and latency grow with the collection: 1M, 3M, 10M documents.

Synthetic SPLADE-like documents (``synthetic.py``: Zipf over 30,522 terms, ~120 non-zeros each,
the same stream at every size, so a smaller collection is a prefix of a larger one) and 200
synthetic queries (~30 non-zeros). For every size, three child processes, so that each phase's
peak resident memory (``ru_maxrss``) is its own:

``build``
    generate the documents in chunks of 100k and build the exact index from the stream
    (``build_index``); generation time is measured inside the stream and reported apart.
``approx``
    open the index and build its Seismic-style approximate index (``ApproximateIndex.build``,
    saved next to it) with fixed settings (``--n-postings``, centroid_fraction 0.1,
    summary_energy 0.4, the defaults otherwise; the same at every size).
``search``
    exact latency (block-max MaxScore; one query at a time on one thread: mean, p50, p99), then
    the approximate index's fastest setting reaching recall@10 0.95 (and 0.90, 0.99) against the exact
    top-10, from one :func:`sparsearch.index.approximate.tune` grid of ``query_cut`` x
    ``heap_factor`` over the same queries (batch timing), re-timed one query at a time.

A size whose phase fails (out of memory, killed) is recorded with the phase, its exit status
and the peak memory it reached, and the sizes above it are skipped. Results go to
``benchmarks/results/scale.json`` (merged by size); ``--render`` writes ``scale.md`` (table and
log-log growth exponents: least-squares slope of log(y) on log(N)) and ``scale.png``.

    python benchmarks/scale.py --sizes 1000000 3000000 10000000
    python benchmarks/scale.py --render
    # lambda proportional to the collection (3,500 per 1M documents), results in scale_lambda.*:
    python benchmarks/scale.py --sizes 1000000 3000000 --n-postings-per-million 3500 --tag lambda

A file ``scale[_TAG]_notes.md`` next to the results (the reading of a run, written by hand) is
appended to the rendered table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results"
K = 10
QUERY_CUTS = (3, 5, 8, 10, 15, 20, 30)
HEAP_FACTORS = (0.6, 0.7, 0.8, 0.9, 1.0)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------- phases (children)
def phase_build(n: int, path: Path) -> dict[str, Any]:
    from synthetic import documents

    from sparsearch.index import build_index

    gen_s = 0.0

    def timed(stream: Iterator) -> Iterator:
        nonlocal gen_s
        while True:
            t = time.perf_counter()
            try:
                b = next(stream)
            except StopIteration:
                gen_s += time.perf_counter() - t
                return
            gen_s += time.perf_counter() - t
            yield b

    t0 = time.perf_counter()
    index = build_index(timed(documents(n)), path, overwrite=True)
    total = time.perf_counter() - t0
    st = index.stats()
    return {"build_s": total - gen_s, "generation_s": gen_s, "build_peak_gib": _peak_gib(),
            "index_bytes": int(st["index_bytes"]), "index_dir_bytes": _dir_bytes(path),
            "n_postings": int(st["n_postings"]), "n_docs": int(st["n_docs"])}


def phase_approx(path: Path, n_postings: int) -> dict[str, Any]:
    from sparsearch.index import Index
    from sparsearch.index.approximate import APPROX_VERSION, ApproxBuildParams, ApproximateIndex, GlobalPruning

    index = Index.open(path)
    params = ApproxBuildParams(pruning=GlobalPruning(n_postings=n_postings), centroid_fraction=0.1,
                               summary_energy=0.4)
    t = time.perf_counter()
    ax = ApproximateIndex.build(index, params, save=True)
    st = ax.stats()
    return {"approx_build_s": time.perf_counter() - t, "approx_peak_gib": _peak_gib(),
            "approx_bytes": int(st["memory_bytes"]), "approx_forward_bytes": st["forward_bytes"],
            "approx_lists_bytes": st["lists_bytes"], "approx_summary_bytes": st["summary_bytes"],
            "approx_params": params.to_dict(), "approx_format": APPROX_VERSION}


def phase_search(path: Path, n_queries: int) -> dict[str, Any]:
    from synthetic import queries

    from sparsearch.evaluation import time_queries
    from sparsearch.index import Index
    from sparsearch.index.approximate import ApproximateIndex, tune
    from sparsearch.searching import ApproxParams, ExactParams

    index = Index.open(path)
    qs = queries(n_queries).remap(index.vocab)
    rows = [qs[i:i + 1] for i in range(len(qs))]
    one = ExactParams(threads=1)
    lat = time_queries(lambda i: index.search(rows[i], K, one), len(rows))
    out: dict[str, Any] = {"exact_ms_mean": 1e3 * float(lat.mean()), "exact_ms_p50": 1e3 * float(np.median(lat)),
                           "exact_ms_p99": 1e3 * float(np.quantile(lat, 0.99)), "n_queries": len(rows)}
    ax = ApproximateIndex.open(index, mmap=False, verify=False)
    q_indptr, terms, weights = index.prepare_queries(qs)
    grid = tune(ax, qs, 0.95, k=K, query_cuts=QUERY_CUTS, heap_factors=HEAP_FACTORS, sample=len(qs))["grid"]
    for target in (0.95, 0.90, 0.99):
        ok = [g for g in grid if g["recall"] >= target]  # the fastest meeting it, else the most accurate
        r = (min(ok, key=lambda g: (g["mean_ms"], -g["recall"])) if ok
             else max(grid, key=lambda g: (g["recall"], -g["mean_ms"])))
        r = {**r, "met": bool(ok)}
        p = ApproxParams(query_cut=r["query_cut"], heap_factor=r["heap_factor"], threads=1).check()

        def search(i: int, p: ApproxParams = p) -> None:
            a, b = q_indptr[i], q_indptr[i + 1]
            ax.search_prepared(np.array([0, b - a]), terms[a:b], weights[a:b], K, p)
        lat = time_queries(search, len(rows))
        tag = f"{int(round(target * 100))}"
        out.update({f"approx{tag}_met": bool(r["met"]), f"approx{tag}_recall": float(r["recall"]),
                    f"approx{tag}_setting": f"query_cut={r['query_cut']} heap_factor={r['heap_factor']}",
                    f"approx{tag}_ms_mean": 1e3 * float(lat.mean()),
                    f"approx{tag}_ms_p99": 1e3 * float(np.quantile(lat, 0.99))})
    out["grid"] = grid
    out["search_peak_gib"] = _peak_gib()
    return out


# ------------------------------------------------------------------ driver (parent)
def n_postings_for(args: argparse.Namespace, n: int) -> int:
    """Seismic's lambda for ``n`` documents: fixed, or proportional to ``n`` (``--n-postings-per-million``)."""
    if args.n_postings_per_million:
        return max(1, round(args.n_postings_per_million * n / 1e6))
    return int(args.n_postings)


def results_path(tag: str, suffix: str) -> Path:
    return RESULTS / f"scale{'_' + tag if tag else ''}{suffix}"


def run_phase(args: argparse.Namespace, phase: str, n: int, path: Path) -> tuple[dict[str, Any] | None, str]:
    cmd = [sys.executable, __file__, "--phase", phase, "--docs", str(n), "--path", str(path),
           "--queries", str(args.queries), "--n-postings", str(n_postings_for(args, n))]
    print(f"[{time.strftime('%H:%M:%S')}] {n:,} docs: {phase}", flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not last.startswith("{"):
        why = (f"{phase} failed after {wall:.0f} s with exit status {p.returncode}"
               + (" (killed: out of memory?)" if p.returncode in (-9, 137) else ""))
        print(why, flush=True)
        return None, why
    res = json.loads(last)
    print(f"    {res}", flush=True)
    return res, ""


def drive(args: argparse.Namespace) -> None:
    out_json = results_path(args.tag, ".json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    for n in args.sizes:
        path = args.work / f"synthetic-{n}"
        row: dict[str, Any] = {"docs": n, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}
        for phase in ("build", "approx", "search"):
            res, why = run_phase(args, phase, n, path)
            if res is None:
                row["failed"] = why
                break
            row.update(res)
        results[str(n)] = row
        out_json.write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
        if "failed" in row:
            print(f"stopping: {row['failed']}", flush=True)
            break
    render(results, args.tag)


# ------------------------------------------------------------------------- report
SERIES = [("build_s", "exact build s"), ("approx_build_s", "approximate build s"),
          ("build_peak_gib", "exact build peak GiB"), ("approx_peak_gib", "approximate build peak GiB"),
          ("index_bytes", "exact index bytes"), ("approx_bytes", "approximate index bytes"),
          ("exact_ms_mean", "exact ms/query"), ("approx95_ms_mean", "approximate ms/query at recall 0.95"),
          ("approx90_ms_mean", "approximate ms/query at recall 0.90")]


def _met(r: dict[str, Any], key: str) -> bool:
    """False for an approximate latency whose recall target was not met: it is on no curve."""
    return not key.startswith("approx9") or bool(r.get(key.replace("ms_mean", "met")))


def growth_exponent(ns: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(n): y ~ n^slope."""
    pts = [(np.log(n), np.log(y)) for n, y in zip(ns, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _cell(r: dict[str, Any], tag: str) -> str:
    if f"approx{tag}_ms_mean" not in r:
        return "not measured"
    return (f"{r[f'approx{tag}_ms_mean']:.2f} ({r[f'approx{tag}_setting']}, {r[f'approx{tag}_recall']:.3f}"
            f"{'' if r[f'approx{tag}_met'] else ', target not met'})")


def _lambda(r: dict[str, Any]) -> str:
    return str(r.get("approx_params", {}).get("pruning", {}).get("n_postings", "?"))


def render(results: dict[str, Any], tag: str = "") -> None:
    rows = sorted(results.values(), key=lambda r: r["docs"])
    ok = [r for r in rows if "failed" not in r]
    lines = ["# Scale: 1M to 10M synthetic documents", "",
             "Written by `benchmarks/scale.py` (its docstring has the protocol and commands). Synthetic "
             "SPLADE-like documents (~120 non-zeros, Zipf over 30,522 terms), 200 synthetic queries, k=10; "
             "latency: one query at a time on one thread (mean), after a warm-up; the approximate setting is "
             "the fastest of a query_cut x heap_factor grid reaching the recall target against the exact "
             "top-10. Peak memory: the phase's own process (`ru_maxrss`). Machine: "
             f"{rows[0].get('cores', '?') if rows else '?'} shared cores, 24 GiB.", ""]
    if ok:
        p = {k: v for k, v in ok[0].get("approx_params", {}).items() if k != "pruning"}
        lines += [f"Approximate build settings (every size; lambda = n_postings per column): {json.dumps(p)}", "",
                  "| docs | postings | gen s | exact build s | peak GiB | exact index MiB | lambda | approx format | "
                  "approx build s | approx peak GiB | approx MiB (fwd / lists / summaries) | exact ms | p99 ms | "
                  "approx ms @0.95 (setting, recall) | approx ms @0.90 (setting, recall) | approx ms @0.99 (setting, recall) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ok:
            mib = (lambda b: b / 2**20)
            lines.append(
                f"| {r['docs']:,} | {r['n_postings']:,} | {r['generation_s']:.0f} | {r['build_s']:.0f} | "
                f"{r['build_peak_gib']:.1f} | {mib(r['index_bytes']):.0f} | {_lambda(r)} | "
                f"{r.get('approx_format', '?')} | {r['approx_build_s']:.0f} | "
                f"{r['approx_peak_gib']:.1f} | {mib(r['approx_bytes']):.0f} ({mib(r['approx_forward_bytes']):.0f} / "
                f"{mib(r['approx_lists_bytes']):.0f} / {mib(r['approx_summary_bytes']):.0f}) | "
                f"{r['exact_ms_mean']:.2f} | {r['exact_ms_p99']:.2f} | "
                f"{_cell(r, '95')} | {_cell(r, '90')} | {_cell(r, '99')} |")
        ns = [r["docs"] for r in ok]
        lines += ["", "Growth exponents (y ~ N^e, least squares over the sizes measured: "
                  + ", ".join(f"{n:,}" for n in ns) + "; approximate latency only over the sizes where "
                  "the target was met):", "", "| quantity | e |", "|---|---|"]
        for key, label in SERIES:
            met = [r for r in ok if _met(r, key)]
            e = growth_exponent([r["docs"] for r in met], [r.get(key) for r in met])
            lines.append(f"| {label} | {'n/a' if e is None else f'{e:.2f}'} |")
    failed = [r for r in rows if "failed" in r]
    for r in failed:
        lines += ["", f"**{r['docs']:,} documents: {r['failed']}.**"]
    notes = results_path(tag, "_notes.md")
    if notes.exists():  # the reading of a run, written by hand, kept through re-renders
        lines += ["", notes.read_text().rstrip()]
    results_path(tag, ".md").write_text("\n".join(lines) + "\n")
    if len(ok) >= 1:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, keys, ylabel in (
                (axes[0], ("build_s", "approx_build_s"), "build seconds"),
                (axes[1], ("build_peak_gib", "approx_peak_gib", "index_bytes", "approx_bytes"), "GiB"),
                (axes[2], ("exact_ms_mean", "approx95_ms_mean", "approx90_ms_mean"), "ms / query (1 thread)")):
            for key in keys:
                pts = [(r["docs"], r[key] / (2**30 if key.endswith("bytes") else 1)) for r in ok if _met(r, key)]
                if pts:
                    ax.loglog(*zip(*pts), "o-", label=dict(SERIES).get(key, key.replace("_", " ")))
            ax.set_xlabel("documents")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(results_path(tag, ".png"), dpi=110)
    print(results_path(tag, ".md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--n-postings", type=int, default=3500, help="Seismic's lambda (as the 1M peer runs)")
    ap.add_argument("--n-postings-per-million", type=float, default=None,
                    help="lambda proportional to the collection (this many per 1M documents) instead of fixed")
    ap.add_argument("--tag", default="", help="results go to scale_TAG.json/md/png")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sparsearch-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the indexes after each size")
    ap.add_argument("--render", action="store_true", help="only rewrite scale.md/png from scale.json")
    ap.add_argument("--phase", choices=["build", "approx", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        res = {"build": lambda: phase_build(args.docs, args.path),
               "approx": lambda: phase_approx(args.path, args.n_postings),
               "search": lambda: phase_search(args.path, args.queries)}[args.phase]()
        print(json.dumps(res), flush=True)
        return
    if args.render:
        render(json.loads(results_path(args.tag, ".json").read_text()), args.tag)
        return
    drive(args)


if __name__ == "__main__":
    main()
