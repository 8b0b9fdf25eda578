"""Encoding + indexing throughput with Ray (1 and 2 local workers) vs the plain single-process path.

    flock /tmp/sparsearch-bench.lock .venv/bin/python benchmarks/ray_encoding.py \
        [--data ../shared/data/scifact] [--splade-docs 2000] [--bm25-copies 10] [--repeats 2]

Configurations, each in a fresh Python process (a cold start, as a ``sparsearch index`` run):

* ``plain-tN``: what ``sparsearch index`` does without ``--ray``: ``get_encoder``, ``fit``,
  ``encode_documents`` of the whole corpus, ``build_index`` (one segment); SPLADE's torch and
  ONNX Runtime use N threads (BM25 analysis is single-threaded Python whatever N).
* ``ray-wN``: ``build_index_ray`` with N workers of 1 thread each on a local Ray instance with
  N CPUs; ``ray.init`` is timed apart from the build (a cluster is started once, not per build).

Both include model loading (the ONNX export is cached on disk beforehand, for both alike), no
document store, and the SPLADE vector cache off (``SPARSEARCH_NO_CACHE=1``). Reported: docs/s of
each, the ray-w2 / ray-w1 throughput ratio, Ray's overhead against plain-t1 (seconds and ratio,
with and without ``ray.init``), the per-stage seconds of the Ray builds, a check that 1 and 2
workers wrote identical segments and that the Ray index returns what the plain one does, and
per-document sizes (postings, bytes on disk, RAM of a loaded index) for the README's 100M note.

Corpora: SciFact (5,183 docs) for BM25, and SciFact repeated ``--bm25-copies`` times (ids
suffixed; same texts, so the same vocabulary) to show BM25 once the work outweighs the fixed
costs; the first ``--splade-docs`` SciFact documents for SPLADE-tiny (``splade``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("SPARSEARCH_BENCH_TMP", "/tmp/sparsearch-ray-bench"))


def corpus(data: str, docs: int, copies: int) -> tuple[list[str], list[str]]:
    from sparsearch.evaluation import load_beir

    ds = load_beir(data)
    texts, ids = ds.doc_texts(), ds.doc_ids
    if docs:
        texts, ids = texts[:docs], ids[:docs]
    if copies > 1:
        texts = texts * copies
        ids = [f"{i}#{c}" for c in range(copies) for i in ids]
    return texts, ids


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------ one configuration
def run_one(cfg: dict) -> dict:
    """Build one index as ``cfg`` says; returns timings (runs in its own process)."""
    os.environ["SPARSEARCH_NO_CACHE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts, ids = corpus(cfg["data"], cfg["docs"], cfg["copies"])
    from sparsearch.encoders import get_encoder

    opts = {"threads": cfg["threads"], "progress": False} if cfg["encoder"] == "splade" else {}
    out = Path(cfg["out"])
    shutil.rmtree(out, ignore_errors=True)
    res: dict = {"n_docs": len(texts)}
    if cfg["kind"] == "plain":
        from sparsearch.index import build_index

        t0 = time.perf_counter()
        enc = get_encoder(cfg["encoder"], **opts)
        enc.fit(texts)
        batch = enc.encode_documents(texts, ids)
        t1 = time.perf_counter()
        build_index(batch, out, encoder=enc)
        res.update(seconds=time.perf_counter() - t0, encode_seconds=t1 - t0, index_seconds=time.perf_counter() - t1)
    else:
        import ray

        from sparsearch.distributed import build_index_ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cfg["workers"], include_dashboard=False, log_to_driver=False)
        t1 = time.perf_counter()
        idx = build_index_ray(out, texts=texts, ids=ids, encoder=get_encoder(cfg["encoder"], **opts),
                              shard_size=cfg["shard_size"], workers=cfg["workers"], threads_per_worker=1)
        t2 = time.perf_counter()
        ray.shutdown()
        res.update(seconds=t2 - t1, init_seconds=t1 - t0, stages=idx.manifest["distributed"]["seconds"])
    res["docs_per_s"] = len(texts) / res["seconds"]
    return res


def memory_of(path: str) -> dict:
    """Disk and RAM figures of an index, split into per-document and fixed parts.

    RAM of a loaded index (``mmap=False``) = posting arrays (per document) + the document ids
    (Python strings in a list, per document) + per segment a term table (``17 B x terms``) + per
    index the vocabulary (Python strings in a list and a dict). The parts are computed from the
    loaded objects; the resident-size growth of the load is reported beside them as a check.
    """
    import sys as _sys

    from sparsearch.index import Index

    before = rss_bytes()
    idx = Index.open(path, mmap=False)
    rss_growth = rss_bytes() - before
    st = idx.stats()
    n = st["n_docs"]
    tables = ("term_post_ptr", "term_block_ptr", "term_max")
    term_table = sum(getattr(s, a).nbytes for s in idx.segments for a in tables)
    posting_arrays = sum(getattr(s, a).nbytes for s in idx.segments for a in
                         ("block_last", "block_max", "block_bits", "block_word_ptr", "words", "impacts"))
    doc_ids = sum(_sys.getsizeof(i) + 8 for s in idx.segments for i in s.doc_ids)  # str + list slot
    terms = idx.vocab.terms
    vocab = _sys.getsizeof(terms) + _sys.getsizeof(idx.vocab._index) + sum(_sys.getsizeof(t) for t in terms)
    return {"n_docs": n, "n_terms": st["n_terms"], "n_segments": st["n_segments"],
            "postings_per_doc": st["n_postings"] / n, "bytes_per_posting": st["bytes_per_posting"],
            "disk_bytes_per_doc": st["index_bytes"] / n, "ram_postings_bytes_per_doc": posting_arrays / n,
            "ram_doc_ids_bytes_per_doc": doc_ids / n, "term_table_bytes_per_segment": term_table / st["n_segments"],
            "vocab_ram_bytes_per_term": vocab / max(len(terms), 1), "rss_growth_bytes": rss_growth,
            "ram_parts_bytes": posting_arrays + doc_ids + term_table + vocab}


def search_costs(data: str, path: str, shards: int = 2, single: int = 100) -> dict:
    """Sharded search vs the one index: batch of the test queries (k=10, 1 thread per searcher)
    and one query at a time (fan-out cost per request), for each searcher backend."""
    import numpy as np
    import ray

    from sparsearch.distributed import ShardedIndex
    from sparsearch.evaluation import load_beir, time_queries
    from sparsearch.index import Index
    from sparsearch.searching import ExactParams

    ds = load_beir(data)
    ray.init(num_cpus=shards, include_dashboard=False, log_to_driver=False)
    idx = Index.open(path)
    q = idx.load_encoder().encode_queries(ds.query_texts(), ds.query_ids)
    out: dict = {"n_queries": len(q), "shards": shards}

    def timed(search) -> dict:
        search(q[:5])  # compile, warm up
        t = time.perf_counter()
        ref = search(q)
        batch = time.perf_counter() - t
        lat = time_queries(lambda i: search(q[i:i + 1]), min(single, len(q)), warmup=0)  # warm: see above
        return {"batch_ms": 1e3 * batch, "single_query_ms_median": 1e3 * float(np.median(lat)), "result": ref}

    one_thread = ExactParams(threads=1)
    base = timed(lambda x: idx.search(x, 10, one_thread))
    ref = base.pop("result")
    out["one_index"] = base
    for backend in ("inline", "process", "ray"):
        with ShardedIndex.open([path], shards=shards, backend=backend, threads=1) as sh:
            r = timed(lambda x: sh.search(x, 10))
            got = r.pop("result")
            r["identical"] = bool(np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]))
            out[backend] = r
    ray.shutdown()
    return out


def in_subprocess(flag: str, payload: str) -> dict:
    r = subprocess.run([sys.executable, __file__, flag, payload], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{flag} {payload} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ checks
def same_segments(a: str, b: str) -> bool:
    """Segments equal file for file (CRC32 and size of every array, doc ids, metadata)."""
    from sparsearch.index import Index

    x, y = Index.open(a), Index.open(b)
    if len(x.segments) != len(y.segments) or x.vocab.terms != y.vocab.terms:
        return False
    return all(s.meta == t.meta and s.doc_ids == t.doc_ids for s, t in zip(x.segments, y.segments))


def agreement(data: str, ray_path: str, plain_path: str, k: int = 10) -> dict:
    """Ray index vs plain index on the collection's test queries."""
    import numpy as np

    from sparsearch.evaluation import load_beir
    from sparsearch.index import Index

    ds = load_beir(data)
    r, p = Index.open(ray_path), Index.open(plain_path)
    q = p.load_encoder().encode_queries(ds.query_texts(), ds.query_ids)
    (rs, rd), (ps, pd) = r.search(q, k), p.search(q, k)
    overlap = np.mean([len(set(rd[i][rd[i] >= 0]) & set(pd[i][pd[i] >= 0])) / max((pd[i] >= 0).sum(), 1)
                       for i in range(len(q))])
    return {"identical": bool(np.array_equal(rd, pd) and np.array_equal(rs, ps)),
            f"top{k}_overlap": float(overlap), "max_abs_score_diff": float(np.abs(rs - ps).max())}


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", str(ROOT.parent / "shared" / "data"))
                    + "/scifact")
    ap.add_argument("--splade-docs", type=int, default=2000)
    ap.add_argument("--bm25-copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="runs of every BM25 configuration (SPLADE: 1)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_encoding"))
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)

    # (name, encoder, docs, copies, shard size, configurations, repeats)
    suites = [("bm25", "bm25", 0, 1, 1000, ["plain-t1", "ray-w1", "ray-w2"], args.repeats),
              (f"bm25-x{args.bm25_copies}", "bm25", 0, args.bm25_copies, 5000, ["plain-t1", "ray-w1", "ray-w2"],
               args.repeats),
              ("splade", "splade", args.splade_docs, 1, 250, ["plain-t1", "plain-t2", "ray-w1", "ray-w2"], 1)]
    # export / load SPLADE-tiny's ONNX graph once so that no configuration pays the export
    subprocess.run([sys.executable, "-c", "from sparsearch.encoders import get_encoder; "
                    "get_encoder('splade', cache=False).encode_documents(['warm up'])"], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "note": "2 cores shared with other jobs"},
                     "data": args.data, "suites": {}}
    for name, enc, docs, copies, shard_size, configs, repeats in suites:
        runs: dict[str, list[dict]] = {c: [] for c in configs}
        for rep in range(repeats):
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]  # rotate: no fixed position
            for c in order:
                kind, n = c.split("-")
                cfg = {"kind": "plain" if kind == "plain" else "ray", "encoder": enc, "data": args.data, "docs": docs,
                       "copies": copies, "shard_size": shard_size, "threads": int(n[1:]) if kind == "plain" else 1,
                       "workers": int(n[1:]) if kind == "ray" else 0, "out": str(WORK / f"{name}-{c}")}
                r = in_subprocess("--one", json.dumps(cfg))
                runs[c].append(r)
                print(f"{name:>10} {c:>8}: {r['docs_per_s']:8.1f} docs/s  ({r['seconds']:.2f} s"
                      + (f", ray.init {r['init_seconds']:.2f} s, stages "
                         + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()) if "stages" in r else "")
                      + ")", flush=True)
        best = {c: min(rs, key=lambda r: r["seconds"]) for c, rs in runs.items()}  # least disturbed run
        p1, r1, r2 = best["plain-t1"], best["ray-w1"], best["ray-w2"]
        suite = {"encoder": enc, "n_docs": p1["n_docs"], "shard_size": shard_size, "runs": runs,
                 "docs_per_s": {c: b["docs_per_s"] for c, b in best.items()},
                 "ray_w2_over_w1": r2["docs_per_s"] / r1["docs_per_s"],
                 "ray_w1_overhead_seconds": r1["seconds"] - p1["seconds"],
                 "ray_w1_over_plain_time": r1["seconds"] / p1["seconds"],
                 "ray_w1_over_plain_time_with_init": (r1["seconds"] + r1["init_seconds"]) / p1["seconds"],
                 "ray_w2_over_plain_t1_speed": r2["docs_per_s"] / p1["docs_per_s"],
                 "ray_init_seconds": min(r["init_seconds"] for c in ("ray-w1", "ray-w2") for r in runs[c]),
                 "identical_segments_w1_w2": same_segments(str(WORK / f"{name}-ray-w1"),
                                                           str(WORK / f"{name}-ray-w2")),
                 "ray_vs_plain": in_subprocess("--agreement", json.dumps(
                     [args.data, str(WORK / f"{name}-ray-w2"), str(WORK / f"{name}-plain-t1")])),
                 "memory_plain": in_subprocess("--memory", str(WORK / f"{name}-plain-t1")),
                 "memory_ray": in_subprocess("--memory", str(WORK / f"{name}-ray-w2"))}
        if "plain-t2" in best:
            suite["ray_w2_over_plain_t2_speed"] = r2["docs_per_s"] / best["plain-t2"]["docs_per_s"]
        results["suites"][name] = suite
        print(f"{name}: ray w2/w1 {suite['ray_w2_over_w1']:.2f}x, ray w1 vs plain t1: "
              f"{suite['ray_w1_over_plain_time']:.2f}x the time (+{suite['ray_w1_overhead_seconds']:.2f} s; "
              f"{suite['ray_w1_over_plain_time_with_init']:.2f}x with ray.init), identical segments "
              f"{suite['identical_segments_w1_w2']}, vs plain {suite['ray_vs_plain']}", flush=True)
    big = f"bm25-x{args.bm25_copies}"
    results["sharded_search"] = in_subprocess("--search", json.dumps([args.data, str(WORK / f"{big}-ray-w2")]))
    results["sharded_search"]["index"] = big
    print("sharded search:", results["sharded_search"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1))
    Path(args.out + ".md").write_text(report(results))
    print(report(results))


