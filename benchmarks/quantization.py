"""8-bit quantization vs float32 (issue 15 item 1): effectiveness, postings kept, index size.

    python benchmarks/quantization.py [--data ../shared/data] [--collections scifact,nfcorpus,cranfield]
                                      [--encoders bm25,splade] [--out benchmarks/results/quantization]

For each BEIR collection and encoder (BM25; the bundled SPLADE-tiny, ``get_encoder("splade")``,
whose document encodings the encoder caches under ``.sparsearch_cache``) the same vectors are
indexed three ways and searched exactly (top-1000):

* ``float32``: the raw weights (``--quantization float32``), the reference;
* ``uint8``: the current scheme, one 8-bit grid per term (``term_scale[t] = max weight of t /
  255``, every weight > 0 kept as at least one step; the query weight absorbs the scale);
* ``uint8-global``: the previous scheme, one grid per segment (``max weight / 255``, weights
  below half a step dropped), written as a version-1 segment (still readable).

Reported per (collection, encoder): nDCG@10 of each, the gap to float32, postings kept, and
the segment's bytes on disk (all arrays, and the posting data proper). Plus the issue's outlier
file (1,000 vectors with weights 0.1-3 and one ``{"t1": 300}``; and the same with 1e30):
postings kept by each scheme. Results: ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sparsearch.encoders import get_encoder  # noqa: E402
from sparsearch.evaluation import evaluate, load_beir  # noqa: E402
from sparsearch.index import Index, build_index, kernels  # noqa: E402
from sparsearch.index.builder import quantize  # noqa: E402
from sparsearch.index.segment import ARRAYS_V1, Segment  # noqa: E402
from sparsearch.index.storage import write_arrays  # noqa: E402
from sparsearch.vectors import SparseBatch  # noqa: E402

K = 1000
MAX_GAP = 0.002


def global_scale_index(batch: SparseBatch, directory: Path) -> Index:
    """The previous scheme's index of ``batch`` (a version-1 segment, opened as an :class:`Index`
    without a manifest): one linear grid ``max(w) / 255`` for the whole segment, weights rounding
    to 0 dropped."""
    n_terms = len(batch.vocab)
    impacts, scale = quantize(batch.values, "uint8")
    post_ptr, post_docs, post_imp = kernels.invert(batch.indptr, batch.indices, impacts, n_terms)
    tbp, last, bmax, bits, wptr, words = kernels.build_blocks(post_ptr, post_docs, post_imp, True)
    term_max = np.zeros(n_terms, np.uint8)
    ne = np.diff(tbp) > 0
    if ne.any():
        term_max[ne] = np.maximum.reduceat(bmax, tbp[:-1][ne])
    arrays = dict(zip(ARRAYS_V1, (post_ptr, tbp, term_max, last, bmax, bits, wptr, words, post_imp)))
    meta = {"format": "sparsearch-segment", "version": 1, "n_docs": len(batch), "n_terms": n_terms,
            "n_postings": int(post_ptr[-1]), "quantization": "uint8", "scale": scale, "block_size": kernels.BLOCK,
            "codec": "byte"}
    write_arrays(directory, arrays, meta)
    (directory / "doc_ids.json").write_text(json.dumps(list(batch.ids)))
    seg = Segment.open(directory)
    return Index(directory, {"segments": [{"name": directory.name}], "quantization": "uint8"}, batch.vocab, [seg],
                 [np.zeros(0, np.bool_)])


def describe(index: Index) -> dict:
    seg = index.segments[0]
    return {"postings": seg.n_postings, "segment_bytes": seg.nbytes(), "posting_bytes": seg.posting_bytes()}


def one_system(ds, encoder: str, work: Path) -> dict:
    enc = get_encoder(encoder)
    if hasattr(enc, "progress"):
        enc.progress = False
    texts = ds.doc_texts()
    t0 = time.perf_counter()
    enc.fit(texts)
    docs = enc.encode_documents(texts, ds.doc_ids)
    queries = enc.encode_queries(ds.query_texts(), ds.query_ids)
    encode_s = time.perf_counter() - t0
    out = {"encoder": encoder, "n_docs": len(docs), "n_queries": len(queries), "nnz": int(docs.nnz),
           "encode_s": round(encode_s, 1)}
    for name, quant in (("float32", "float32"), ("uint8", "uint8"), ("uint8-global", "uint8")):
        path = work / f"{encoder}-{name}"
        if name == "uint8-global":
            index = global_scale_index(docs, path)
        else:
            index = build_index(docs, path, quantization=quant, codec="byte")
        run = index.search_run(queries, K)
        m = evaluate(run, ds.qrels, metrics=("nDCG@10", "R@100"))
        out[name] = {"nDCG@10": m["nDCG@10"], "R@100": m["R@100"], **describe(index)}
        shutil.rmtree(path)
    ref = out["float32"]["nDCG@10"]
    for name in ("uint8", "uint8-global"):
        out[name]["gap"] = out[name]["nDCG@10"] - ref
    new, old = out["uint8"], out["uint8-global"]
    out["size_change"] = {"segment_bytes": new["segment_bytes"] - old["segment_bytes"],
                          "segment_pct": 100.0 * (new["segment_bytes"] / old["segment_bytes"] - 1),
                          "posting_bytes_pct": 100.0 * (new["posting_bytes"] / old["posting_bytes"] - 1),
                          "postings": new["postings"] - old["postings"]}
    return out


def outlier_rows(outlier: float, n: int = 1000, seed: int = 0) -> list[dict]:
    """The issue's file: ``n`` vectors of 6 terms of t0..t19, weights in [0.1, 3], then one
    ``{"id": "outlier", "vector": {"t1": outlier}}``."""
    rng = np.random.default_rng(seed)
    rows = [{f"t{t}": float(rng.uniform(0.1, 3.0)) for t in rng.choice(20, 6, replace=False)} for _ in range(n)]
    return rows + [{"t1": outlier}]


def outliers(work: Path) -> list[dict]:
    res = []
    for n, w in ((1000, 300.0), (100, 1e30)):
        batch = SparseBatch.from_dicts(outlier_rows(w, n), ids=[f"d{i}" for i in range(n)] + ["outlier"])
        row = {"file": f"{n} vectors (0.1-3) + {{'t1': {w:g}}}", "postings_in": int(batch.nnz)}
        for name in ("uint8", "uint8-global"):
            path = work / f"outlier-{name}"
            index = global_scale_index(batch, path) if name == "uint8-global" else build_index(batch, path)
            row[name] = index.segments[0].n_postings
            shutil.rmtree(path)
        res.append(row)
    return res


def markdown(results: list[dict], outl: list[dict], meta: dict) -> str:
    lines = ["# 8-bit quantization vs float32 (issue 15 item 1)", "",
             f"`python benchmarks/quantization.py` ({meta['date']}; exact top-{K}, byte codec). "
             "`uint8`: one 8-bit grid per term (current); `uint8-global`: one grid per segment "
             "(previous scheme, weights under half a step dropped). Gap = nDCG@10 minus float32's; "
             f"required |gap| <= {MAX_GAP}.", "",
             "| collection | encoder | float32 | uint8 (per term) | gap | uint8-global (old) | gap | "
             "postings float32 / uint8 / old | segment bytes uint8 vs old |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, u, g = r["float32"], r["uint8"], r["uint8-global"]
        lines.append(f"| {r['collection']} | {r['encoder']} | {f['nDCG@10']:.4f} | {u['nDCG@10']:.4f} | "
                     f"{u['gap']:+.4f} | {g['nDCG@10']:.4f} | {g['gap']:+.4f} | "
                     f"{f['postings']:,} / {u['postings']:,} / {g['postings']:,} | "
                     f"{u['segment_bytes']:,} vs {g['segment_bytes']:,} ({r['size_change']['segment_pct']:+.1f}%) |")
    worst = max(abs(r["uint8"]["gap"]) for r in results) if results else float("nan")
    lines += ["", f"Largest |gap| of the per-term scheme: {worst:.4f} (limit {MAX_GAP}).", "",
              "Postings kept for the issue's outlier files:", "",
              "| file | postings in | uint8 (per term) | uint8-global (old) |", "|---|---|---|---|"]
    for o in outl:
        lines.append(f"| {o['file']} | {o['postings_in']:,} | {o['uint8']:,} | {o['uint8-global']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SPARSEARCH_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--collections", default="scifact,nfcorpus,cranfield")
    ap.add_argument("--encoders", default="bm25,splade")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quantization")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="sparsearch-quant-") as tmp:
        work = Path(tmp)
        outl = outliers(work)
        print(json.dumps(outl), flush=True)
        for coll in args.collections.split(","):
            ds = load_beir(Path(args.data) / coll)
            for encoder in args.encoders.split(","):
                r = {"collection": coll, **one_system(ds, encoder, work)}
                results.append(r)
                print(json.dumps(r), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "k": K, "max_gap": MAX_GAP, "data": str(args.data)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results, "outliers": outl},
                                                        indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results, outl, meta))
    print(markdown(results, outl, meta))
    worst = max(abs(r["uint8"]["gap"]) for r in results)
    if worst > MAX_GAP:
        raise SystemExit(f"largest |nDCG@10 gap| {worst:.4f} exceeds {MAX_GAP}")


if __name__ == "__main__":
    main()
