"""SciFact: the best hybrid of bundled models, with train qrels used only for CSR and fusion weights.

    python benchmarks/hybrid_best_scifact.py [--data ../shared/data/scifact] [--root indexes/bench-hybrid]

Protocol (test qrels only for the final figures):

1. SciFact's train queries are split once (seed 0): 75% train a CSR coder over the bundled
   MiniLM embeddings (InfoNCE on query -> relevant document pairs, plus title -> document pairs,
   the settings of ``benchmarks/csr_scifact.py``); the other 25% are a held-out *dev* split.
2. One hybrid index holds bm25 (default analyzer), dense (MiniLM) and csr (k=32).
3. For each member set, the fusion (RRF k=60 / min-max / z-score, weights on a 0.1 grid) is
   fitted on the dev queries (``sparsearch.fusion.tune_fusion``) and applied to the test queries;
   the label-free default fusion (``DEFAULT_FUSION``, equal weights) is reported next to it.
4. The best dev setting of bm25+dense+csr is saved with the index (``fusion.json``), so that
   ``sparsearch evaluate INDEX ../shared/data/scifact`` reproduces the figure.

Writes benchmarks/results/hybrid_best_scifact.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from csr_scifact import default_coder, split_train  # noqa: E402 (benchmarks/ is the script's folder)
from sparsearch.encoders.bm25 import BM25Encoder
from sparsearch.evaluation import evaluate, load_beir, to_run
from sparsearch.fusion import fuse_topk, tune_fusion
from sparsearch.index.hybrid import DEFAULT_FUSION, build_hybrid, save_fusion
from sparsearch.searching import HybridParams

SETS = (("bm25", "dense"), ("bm25", "csr"), ("dense", "csr"), ("bm25", "dense", "csr"))
METRICS = ("nDCG@10", "R@100")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")) / "scifact")
    ap.add_argument("--root", type=Path, default=Path("indexes/bench-hybrid"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--dev-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    test, train = load_beir(args.data, "test"), load_beir(args.data, "train")
    ids, texts = test.doc_ids, test.doc_texts()
    dev_q, fit_q = split_train(train, args.dev_fraction, args.seed)  # the split of csr_scifact.py

    # CSR coder: 75% of the train queries + titles (cached once trained)
    csr, dense, _, pairs, train_s = default_coder(test, train, fit_q, args.dev_fraction, args.seed)

    idx = build_hybrid(args.root / "scifact-bm25-dense-csr", texts, ids,
                       [("bm25", BM25Encoder()), ("dense", dense), ("csr", csr)], documents=test.corpus)
    enc = idx.load_encoder()
    dev_texts = [train.queries[q] for q in dev_q]
    qdev = enc.encode_queries(dev_texts, dev_q)
    qtest = enc.encode_queries(test.query_texts(), test.query_ids)
    dev_qrels = {q: train.qrels[q] for q in dev_q}
    _, _, ldev, _ = idx.search_detailed(qdev, 1000, HybridParams(depth=1000))
    _, _, ltest, _ = idx.search_detailed(qtest, 1000, HybridParams(depth=1000))
    depth = DEFAULT_FUSION.depth

    def cut(lists, members):
        return [(lists[m][0][:, :depth], lists[m][1][:, :depth]) for m in members]

    def score(result, qids) -> dict:
        return evaluate(to_run(*result, idx.doc_ids, qids), test.qrels, METRICS)

    rows = {m: score((ltest[m][0][:, :1000], ltest[m][1][:, :1000]), test.query_ids) for m in ("bm25", "dense", "csr")}
    chosen = {}
    for members in SETS:
        name = "+".join(members)
        d = DEFAULT_FUSION
        rows[f"{name} default"] = score(fuse_topk(cut(ltest, members), 1000, d.fusion, None, d.rrf_k),
                                        test.query_ids)
        ch = tune_fusion(cut(ldev, members), idx.doc_ids, dev_q, dev_qrels)
        rows[f"{name} dev-tuned"] = score(fuse_topk(cut(ltest, members), 1000, ch.fusion, ch.weights, ch.rrf_k),
                                          test.query_ids)
        chosen[name] = {"fusion": ch.fusion, "weights": list(ch.weights), "rrf_k": ch.rrf_k, "dev nDCG@10": ch.score}
    best = chosen["bm25+dense+csr"]
    save_fusion(idx.path, HybridParams(fusion=best["fusion"], weights=tuple(best["weights"]), rrf_k=best["rrf_k"],
                                       depth=depth),
                {"collection": "scifact", "split": f"train, {len(dev_q)} held-out queries (seed {args.seed})",
                 "metric": "nDCG@10", "score": best["dev nDCG@10"]})
    report = {"protocol": __doc__, "dev_queries": len(dev_q), "csr_train_queries": len(fit_q),
              "csr_pairs": len(pairs), "csr_train_seconds_or_cache": train_s, "test": rows, "chosen_on_dev": chosen,
              "index": str(idx.path), "seconds": time.time() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hybrid_best_scifact.json").write_text(json.dumps(report, indent=1))
    lines = ["# SciFact: best hybrid of bundled models (train qrels used for CSR and fusion weights only)", "",
             f"CSR trained on {len(fit_q)} train queries ({len(pairs)} pairs with titles; "
             f"{train_s:.0f} s or cache); fusion fitted on {len(dev_q)} held-out train queries; test figures below.",
             "", "| run | nDCG@10 | R@100 | fusion chosen on dev |", "|---|---|---|---|"]
    for k, v in rows.items():
        c = chosen.get(k.replace(" dev-tuned", "")) if k.endswith("dev-tuned") else None
        how = (f"{c['fusion']} weights {c['weights']} (dev {c['dev nDCG@10']:.4f})" if c else "")
        lines.append(f"| {k} | {v['nDCG@10']:.4f} | {v['R@100']:.4f} | {how} |")
    (args.out / "hybrid_best_scifact.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