def report(results: dict) -> str:
    lines = ["# Ray encoding + indexing throughput (docs/s)", "",
             f"Machine: {results['machine']['cpus']} cores, {results['machine']['note']}. Best of the runs of each "
             "configuration; each run a fresh process; model loading included, ray.init excluded (shown apart).", "",
             "| corpus | docs | shard size | plain t1 | plain t2 | ray w1 | ray w2 | w2/w1 | ray w1 time / plain t1 "
             "(+ init) | ray.init s | w1 = w2 segments | ray vs plain results |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in results["suites"].items():
        d = s["docs_per_s"]
        agree = s["ray_vs_plain"]
        agree_s = "identical" if agree["identical"] else (f"top-10 overlap {agree['top10_overlap']:.4f}, max score "
                                                          f"diff {agree['max_abs_score_diff']:.2g}")
        lines.append(f"| {name} | {s['n_docs']:,} | {s['shard_size']:,} | {d['plain-t1']:.1f} | "
                     f"{d.get('plain-t2', float('nan')):.1f} | {d['ray-w1']:.1f} | {d['ray-w2']:.1f} | "
                     f"{s['ray_w2_over_w1']:.2f}x | {s['ray_w1_over_plain_time']:.2f}x "
                     f"({s['ray_w1_over_plain_time_with_init']:.2f}x) | {s['ray_init_seconds']:.2f} | "
                     f"{s['identical_segments_w1_w2']} | {agree_s} |")
    lines += ["", "Per document (plain one-segment index / Ray index of the shards):", "",
              "| corpus | postings/doc | B/posting | disk B/doc | RAM B/doc: postings + doc ids | segments | "
              "term table B/segment | vocabulary RAM B/term | RAM parts / RSS growth MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, s in results["suites"].items():
        for which in ("memory_plain", "memory_ray"):
            m = s[which]
            lines.append(f"| {name} ({which[7:]}) | {m['postings_per_doc']:.1f} | {m['bytes_per_posting']:.2f} | "
                         f"{m['disk_bytes_per_doc']:.0f} | {m['ram_postings_bytes_per_doc']:.0f} + "
                         f"{m['ram_doc_ids_bytes_per_doc']:.0f} | {m['n_segments']} | "
                         f"{m['term_table_bytes_per_segment']:,.0f} | {m['vocab_ram_bytes_per_term']:.0f} | "
                         f"{m['ram_parts_bytes'] / 1e6:.1f} / {m['rss_growth_bytes'] / 1e6:.1f} |")
    ss = results.get("sharded_search")
    if ss:
        lines += ["", f"Sharded search on {ss['index']} ({ss['n_queries']} SciFact test queries, k=10, "
                      f"{ss['shards']} shards, 1 thread per searcher):", "",
                  "| searchers | batch ms | one query at a time, median ms | same results as one index |",
                  "|---|---|---|---|",
                  f"| one index | {ss['one_index']['batch_ms']:.1f} | {ss['one_index']['single_query_ms_median']:.3f} | - |"]
        lines += [f"| {b} | {ss[b]['batch_ms']:.1f} | {ss[b]['single_query_ms_median']:.3f} | {ss[b]['identical']} |"
                  for b in ("inline", "process", "ray")]
    lines += ["", "Ray stage seconds (best run): " + "; ".join(
        f"{name} w{w}: " + ", ".join(f"{k} {v:.2f}" for k, v in min(s["runs"][f"ray-w{w}"],
                                                                     key=lambda r: r["seconds"])["stages"].items())
        for name, s in results["suites"].items() for w in (1, 2)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_one(json.loads(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "--memory":
        print(json.dumps(memory_of(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--search":
        print(json.dumps(search_costs(*json.loads(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "--agreement":
        print(json.dumps(agreement(*json.loads(sys.argv[2]))))
    else:
        main()
