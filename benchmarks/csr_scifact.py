"""CSR on SciFact: dense MiniLM vs sparse codes at k = 8, 16, 32, 64, matching pursuit, hybrids.

    python benchmarks/csr_scifact.py [--data ../shared/data/scifact] [--out benchmarks/results]

What it does (all numbers on the *test* queries; nothing is tuned on them):

1. Embeds corpus, titles, train and test queries with the bundled all-MiniLM-L6-v2 (cached).
2. Splits the train queries: ``--dev-fraction`` of them are held out as a *dev* split for
   fusion tuning; the rest (+ title -> document self-supervised pairs) train one CSR coder
   (InfoNCE pairs, reconstruction ladder k = 8..64, AuxK, similarity distillation). Training time is measured (pass
   ``--retrain`` to ignore the coder cache).
3. For every k: encodes documents and queries with that k (one coder), builds the inverted
   index (uint8 impacts) and evaluates; also matching pursuit over the same dictionary.
4. Hybrids BM25 + CSR(k=32) and BM25 + dense: min-max / z-score interpolation and RRF, each
   weight tuned on the dev split, then applied to test.
5. Writes ``csr_scifact.json`` and the plot ``csr_scifact.png`` (nDCG@10 vs k) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sparsearch.encoders.bm25 import BM25Encoder  # noqa: E402
from sparsearch.encoders.dense import DenseEncoder, DenseSearcher  # noqa: E402
from sparsearch.encoders.sparse_coding import CSREncoder  # noqa: E402
from sparsearch.evaluation import evaluate, load_beir  # noqa: E402
from sparsearch.fusion import interpolate, rrf, tune_interpolation, tune_rrf  # noqa: E402
from sparsearch.index import build_index  # noqa: E402

METRICS = ("nDCG@10", "R@100", "RR@10")
KS = (8, 16, 32, 64)


def split_train(train, dev_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(dev query ids, coder-training query ids): a seeded random ``dev_fraction`` of the train queries."""
    rng = np.random.default_rng(seed)
    tq = np.array(train.query_ids)
    dev_mask = rng.random(len(tq)) < dev_fraction
    return tq[dev_mask].tolist(), tq[~dev_mask].tolist()


def coder_pairs(train, fit_q: list[str], Qtrain: np.ndarray, doc_ids: list[str], titles: list[str], T: np.ndarray,
                mode: str = "qrels+titles") -> tuple[np.ndarray | None, list[tuple[int, int]]]:
    """Contrastive pairs for the coder: (query embeddings (p, d), [(query row, doc row)]) from the
    qrels of ``fit_q`` (mode ``qrels+titles``) and/or title -> document pairs (``titles`` too)."""
    pos = {d: i for i, d in enumerate(doc_ids)}
    qpos = {q: i for i, q in enumerate(train.query_ids)}
    q_rows, pairs = [], []
    if mode == "qrels+titles":
        for q in fit_q:
            for d, g in train.qrels[q].items():
                if g > 0 and d in pos:
                    pairs.append((len(q_rows), pos[d]))
                    q_rows.append(Qtrain[qpos[q]])
    if mode in ("qrels+titles", "titles"):
        for i, title in enumerate(titles):
            if title.strip():
                pairs.append((len(q_rows), i))
                q_rows.append(T[i])
    return (np.stack(q_rows) if q_rows else None), pairs


