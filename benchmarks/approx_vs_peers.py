"""Approximate top-k: sparsearch vs pyseismic-lsr, BMP and Milvus Lite, side by side.

One run, same document vectors, same queries, same machine. For each system and setting:
recall@10 against sparsearch's exact top-10 (rank-safe), mean and p99 latency of one query
at a time on one thread, mean latency per query of the whole batch on all threads, build time
and index memory. Single-thread latency is the median of ``--passes`` passes over the queries
in which every system and setting is timed in turn (the two Seismic implementations side by
side at each setting, the order reversed on every other pass): on a shared machine, timing one
system after the other lets a slow minute decide a 10% comparison. Writes a markdown table and a recall-latency plot to ``benchmarks/results/``.

Vector sets:

* ``real``: SPLADE-tiny (bundled, ``sparsearch.encoders.splade.SpladeEncoder``) encodings
  of the largest BEIR collection in ``../shared/data`` (scifact, 5,183 docs; all its queries,
  up to ``--queries``), cached under ``.sparsearch_cache/approx_bench``;
* ``synthetic``: the 1M-document SPLADE-like corpus of ``benchmarks/synthetic.py``
  (``--docs`` to shrink it for a quick run).

Threads: numba (``numba.set_num_threads``), pyseismic-lsr (``num_threads`` of build and
``batch_search``; its single-query ``search`` runs on the caller's thread), BMP (its
``Searcher.search`` is single-threaded; the all-threads column is not measured for it) and
Milvus Lite (a server process; only single-query latency is measured, the client waits).
``RAYON_NUM_THREADS``/``OMP_NUM_THREADS`` are left unset so that batch runs can use all cores.

    python benchmarks/approx_vs_peers.py --sets real synthetic --docs 1000000 --queries 1000
    python benchmarks/approx_vs_peers.py --sets real synthetic --docs 200000 --queries 500   # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from sparsearch.evaluation import recall_at_k, time_queries  # noqa: E402
from sparsearch.index import Index, build_index  # noqa: E402
from sparsearch.index.approximate import ApproxBuildParams, ApproximateIndex, GlobalPruning  # noqa: E402
from sparsearch.searching import ApproxParams, ExactParams  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402

DATA = Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / ".sparsearch_cache" / "approx_bench"
RESULTS = ROOT / "benchmarks" / "results"
K = 10


# -------------------------------------------------------------------- vectors
def largest_collection() -> Path:
    cands = [p for p in DATA.iterdir() if (p / "corpus.jsonl").exists()] if DATA.exists() else []
    if not cands:
        raise SystemExit(f"no BEIR collection under {DATA}")
    return max(cands, key=lambda p: sum(1 for _ in open(p / "corpus.jsonl", "rb")))


def real_vectors(n_queries: int) -> tuple[str, SparseBatch, SparseBatch]:
    """SPLADE-tiny vectors of the largest collection (docs and all queries), cached as npz."""
    coll = largest_collection()
    CACHE.mkdir(parents=True, exist_ok=True)
    dpath, qpath = CACHE / f"{coll.name}-docs.npz", CACHE / f"{coll.name}-queries.npz"
    if not (dpath.exists() and qpath.exists()):
        from sparsearch.encoders.splade import SpladeEncoder
        from sparsearch.evaluation import load_beir

        ds = load_beir(coll)
        enc = SpladeEncoder(threads=os.cpu_count(), progress=True)
        t = time.perf_counter()
        docs = enc.encode_documents(ds.doc_texts(), ds.doc_ids)
        print(f"encoded {len(docs)} docs in {time.perf_counter() - t:.0f}s", flush=True)
        qs = enc.encode_queries(list(ds.all_queries.values()), list(ds.all_queries))
        docs.save_npz(dpath)
        qs.save_npz(qpath)
    docs, qs = SparseBatch.load_npz(dpath), SparseBatch.load_npz(qpath)
    keep = np.flatnonzero(qs.nnz_per_row() > 0)[:n_queries]
    return f"{coll.name} SPLADE-tiny", docs, qs[keep]


def synthetic_vectors(n_docs: int, n_queries: int) -> tuple[str, SparseBatch, SparseBatch]:
    import synthetic

    docs = SparseBatch.concat(list(synthetic.documents(n_docs)))
    qs = synthetic.queries(n_queries, vocab=docs.vocab)
    return f"synthetic {n_docs // 1000}k", docs, qs




# --------------------------------------------------------------- measurement
def dequantized(index: Index, docs: SparseBatch) -> SparseBatch:
    """The document vectors the index holds (8-bit impacts x their term's scale), rows sorted by
    term id: every system gets exactly these, so that exact search agrees across systems."""
    X = index.segments[0].weight_matrix(index.n_terms).tocsr()
    X.sort_indices()
    X.data = X.data.astype(np.float32)
    return SparseBatch.from_scipy(X, index.vocab, list(index.doc_ids)), X


def row_result(system, setting, recall, lat, batch_s, nq, build_s, mem, n_docs, note=""):
    lat = np.asarray(lat) * 1e3
    return {"system": system, "setting": setting, "recall": float(recall),
            "mean_ms": float(lat.mean()) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "batch_ms": float(batch_s * 1e3 / nq) if batch_s is not None else float("nan"),
            "build_s": build_s, "mem_mb": mem / 2**20 if mem else float("nan"),
            "bytes_per_doc": mem / n_docs if mem else float("nan"), "note": note}


def timed_loop(fn, n):
    """Run fn(i) for every query once (warm-up: first 5 twice), timed by
    :func:`~sparsearch.evaluation.time_queries`; latencies and results."""
    res: list[Any] = [None] * n

    def keep(i):
        res[i] = fn(i)

    return time_queries(keep, n, warmup=5), res


def to_docnums(lists, lookup, k=K):
    out = np.full((len(lists), k), -1, np.int64)
    for i, ids in enumerate(lists):
        ids = [lookup[x] for x in ids[:k]]
        out[i, :len(ids)] = ids
    return out


class CaptureStdout:
    """Capture what native code prints on fd 1 (pyseismic-lsr's space report)."""

    def __enter__(self):
        sys.stdout.flush()
        self.tmp = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(1)
        os.dup2(self.tmp.fileno(), 1)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)
        self.tmp.seek(0)
        self.text = self.tmp.read().decode(errors="replace")


@dataclass
class Job:
    """One system at one setting: ``one(i)`` searches query ``i`` on the calling thread and returns
    the system's own ids; ``docnums`` maps a list of those to doc numbers (n, k)."""

    system: str
    setting: str
    one: Callable[[int], Any]
    docnums: Callable[[list], np.ndarray]
    batch: Callable[[], Any] | None
    build_s: float | None
    mem: int | None
    note: str = ""


def interleaved_passes(jobs: list[Job], nq: int, passes: int) -> tuple[list[list[np.ndarray]], list[list]]:
    """Time every job ``passes`` times over all queries, the jobs interleaved and their order
    reversed on every other pass (ABBA), so that a slow phase of the shared machine (another
    process, a frequency change, a cache flush) falls on all systems alike instead of on the one
    that happened to run then. Returns per job its per-pass latencies and its first pass' results."""
    lats: list[list[np.ndarray]] = [[] for _ in jobs]
    results: list[list] = [[] for _ in jobs]
    for p in range(passes):
        order = range(len(jobs)) if p % 2 == 0 else range(len(jobs) - 1, -1, -1)
        for j in order:
            lat, res = timed_loop(jobs[j].one, nq)
            lats[j].append(lat)
            if p == 0:
                results[j] = res
        print(f"pass {p + 1}/{passes} done", flush=True)
    return lats, results


def approx_job(system: str, searcher: ApproximateIndex, params: ApproxParams, prepared: tuple, build_s: float,
               note: str = "") -> Job:
    """The job of one approximate setting: one query at a time on one thread, and the whole
    batch on all threads (``prepared``: the queries' CSR arrays over the index's term ids)."""
    q_indptr, q_terms, q_weights = prepared
    single, batch = replace(params, threads=1).check(), params.check()
    shown = (("query_cut", "candidates") if params.candidates else
             ("query_cut", "heap_factor") + (("forward_cut", "rerank") if params.forward_cut else ()))
    setting = " ".join(f"{f}={getattr(params, f)}" for f in shown)

    def one(i: int) -> np.ndarray:
        a, b = q_indptr[i], q_indptr[i + 1]
        return searcher.search_prepared(np.array([0, b - a]), q_terms[a:b], q_weights[a:b], K, single)[1][0]

    return Job(system, setting, one, np.array, lambda: searcher.search_prepared(q_indptr, q_terms, q_weights, K, batch),
               build_s, searcher.memory_bytes(), note)


def run_set(label, docs, qs, args, work: Path):
    """Build every system, then time them all in interleaved passes (see :func:`interleaved_passes`).

    Every index is timed as it is served: sparsearch approximate and pyseismic-lsr are built,
    saved, and loaded back into memory (``ApproximateIndex.open(mmap=False)``,
    ``SeismicIndex.load``), so that neither runs on the allocations its build left behind.
    """
    import numba

    nq = len(qs)
    print(f"\n=== {label}: {len(docs)} docs ({docs.nnz / len(docs):.0f} nnz), {nq} queries "
          f"({qs.nnz / nq:.0f} nnz)", flush=True)
    jobs: list[Job] = []
    # ---- sparsearch exact
    t = time.perf_counter()
    index = build_index(docs, work / "sparsearch", overwrite=True)
    build_exact = time.perf_counter() - t
    qs = qs.remap(index.vocab)
    qrows = [qs[i:i + 1] for i in range(nq)]
    _, exact = index.search(qs, K)  # also compiles
    ident = (lambda res: np.array(res))
    one_thread = ExactParams(threads=1)
    jobs.append(Job("sparsearch exact", "block-max MaxScore", lambda i: index.search(qrows[i], K, one_thread)[1][0],
                    ident, lambda: index.search(qs, K), build_exact, index.stats()["index_bytes"]))
    dq, X = dequantized(index, docs)
    n_terms = len(index.vocab)

    # ---- sparsearch approximate
    bp = dict(n_postings=args.n_postings, centroid_fraction=args.centroid_fraction,
              summary_energy=args.summary_energy)
    build_params = ApproxBuildParams(pruning=GlobalPruning(n_postings=args.n_postings),
                                     centroid_fraction=args.centroid_fraction, summary_energy=args.summary_energy,
                                     kmeans_iterations=args.kmeans_iterations)
    t = time.perf_counter()
    ax = ApproximateIndex.build(index, build_params, save=False)
    build_ax = time.perf_counter() - t
    ax.save()
    del ax
    gc.collect()
    ax = ApproximateIndex.open(index, mmap=False, verify=False)
    q_indptr, q_terms, q_weights = index.prepare_queries(qs)
    ax.search_prepared(q_indptr, q_terms, q_weights, K, ApproxParams(query_cut=5))  # compile
    ax.search_prepared(q_indptr[:2], q_terms, q_weights, K, ApproxParams(query_cut=5, threads=1))
    print("approx", ax.stats(), flush=True)
    prepared = (q_indptr, q_terms, q_weights)
    ours = {(qc, hf): approx_job("sparsearch approx", ax, ApproxParams(query_cut=qc, heap_factor=hf), prepared,
                                 build_ax)
            for qc in args.query_cuts for hf in args.heap_factors}
    # the same scans with each document scored on its m heaviest entries, the best `rerank` whole
    cut_jobs = {key: [approx_job("sparsearch approx", ax, ApproxParams(query_cut=key[0], heap_factor=key[1],
                                                                       forward_cut=m, rerank=args.rerank),
                                 prepared, build_ax) for m in args.forward_cuts if m > 0]
                for key in ours}

    # ---- sparsearch approximate, the candidate strategy (its own index: no summaries)
    cand_jobs: list[Job] = []
    if args.candidates:
        cx_dir = work / "candidates"  # a copy of the exact index holds it (one approximate index per index)
        shutil.copytree(work / "sparsearch", cx_dir, dirs_exist_ok=True)
        cindex = Index.open(cx_dir)
        t = time.perf_counter()
        cx = ApproximateIndex.build(cindex, replace(build_params, summaries=False), save=False)
        build_cx = time.perf_counter() - t
        cx.save()
        del cx
        gc.collect()
        cx = ApproximateIndex.open(cindex, mmap=False, verify=False)
        cx.search_prepared(q_indptr[:2], q_terms[:q_indptr[1]], q_weights[:q_indptr[1]], K,
                           ApproxParams(query_cut=5, candidates=10, threads=1))  # compile, serial
        cx.search_prepared(q_indptr[:3], q_terms[:q_indptr[2]], q_weights[:q_indptr[2]], K,
                           ApproxParams(query_cut=5, candidates=10))  # and parallel
        print("candidates", cx.stats(), flush=True)
        cand_jobs = [approx_job("sparsearch candidates", cx, ApproxParams(query_cut=qc, candidates=c), prepared,
                                build_cx, "index without summaries")
                     for qc in args.candidate_cuts for c in args.candidates]

    # ---- pyseismic-lsr
    theirs: dict[tuple, Job] = {}
    if "seismic" in args.peers:
        import seismic

        sstr = seismic.get_seismic_string()
        sidx, build_s, mem_s, _ = _build_seismic(seismic, dq, X, bp, "seismic")
        with CaptureStdout():
            sidx.save(str(work / "seismic"))
        del sidx
        gc.collect()
        with CaptureStdout():
            sidx = seismic.SeismicIndex.load(str(work / "seismic") + ".index.seismic")
        qcomp = [np.array([str(x) for x in qs.indices[qs.indptr[i]:qs.indptr[i + 1]]], dtype=sstr)
                 for i in range(nq)]
        qval = [qs.values[qs.indptr[i]:qs.indptr[i + 1]].astype(np.float32) for i in range(nq)]
        qids = np.array([str(i) for i in range(nq)], dtype=sstr)
        slook = {str(i): i for i in range(len(dq))}
        for qc in args.query_cuts:
            for hf in args.heap_factors:
                theirs[qc, hf] = Job(
                    "pyseismic-lsr", f"query_cut={qc} heap_factor={hf}",
                    lambda i, qc=qc, hf=hf: [r[2] for r in sidx.search(qids[i], qcomp[i], qval[i], K, qc, hf)],
                    lambda res: to_docnums(res, slook),
                    lambda qc=qc, hf=hf: sidx.batch_search(qids, qcomp, qval, K, qc, hf, num_threads=0),
                    build_s, mem_s)
        if args.seismic_nknn:  # Seismic with its document k-NN graph (SeismicWave's refinement)
            kidx, build_k, mem_k, space = _build_seismic(seismic, dq, X, {**bp, "nknn": args.seismic_nknn},
                                                         "seismic+knn")
            # pyseismic-lsr's space report has a "Knn:" line, counted in its total (the graph-refined
            # index is timed as built: its graph is saved and loaded by separate calls)
            m = re.search(r"Knn:\s*(\d+)", space)
            graph = int(m.group(1)) if m else None
            for qc in args.query_cuts:
                for hf in args.heap_factors:
                    for nk in args.seismic_n_knn:
                        theirs[qc, hf, nk] = Job(
                            "pyseismic-lsr+knn", f"query_cut={qc} heap_factor={hf} n_knn={nk}",
                            lambda i, qc=qc, hf=hf, nk=nk: [r[2] for r in kidx.search(qids[i], qcomp[i], qval[i], K,
                                                                                       qc, hf, nk)],
                            lambda res: to_docnums(res, slook),
                            lambda qc=qc, hf=hf, nk=nk: kidx.batch_search(qids, qcomp, qval, K, qc, hf, nk,
                                                                          num_threads=0),
                            build_k, mem_k, f"nknn={args.seismic_nknn}, " + (f"graph {graph:,} bytes (in the total)" if graph is not None
                                                                  else "graph size not reported"))
    for i, key in enumerate(ours):  # the same setting of both systems side by side in every pass
        jobs.append(ours[key])
        jobs.extend(cut_jobs[key])
        for tk in [key] + [(*key, nk) for nk in args.seismic_n_knn]:
            if tk in theirs:
                jobs.append(theirs[tk])
        jobs.extend(cand_jobs[i::len(ours)])  # the candidate settings spread over the passes' order
    if not ours:
        jobs.extend(cand_jobs)

    # ---- BMP
    if "bmp" in args.peers:
        import bmp

        path = str(work / "index.bmp")
        t = time.perf_counter()
        ix = bmp.Indexer(path, bsize=args.bmp_bsize, compress_range=False)
        imp = index.segments[0].impact_matrix(n_terms).tocsr()
        imp.sort_indices()
        for d in range(imp.shape[0]):
            a, b = imp.indptr[d], imp.indptr[d + 1]
            ix.add_document(str(d), dict(zip(map(str, imp.indices[a:b].tolist()),
                                             imp.data[a:b].astype(np.int64).tolist())))
        ix.finish()
        searcher = bmp.Searcher(path)
        build_b = time.perf_counter() - t
        mem_b = os.path.getsize(path)
        # BMP scores the integer impacts: the query weights absorb each term's 8-bit step
        qv = qs.values * index.segments[0].term_scales(qs.indices)
        qd = [dict(zip(map(str, qs.indices[qs.indptr[i]:qs.indptr[i + 1]].tolist()),
                       qv[qs.indptr[i]:qs.indptr[i + 1]].astype(float).tolist())) for i in range(nq)]
        blook = {str(i): i for i in range(len(dq))}
        for alpha, beta in args.bmp_settings:
            name = "bmp exact" if alpha == 1.0 and beta == 1.0 else "bmp approx"
            jobs.append(Job(name, f"alpha={alpha} beta={beta} bsize={args.bmp_bsize}",
                            lambda i, a=alpha, b=beta: searcher.search(qd[i], k=K, alpha=a, beta=b)[0],
                            lambda res: to_docnums(res, blook), None, build_b, mem_b, "single-threaded API"))

    # ---- timing: single thread, interleaved passes; then all threads, one batch per job
    numba.set_num_threads(1)
    lats, results = interleaved_passes(jobs, nq, args.passes)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    rows = []
    for job, lat, res in zip(jobs, lats, results):
        bt = None
        if job.batch is not None:
            t = time.perf_counter()
            job.batch()
            bt = time.perf_counter() - t
        means = [x.mean() for x in lat]
        mid = int(np.argsort(means)[len(means) // 2])  # the median pass
        row = row_result(job.system, job.setting, recall_at_k(job.docnums(res), exact), lat[mid], bt, nq,
                         job.build_s, job.mem, len(docs), job.note)
        row["pass_means_ms"] = [float(m * 1e3) for m in means]
        rows.append(row)
        print(row, flush=True)

    # ---- Milvus Lite (a server process and 27 ms a query: one pass over fewer queries)
    if "milvus" in args.peers:
        rows += run_milvus(dq, X, qs, exact, work, args, len(docs))
    return rows


def _build_seismic(seismic, dq, X, build_params: dict, label: str):
    """A pyseismic-lsr index of the documents: ``(index, build seconds, bytes, space report)``."""
    t = time.perf_counter()
    ds = seismic.SeismicDataset()
    ds.add_documents_by_id([str(i) for i in range(len(dq))], X.indices.astype(np.int64), X.data,
                           X.indptr.astype(np.int64))
    idx = seismic.SeismicIndex.build_from_dataset(ds, **build_params, num_threads=0)
    build_s = time.perf_counter() - t
    del ds
    with CaptureStdout() as cap:
        idx.print_space_usage_byte()
    print(f"{label} space:", cap.text.strip().replace("\n", " | ")[:400], flush=True)
    return idx, build_s, _parse_seismic_space(cap.text), cap.text


def _parse_seismic_space(text: str) -> int | None:
    nums = [int(x) for x in re.findall(r"(\d+)\s*(?:bytes|Bytes|B\b)", text)]
    m = re.search(r"[Tt]otal[^\d]*(\d+)", text)
    if m:
        return int(m.group(1))
    return max(nums) if nums else None


def run_milvus(dq, X, qs, exact, work, args, n_docs):
    from pymilvus import DataType, MilvusClient

    rows = []
    nqm = min(len(qs), args.milvus_queries)
    db = work / "milvus"
    db.mkdir(exist_ok=True)
    client = MilvusClient(str(db / "milvus.db"))
    coll = "docs"
    if client.has_collection(coll):
        client.drop_collection(coll)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.SPARSE_FLOAT_VECTOR)
    client.create_collection(coll, schema=schema)
    t = time.perf_counter()
    for a in range(0, X.shape[0], 5000):
        batch = []
        for d in range(a, min(a + 5000, X.shape[0])):
            lo, hi = X.indptr[d], X.indptr[d + 1]
            batch.append({"id": d, "vec": dict(zip(X.indices[lo:hi].tolist(), X.data[lo:hi].astype(float).tolist()))})
        client.insert(coll, batch)
    client.flush(coll)  # unflushed rows stay unindexed in Milvus Lite: queries scan them (~100x slower)
    insert_s = time.perf_counter() - t
    qd = [dict(zip(qs.indices[qs.indptr[i]:qs.indptr[i + 1]].tolist(),
                   qs.values[qs.indptr[i]:qs.indptr[i + 1]].astype(float).tolist())) for i in range(nqm)]
    for itype in ("SPARSE_INVERTED_INDEX", "SPARSE_WAND"):
        try:
            ip = client.prepare_index_params()
            ip.add_index(field_name="vec", index_type=itype, metric_type="IP", params={})
            t = time.perf_counter()
            client.create_index(coll, ip)
            client.load_collection(coll)
            build = insert_s + time.perf_counter() - t
        except Exception as e:  # milvus-lite supports only part of Milvus' sparse indexes
            msg = str(e).split("message=")[-1][:120]
            rows.append(row_result("milvus-lite", itype, float("nan"), [], None, nqm, None, None, n_docs,
                                   f"not supported: {msg}"))
            continue
        sp = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
        lat, res = timed_loop(lambda i: [h["id"] for h in client.search(
            coll, data=[qd[i]], anns_field="vec", limit=K, search_params=sp, output_fields=[])[0]], nqm)
        mem = sum(f.stat().st_size for f in db.rglob("*") if f.is_file())
        rows.append(row_result("milvus-lite", itype, recall_at_k(to_docnums(res, {i: i for i in range(n_docs)}),
                                                                 exact[:nqm]),
                               lat, None, nqm, build, mem, n_docs,
                               f"{nqm} queries; local server process; memory = files on disk"))
        print(rows[-1], flush=True)
        client.release_collection(coll)
        client.drop_index(coll, "vec")
    client.close()
    return rows


# ------------------------------------------------------------------ reporting
def pareto_latency(rows, systems: str | tuple[str, ...], target):
    """The fastest row of ``systems`` (one name or several) reaching recall ``target``, or None."""
    systems = (systems,) if isinstance(systems, str) else systems
    ok = [r for r in rows if r["system"] in systems and r["recall"] >= target - 1e-9]
    return min(ok, key=lambda r: r["mean_ms"]) if ok else None


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both recall (higher) and mean latency (lower), fastest first."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r["mean_ms"], -r["recall"])):
        if r["recall"] > best + 1e-12:
            front.append(r)
            best = r["recall"]
    return front


def report(all_rows: dict[str, list[dict]], args) -> str:
    out = ["# Approximate retrieval: sparsearch vs peers\n",
           f"Machine: {os.cpu_count()} cores; k={K}; recall@{K} against sparsearch exact top-{K}. "
           f"Latency: one query at a time on one thread (mean, p99), the median of {args.passes} timed passes "
           f"over the queries, every system and setting interleaved in each pass (order reversed on every other "
           f"pass); 'all threads' = batch wall time / queries. Indexes are timed as served: saved, then loaded "
           f"back into memory. Build parameters (sparsearch approx and pyseismic-lsr alike): n_postings="
           f"{args.n_postings}, centroid_fraction={args.centroid_fraction}, summary_energy={args.summary_energy}; "
           f"sparsearch approx also refines its blocks with kmeans_iterations={args.kmeans_iterations} Lloyd "
           f"step(s) after Seismic's one random-centroid pass (0 = Seismic's clustering). 'sparsearch candidates' is "
           f"sparsearch's approximate index built with the same static pruning and no clustering or summaries "
           f"(`build-approx --no-summaries`), searched with the candidate strategy (`--candidates N`: partial "
           f"scores over the query_cut heaviest terms' pruned lists, the N best scored exactly). A 'sparsearch "
           f"approx' setting with forward_cut=m scans the same blocks but scores each document on its m heaviest "
           f"entries (forward vectors are stored heaviest first), the k-th of these partial scores being the "
           f"scan's threshold, and rescores the `rerank` best on their whole vectors.\n"]
    for label, rows in all_rows.items():
        out.append(f"\n## {label}\n")
        out.append("| system | setting | recall@10 | mean ms (1 thr) | p99 ms (1 thr) | ms/query (all thr) | "
                   "build s | memory MB | bytes/doc | note |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            f = (lambda x, p=3: "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{p}f}")
            out.append(f"| {r['system']} | {r['setting']} | {f(r['recall'])} | {f(r['mean_ms'])} | {f(r['p99_ms'])} "
                       f"| {f(r['batch_ms'])} | {f(r['build_s'], 1)} | {f(r['mem_mb'], 1)} | "
                       f"{f(r['bytes_per_doc'], 0)} | {r['note']} |")
        out.append("\n**Fastest setting at a recall target (single thread), sparsearch approx vs pyseismic-lsr:**\n")
        out.append("| recall >= | sparsearch approx ms (setting) | pyseismic-lsr ms (setting) | ratio |")
        out.append("|---|---|---|---|")
        for tgt in (0.90, 0.95, 0.99):
            a, s = pareto_latency(rows, "sparsearch approx", tgt), pareto_latency(rows, "pyseismic-lsr", tgt)
            ratio = f"{a['mean_ms'] / s['mean_ms']:.2f}x" if a and s else "n/a"
            out.append(f"| {tgt:.2f} | {a['mean_ms']:.3f} ({a['setting']}) |" if a else f"| {tgt:.2f} | not reached |")
            out[-1] += (f" {s['mean_ms']:.3f} ({s['setting']}) | {ratio} |" if s else f" not reached | {ratio} |")
        out.append("\n**Fastest sparsearch search at a recall target (Seismic-style approximate or exact) vs "
                   "pyseismic-lsr:**\n")
        out.append("| recall >= | sparsearch ms (mode, setting) | pyseismic-lsr ms | ratio |")
        out.append("|---|---|---|---|")
        for tgt in (0.90, 0.95, 0.99):
            a = pareto_latency(rows, ("sparsearch approx", "sparsearch exact"), tgt)
            s = pareto_latency(rows, "pyseismic-lsr", tgt)
            ratio = f"{a['mean_ms'] / s['mean_ms']:.2f}x" if a and s else "n/a"
            out.append(f"| {tgt:.2f} | " + (f"{a['mean_ms']:.3f} ({a['system']}, {a['setting']})" if a else "n/a")
                       + " | " + (f"{s['mean_ms']:.3f}" if s else "not reached") + f" | {ratio} |")
        seismics = ("pyseismic-lsr", "pyseismic-lsr+knn")
        ours_all = ("sparsearch approx", "sparsearch candidates")
        if any(r["system"] == "sparsearch candidates" for r in rows):
            out.append("\n**Fastest setting at a recall target: sparsearch approximate, either strategy (Seismic's "
                       "block scan or the candidate strategy), vs the fastest pyseismic-lsr configuration (with or "
                       "without its k-NN graph where it ran):**\n")
            out.append("| recall >= | sparsearch ms (strategy, setting) | pyseismic-lsr ms (system, setting) | ratio |")
            out.append("|---|---|---|---|")
            for tgt in (0.90, 0.95, 0.99):
                a, s = pareto_latency(rows, ours_all, tgt), pareto_latency(rows, seismics, tgt)
                ratio = f"{a['mean_ms'] / s['mean_ms']:.2f}x" if a and s else "n/a"
                out.append(f"| {tgt:.2f} | " + (f"{a['mean_ms']:.3f} ({a['system']}, {a['setting']})" if a
                                                 else "not reached") + " | "
                           + (f"{s['mean_ms']:.3f} ({s['system']}, {s['setting']})" if s else "not reached")
                           + f" | {ratio} |")
        if any(r["system"] == "pyseismic-lsr+knn" for r in rows):
            out.append("\n**Fastest setting at a recall target: sparsearch approx vs the fastest pyseismic-lsr "
                       "configuration, with or without its k-NN graph:**\n")
            out.append("| recall >= | sparsearch approx ms | pyseismic-lsr ms (system, setting) | ratio |")
            out.append("|---|---|---|---|")
            for tgt in (0.90, 0.95, 0.99):
                a, s = pareto_latency(rows, "sparsearch approx", tgt), pareto_latency(rows, seismics, tgt)
                ratio = f"{a['mean_ms'] / s['mean_ms']:.2f}x" if a and s else "n/a"
                out.append(f"| {tgt:.2f} | " + (f"{a['mean_ms']:.3f}" if a else "not reached") + " | "
                           + (f"{s['mean_ms']:.3f} ({s['system']}, {s['setting']})" if s else "not reached")
                           + f" | {ratio} |")
        out.append("\n**Pareto frontier of each system (recall@10 against single-thread mean latency: the settings "
                   "no other setting of the system beats on both):**\n")
        for system in dict.fromkeys(r["system"] for r in rows):
            front = pareto_front([r for r in rows if r["system"] == system])
            out.append(f"- {system}: " + ", ".join(f"{r['recall']:.3f} @ {r['mean_ms']:.3f} ms ({r['setting']})"
                                                   for r in front))
        mem_s = next((r["mem_mb"] for r in rows if r["system"] == "pyseismic-lsr"), None)
        for system in ours_all:
            mem_a = next((r["mem_mb"] for r in rows if r["system"] == system), None)
            if mem_a and mem_s and not np.isnan(mem_s):
                out.append(f"\nMemory ratio {system} / pyseismic-lsr: {mem_a / mem_s:.2f}x "
                           f"({mem_a:.1f} MB vs {mem_s:.1f} MB)")
        ex = next((r for r in rows if r["system"] == "sparsearch exact"), None)
        bx = next((r for r in rows if r["system"] == "bmp exact"), None)
        if ex and bx:
            out.append(f"\nExact latency sparsearch / bmp (single thread, mean): {ex['mean_ms'] / bx['mean_ms']:.2f}x "
                       f"({ex['mean_ms']:.3f} ms vs {bx['mean_ms']:.3f} ms; bmp recall {bx['recall']:.4f})")
    return "\n".join(out) + "\n"


def plot(all_rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_rows), figsize=(7 * len(all_rows), 5), squeeze=False)
    styles = {"sparsearch approx": ("C0", "o"), "pyseismic-lsr": ("C1", "s"), "bmp approx": ("C2", "^"),
              "bmp exact": ("C2", "*"), "sparsearch exact": ("C0", "*"), "milvus-lite": ("C3", "D"),
              "sparsearch candidates": ("C4", "v"), "pyseismic-lsr+knn": ("C5", "P")}
    for ax, (label, rows) in zip(axes[0], all_rows.items()):
        for system, (c, m) in styles.items():
            pts = [(r["recall"], r["mean_ms"]) for r in rows if r["system"] == system and not np.isnan(r["recall"])]
            if not pts:
                continue
            pts.sort()
            if system in ("sparsearch approx", "pyseismic-lsr", "bmp approx", "sparsearch candidates",
                          "pyseismic-lsr+knn"):
                front, best = [], np.inf  # Pareto front: fastest at each recall or higher
                for rc, ms in sorted(pts, key=lambda p: -p[0]):
                    if ms < best:
                        best = ms
                        front.append((rc, ms))
                ax.scatter(*zip(*pts), color=c, marker=m, alpha=0.25, s=14)
                ax.plot(*zip(*sorted(front)), color=c, marker=m, label=system)
            else:
                ax.scatter(*zip(*pts), color=c, marker=m, s=90, label=system)
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("mean latency, 1 thread (ms)")
        ax.set_yscale("log")
        ax.set_title(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["real", "synthetic"], choices=["real", "synthetic"])
    ap.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--peers", nargs="*", default=["seismic", "bmp", "milvus"])
    ap.add_argument("--n-postings", type=int, default=None, help="default: 1000 (real), 3500 (synthetic)")
    ap.add_argument("--centroid-fraction", type=float, default=0.1)
    ap.add_argument("--summary-energy", type=float, default=0.4)
    ap.add_argument("--kmeans-iterations", type=int, default=ApproxBuildParams.kmeans_iterations,
                    help="sparsearch approx only: Lloyd steps after the one-pass clustering (0 = Seismic's)")
    ap.add_argument("--query-cuts", type=int, nargs="+", default=[3, 5, 8, 12, 20])
    ap.add_argument("--heap-factors", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9, 1.0])
    ap.add_argument("--forward-cuts", type=int, nargs="*", default=[16, 32],
                    help="sparsearch approx also with each document scored on its m heaviest entries (ApproxParams."
                         "forward_cut), the --rerank best rescored whole (none: whole vectors only)")
    ap.add_argument("--rerank", type=int, default=ApproxParams.rerank)
    ap.add_argument("--candidates", type=int, nargs="*", default=[20, 30, 50, 75, 100, 200],
                    help="sparsearch's candidate strategy: documents scored exactly (none: not run)")
    ap.add_argument("--candidate-cuts", type=int, nargs="+", default=[6, 8, 10, 12, 15, 20],
                    help="query_cut values of the candidate strategy")
    ap.add_argument("--seismic-nknn", type=int, default=0,
                    help="also build pyseismic-lsr with a document k-NN graph of this many neighbours (0: no)")
    ap.add_argument("--seismic-n-knn", type=int, nargs="+", default=[5, 10],
                    help="neighbours scanned per result at query time by the graph-refined pyseismic-lsr")
    ap.add_argument("--bmp-bsize", type=int, default=32)
    ap.add_argument("--milvus-queries", type=int, default=200)
    ap.add_argument("--passes", type=int, default=3,
                    help="timed passes over the queries per system and setting, interleaved (median reported)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    args.bmp_settings = [(1.0, 1.0), (0.9, 1.0), (0.8, 1.0), (0.7, 1.0), (0.9, 0.8), (0.8, 0.7)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_rows = {}
    n_postings = args.n_postings
    for s in args.sets:
        label, docs, qs = real_vectors(args.queries) if s == "real" else synthetic_vectors(args.docs, args.queries)
        args.n_postings = n_postings or (1000 if s == "real" else 3500)
        work = Path(tempfile.mkdtemp(prefix="approx-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
        try:
            all_rows[f"{label} (n_postings={args.n_postings})"] = run_set(label, docs, qs, args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        del docs, qs
        gc.collect()
        tag = args.tag or "_".join(args.sets)
        md = report(all_rows, args)
        (out / f"approx_vs_peers_{tag}.md").write_text(md)
        (out / f"approx_vs_peers_{tag}.json").write_text(json.dumps(all_rows, indent=1))
        plot(all_rows, out / f"approx_vs_peers_{tag}.png")
    print(md)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--prepare-real"]:
        name, d, q = real_vectors(10**9)
        print(name, len(d), d.nnz / len(d), len(q), q.nnz / len(q))
    else:
        main()