def default_coder(test, train, fit_q: list[str], dev_fraction: float = 0.25, seed: int = 0, labels: bool = False):
    """This benchmark's default coder (k=32, h=1536, 30 epochs, ``fit_q`` qrels + titles), from the
    trained-coder cache when it ran before: (csr, dense encoder, document embeddings, pairs, seconds)."""
    ids, texts = test.doc_ids, test.doc_texts()
    titles, _ = test.titles_and_bodies()
    dense = DenseEncoder()
    D = dense.encode_documents(texts, progress=True)
    T = dense.encode_documents(titles)
    Qtrain = dense.encode_queries(train.query_texts())
    Qfit, pairs = coder_pairs(train, fit_q, Qtrain, ids, titles, T)
    csr = CSREncoder(None, k=32, h=1536, epochs=30, labels=labels, seed=seed, distill_coef=1.0)
    t = time.time()
    csr.fit_embeddings(D, Qfit, np.asarray(pairs, np.int64),
                       cache_id=f"scifact-bench:{len(ids)}:qrels+titles:{dev_fraction}:{seed}:{len(pairs)}",
                       log_every=100)
    return csr, dense, D, pairs, time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")) / "scifact")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--model", default=None, help="dense model (default: bundled all-MiniLM-L6-v2)")
    ap.add_argument("--h", type=int, default=1536, help="dictionary size (latents)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--dev-fraction", type=float, default=0.25,
                    help="train queries held out from CSR training, used to tune the fusion weights")
    ap.add_argument("--pairs", choices=("qrels+titles", "titles", "none"), default="qrels+titles",
                    help="contrastive pairs: train qrels and titles, titles only (self-supervised), none")
    ap.add_argument("--distill", type=float, default=1.0,
                    help="weight of the self-supervised similarity distillation (codes mimic dense cosines)")
    ap.add_argument("--retrain", action="store_true", help="ignore the trained-coder cache (measures training)")
    ap.add_argument("--no-mp", action="store_true", help="skip matching pursuit")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.data / "corpus.jsonl").exists():
        raise SystemExit(f"no BEIR collection at {args.data}; pass --data")
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    test = load_beir(args.data, "test")
    train = load_beir(args.data, "train")
    doc_ids, texts = test.doc_ids, test.doc_texts()
    titles, _ = test.titles_and_bodies()
    dev_q, fit_q = split_train(train, args.dev_fraction, args.seed)
    dev_qrels = {q: train.qrels[q] for q in dev_q}
    print(f"SciFact: {len(doc_ids)} docs, {len(test.queries)} test queries, train queries: {len(fit_q)} for CSR "
          f"training, {len(dev_q)} held out as dev (fusion tuning)", flush=True)

    # 1. dense embeddings (cached on disk)
    dense = DenseEncoder(args.model)
    t = time.perf_counter()
    D = dense.encode_documents(texts, progress=True)
    T = dense.encode_documents(titles)
    Qtest = dense.encode_queries(test.query_texts())
    Qtrain = dense.encode_queries(train.query_texts())
    res["embed_seconds_or_cache"] = time.perf_counter() - t
    qpos = {q: i for i, q in enumerate(train.query_ids)}
    Qdev = Qtrain[[qpos[q] for q in dev_q]]
    searcher = DenseSearcher(D, doc_ids)
    runs_test = {"dense": searcher.search_run(Qtest, 1000, query_ids=test.query_ids)}
    runs_dev = {"dense": searcher.search_run(Qdev, 1000, query_ids=dev_q)}
    res["dense"] = evaluate(runs_test["dense"], test.qrels, METRICS)
    print("dense", res["dense"], flush=True)

    # 2. train the coder
    Qfit, pairs = coder_pairs(train, fit_q, Qtrain, doc_ids, titles, T, args.pairs)
    csr = CSREncoder(args.model, k=32, h=args.h, epochs=args.epochs, labels=False, cache=not args.retrain,
                     seed=args.seed, distill_coef=args.distill)
    t = time.perf_counter()
    cache_id = f"scifact-bench:{len(doc_ids)}:{args.pairs}:{args.dev_fraction}:{args.seed}:{len(pairs)}"
    csr.fit_embeddings(D, Qfit, np.asarray(pairs, np.int64).reshape(-1, 2), cache_id=cache_id, log_every=100)
    res["train_wall_seconds"] = time.perf_counter() - t
    rep = csr.train_report
    res["train_seconds"] = rep.seconds if rep else None
    res["train_steps"] = rep.steps if rep else None
    res["train_final"] = rep.final if rep else None
    res["n_pairs"] = len(pairs)
    print(f"coder: h={csr.h}, {len(pairs)} pairs, training {res['train_seconds']:.0f}s "
          f"({res['train_steps']} steps; wall incl. cache {res['train_wall_seconds']:.1f}s)", flush=True)
    print("coder stats", json.dumps(res["train_final"]), flush=True)

    # 3. sparse retrieval through the inverted index at every k, one coder
    res["csr"], res["mp"], res["l0"] = {}, {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="csr-bench-"))
    for kind in (("topk", "mp") if not args.no_mp else ("topk",)):
        for k in KS:
            enc = csr.with_k(k, coder=kind)
            t = time.perf_counter()
            docs = enc.codes(D, k, doc_ids)
            enc_s = time.perf_counter() - t
            index = build_index(docs, tmp / f"{kind}-{k}", encoder=None)
            q = enc.codes(Qtest, k, test.query_ids)
            t = time.perf_counter()
            run = index.search_run(q, 1000)
            search_s = time.perf_counter() - t
            m = evaluate(run, test.qrels, METRICS)
            m.update({"doc_l0": float(docs.nnz_per_row().mean()), "encode_s": enc_s, "search_s_300q": search_s})
            res["csr" if kind == "topk" else "mp"][k] = m
            print(f"{kind:4s} k={k:3d} nDCG@10={m['nDCG@10']:.4f} "
                  f"({100 * m['nDCG@10'] / res['dense']['nDCG@10']:.1f}% of dense)  L0={m['doc_l0']:.2f}", flush=True)
            if kind == "topk" and k == 32:
                freq = np.bincount(docs.indices, minlength=csr.h) / len(docs)
                np.save(args.out / "latent_freq_k32.npy", freq)  # profile for benchmarks/csr_latency.py
                runs_test["csr32"] = run
                runs_dev["csr32"] = index.search_run(enc.codes(Qdev, k, dev_q), 1000)

    # 4. hybrids, tuned on the dev split only
    bm25 = BM25Encoder().fit(texts)
    bindex = build_index(bm25.encode_documents(texts, doc_ids), tmp / "bm25", encoder=None)
    runs_test["bm25"] = bindex.search_run(bm25.encode_queries(test.query_texts(), test.query_ids), 1000)
    runs_dev["bm25"] = bindex.search_run(bm25.encode_queries([train.queries[q] for q in dev_q], dev_q), 1000)
    res["bm25"] = evaluate(runs_test["bm25"], test.qrels, METRICS)
    print("bm25", res["bm25"], flush=True)
    res["hybrid"] = {}
    for other in ("csr32", "dense"):
        for norm in ("minmax", "zscore"):
            tr = tune_interpolation(runs_dev["bm25"], runs_dev[other], dev_qrels, norm=norm)
            m = evaluate(interpolate(runs_test["bm25"], runs_test[other], tr.best, norm), test.qrels, METRICS)
            res["hybrid"][f"bm25+{other}:{norm}"] = {"alpha_bm25": tr.best, "dev_nDCG@10": tr.score, **m}
        tr = tune_rrf([runs_dev["bm25"], runs_dev[other]], dev_qrels)
        m = evaluate(rrf([runs_test["bm25"], runs_test[other]], tr.best), test.qrels, METRICS)
        res["hybrid"][f"bm25+{other}:rrf"] = {"rrf_k": tr.best, "dev_nDCG@10": tr.score, **m}
    singles = {"bm25": res["bm25"]["nDCG@10"], "dense": res["dense"]["nDCG@10"], "csr32": res["csr"][32]["nDCG@10"]}
    res["best_single"] = max(singles.items(), key=lambda x: x[1])
    for name, m in res["hybrid"].items():
        print(f"{name:24s} nDCG@10={m['nDCG@10']:.4f} (dev-tuned {'alpha' if 'alpha_bm25' in m else 'k'}="
              f"{m.get('alpha_bm25', m.get('rrf_k'))})", flush=True)
    print(f"best single run: {res['best_single'][0]} {res['best_single'][1]:.4f}", flush=True)

    # 5. plot + json
    (args.out / "csr_scifact.json").write_text(json.dumps(res, indent=1, default=float))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.plot(KS, [res["csr"][k]["nDCG@10"] for k in KS], "o-", label="CSR (top-k coder)")
        if res["mp"]:
            ax.plot(KS, [res["mp"][k]["nDCG@10"] for k in KS], "s--", label="matching pursuit")
        ax.axhline(res["dense"]["nDCG@10"], color="k", ls=":", label="dense MiniLM (exact)")
        ax.axhline(0.97 * res["dense"]["nDCG@10"], color="grey", ls=":", lw=0.8, label="97% of dense")
        ax.axhline(res["bm25"]["nDCG@10"], color="tab:red", ls="-.", lw=0.8, label="BM25")
        ax.set_xscale("log", base=2)
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_xlabel("k (non-zeros per vector)")
        ax.set_ylabel("nDCG@10 (SciFact test)")
        ax.set_title(f"CSR on SciFact, h={csr.h}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out / "csr_scifact.png", dpi=120)
        print(f"wrote {args.out / 'csr_scifact.png'}", flush=True)
    except ImportError:
        print("matplotlib missing: no plot", flush=True)


if __name__ == "__main__":
    main()
