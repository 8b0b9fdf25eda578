"""Adapting SPLADE-tiny to a collection: label-free and supervised, against BM25 and the base model.

For every collection and every recipe: adapt (or fine-tune) the bundled SPLADE-tiny with
:mod:`sparsearch.encoders.adaptation`, encode the corpus with the adapted model, index it,
and evaluate nDCG@10 / R@100 on the evaluation split, next to BM25 (engine defaults) and the
un-adapted model; sparsity (nnz per document and query, FLOPS) and training wall time are
recorded, and the adapted model fused with BM25 (min-max, the hybrid default) next to
BM25 + dense.

Recipes are chosen on ``--eval-split train`` / ``dev`` (SciFact train, NFCorpus dev); test
judgements are read only by the final run (``--eval-split test``).

    # recipes compared on SciFact train / NFCorpus dev (results/adaptation_choose.json)
    python benchmarks/adaptation.py --collections scifact --eval-split choose --recipe ce --out choose.json
    python benchmarks/adaptation.py --collections scifact nfcorpus --eval-split choose --recipe ict --out choose.json
    # the chosen label-free recipe on test (models reused; Cranfield adapted here)
    python benchmarks/adaptation.py --collections cranfield scifact nfcorpus --eval-split test --reuse \
        --recipe ict --out benchmarks/results/adaptation_labelfree_test.json
    python benchmarks/adaptation.py --collections scifact --eval-split test --recipe gpl-qd \
        --out benchmarks/results/adaptation_labelfree_test.json
    # supervised, settings fixed before any run (results/adaptation_supervised_test.json)
    python benchmarks/adaptation.py --collections scifact --eval-split test --mode supervised \
        --recipe sup-qd sup-doc --out benchmarks/results/adaptation_supervised_test.json
    python benchmarks/adaptation.py --collections nfcorpus --eval-split test --mode supervised \
        --recipe sup-qd-10min sup-doc-10min --out benchmarks/results/adaptation_supervised_test.json
    python benchmarks/adaptation.py --collections nfcorpus --eval-split test --mode supervised \
        --recipe sup-qd-masked-5min --out benchmarks/results/adaptation_supervised_test.json
    python benchmarks/adaptation.py --collections scifact --eval-split test --mode supervised \
        --recipe sup-qd-bm25neg --out benchmarks/results/adaptation_supervised_test.json
    # un-adapted encoders and their settings (splade-idf's idf_weight, document length, windows),
    # chosen on SciFact train / NFCorpus dev, then the chosen one on test
    python benchmarks/adaptation.py --collections scifact nfcorpus --eval-split choose --untrained splade \
        splade-doc splade-idf,idf_weight=0.25 splade-idf,idf_weight=0.5 splade-idf splade-idf,idf_weight=2 \
        splade-doc,max_length=512 splade-doc,windows=4 splade-doc,max_length=512,windows=2 \
        --out benchmarks/results/adaptation_untrained_choose.json
    python benchmarks/adaptation.py --collections scifact nfcorpus cranfield --eval-split test \
        --untrained splade-idf --out benchmarks/results/adaptation_labelfree_test.json
    # label-free adaptation of splade-idf (inverse cloze); stopped after SciFact (below un-adapted)
    python benchmarks/adaptation.py --collections scifact nfcorpus --eval-split choose --recipe ict-idf \
        --out benchmarks/results/adaptation_choose.json
    # supervised splade-idf: sup-qd's settings with the IDF-augmented query side, fixed before the run
    python benchmarks/adaptation.py --collections scifact --eval-split test --mode supervised \
        --recipe sup-idf --out benchmarks/results/adaptation_supervised_test.json
    # the same with documents anchored to the base model's vectors (anchor_weight 0.1, fixed
    # before the run), and its label-free counterpart on the choosing split
    python benchmarks/adaptation.py --collections scifact --eval-split test --mode supervised \
        --recipe sup-idf-anchor --out benchmarks/results/adaptation_supervised_test.json
    python benchmarks/adaptation.py --collections scifact --eval-split choose --recipe ict-idf-anchor \
        --out benchmarks/results/adaptation_choose.json
    python benchmarks/adaptation.py --render benchmarks/results/adaptation_*.json --out tables.md

Run one at a time with ``OMP_NUM_THREADS=1``: two trainings side by side on 2 cores ran up to
5x slower per step each.

Recipes are JSON objects of :class:`~sparsearch.encoders.adaptation.AdaptConfig` fields in
``benchmarks/adaptation_recipes.json``; ``--mode supervised`` fine-tunes on ``qrels/train.tsv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsearch.cli import _parse_opts
from sparsearch.encoders import get_encoder
from sparsearch.encoders.adaptation import AdaptConfig, adapt, finetune
from sparsearch.encoders.dense import DenseEncoder, DenseSearcher
from sparsearch.encoders.splade import SpladeDocEncoder, SpladeEncoder, SpladeIdfEncoder, flops, sparse_stats
from sparsearch.evaluation import evaluate, load_beir, to_run
from sparsearch.fusion import fuse_topk
from sparsearch.index.builder import build_index

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RECIPES = Path(__file__).with_name("adaptation_recipes.json")
MODELS = Path(__file__).resolve().parents[1] / "indexes" / "adapted"
#: the split each collection is judged on while recipes are chosen (never test)
CHOOSE = {"scifact": "train", "nfcorpus": "dev"}
METRICS = ("nDCG@10", "R@100")


def eval_split(collection: str, mode: str) -> str:
    if mode != "choose":
        return mode
    if collection not in CHOOSE:
        raise SystemExit(f"{collection} has no train/dev judgements to choose a recipe on")
    return CHOOSE[collection]


def sparse_lists(encoder, ds, k: int = 1000):
    """(scores, docnums) of ``encoder`` on ``ds`` and its sparsity figures."""
    docs = encoder.encode_documents(ds.doc_texts(), ds.doc_ids)
    qv = encoder.encode_queries(ds.query_texts(), ds.query_ids)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(docs, Path(tmp) / "ix", encoder=encoder)
        lists = index.search(qv, k)
    stats = {"nnz_doc": sparse_stats(docs)["mean_nnz"], "nnz_query": sparse_stats(qv)["mean_nnz"],
             "flops": flops(qv, docs)}
    return lists, stats


def quality(lists, ds) -> dict[str, float]:
    return evaluate(to_run(*lists, ds.doc_ids, ds.query_ids), ds.qrels, METRICS)


def dense_lists(ds, k: int = 1000):
    enc = DenseEncoder()
    emb = enc.encode_documents(ds.doc_texts(), progress=True)
    return DenseSearcher(emb).search(enc.encode_queries(ds.query_texts()), k)


def encoder_for(kind: str, model: str | None):
    return {"splade-doc": SpladeDocEncoder, "splade-idf": SpladeIdfEncoder}.get(kind, SpladeEncoder)(model)


def untrained_encoder(spec: str):
    """``NAME[,key=value...]``: an un-adapted encoder from the registry with these settings
    (parsed as ``--encoder-opt`` values are), e.g. ``splade-idf,idf_weight=0.5``."""
    name, *opts = spec.split(",")
    return get_encoder(name, **_parse_opts(opts))


def _row(name: str, r: dict) -> str:
    fused = r.get("fused_with_bm25", {}).get("nDCG@10")
    cells = [f"{r['nDCG@10']:.4f}", f"{r['R@100']:.4f}", f"{r['nnz_doc']:.0f}" if "nnz_doc" in r else "",
             f"{r['nnz_query']:.1f}" if "nnz_query" in r else "", f"{r['flops']:.2f}" if "flops" in r else "",
             f"{fused:.4f}" if fused is not None else "",
             f"{r['train_seconds']:.0f}" if "train_seconds" in r else "",
             f"{r['examples_per_second']:.1f}" if r.get("examples_per_second") else ""]
    return f"| {name} | " + " | ".join(cells) + " |"


def render(paths: list[Path]) -> str:
    """Markdown tables of result files (one section per file and collection)."""
    head = ("| run | nDCG@10 | R@100 | nnz/doc | nnz/query | FLOPS | fused with BM25 nDCG@10 | train s | examples/s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    out = ["# Adapting SPLADE-tiny: label-free and supervised", "",
           "Written by `benchmarks/adaptation.py --render`; the commands are in its docstring.", ""]
    for p in paths:
        results = json.loads(p.read_text())
        out += [f"## {p.stem}", ""]
        for coll, res in results.items():
            out += [f"### {coll} ({res['split']} judgements)", "", head]
            for name, r in res.items():
                if isinstance(r, dict) and "nDCG@10" in r:
                    out.append(_row(name, r))
            out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collections", nargs="+", default=["scifact", "nfcorpus", "cranfield"])
    ap.add_argument("--eval-split", default="choose", help="choose (train/dev per collection) or a split name")
    ap.add_argument("--recipe", nargs="*", default=[])
    ap.add_argument("--untrained", nargs="*", default=[], metavar="NAME[,key=value...]",
                    help="also evaluate these un-adapted encoders, e.g. splade-idf,idf_weight=0.5")
    ap.add_argument("--mode", choices=["label-free", "supervised"], default="label-free")
    ap.add_argument("--out", required=True)
    ap.add_argument("--render", nargs="+", type=Path, help="only write markdown of these result files to --out")
    ap.add_argument("--reuse", action="store_true", help="reuse adapted models already saved")
    args = ap.parse_args()
    if args.render:
        Path(args.out).write_text(render(args.render))
        return
    recipes = json.loads(RECIPES.read_text())
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for coll in args.collections:
        split = eval_split(coll, args.eval_split)
        ds = load_beir(DATA / coll, split)
        res = results.setdefault(coll, {"split": split})
        base_lists = {}
        if "bm25" not in res:
            bm = get_encoder("bm25")
            base_lists["bm25"], st = sparse_lists(bm, ds)
            res["bm25"] = {**quality(base_lists["bm25"], ds), **st}
            dl = dense_lists(ds)
            res["bm25+dense"] = quality(fuse_topk([base_lists["bm25"], dl], 1000, "minmax"), ds)
        for spec in args.untrained:
            lists, st = sparse_lists(untrained_encoder(spec), ds)
            if "bm25" not in base_lists:
                base_lists["bm25"], _ = sparse_lists(get_encoder("bm25"), ds)
            fused = quality(fuse_topk([base_lists["bm25"], lists], 1000, "minmax"), ds)
            res[f"untrained:{spec}"] = {**quality(lists, ds), **st, "fused_with_bm25": fused}
            print(coll, split, spec, json.dumps(res[f"untrained:{spec}"]), flush=True)
            out.write_text(json.dumps(results, indent=1, sort_keys=True))
        for name in args.recipe:
            cfg = AdaptConfig(**recipes[name])
            key = f"{args.mode}:{name}"
            model_dir = MODELS / f"{coll}-{args.mode}-{name}"
            if f"untrained:{cfg.encoder}" not in res:
                lists, st = sparse_lists(encoder_for(cfg.encoder, None), ds)
                res[f"untrained:{cfg.encoder}"] = {**quality(lists, ds), **st}
            t0 = time.monotonic()
            if not (args.reuse and (model_dir / "provenance.json").exists()):
                run = adapt if args.mode == "label-free" else finetune
                prov = run(DATA / coll, model_dir, cfg, progress=True)
            else:
                prov = json.loads((model_dir / "provenance.json").read_text())
            wall = time.monotonic() - t0
            lists, st = sparse_lists(encoder_for(cfg.encoder, str(model_dir)), ds)
            if "bm25" not in base_lists:
                base_lists["bm25"], _ = sparse_lists(get_encoder("bm25"), ds)
            fused = quality(fuse_topk([base_lists["bm25"], lists], 1000, "minmax"), ds)
            res[key] = {**quality(lists, ds), **st, "fused_with_bm25": fused, "adapt_wall_seconds": round(wall, 1),
                        "train_seconds": prov["train_seconds"], "examples_per_second": prov["examples_per_second"],
                        "steps": prov["steps"], "teacher_seconds": prov.get("teacher_seconds"),
                        "recipe": prov["recipe"]}
            print(coll, split, key, json.dumps({k: v for k, v in res[key].items() if k != "recipe"}), flush=True)
            out.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(coll, split, "bm25", res["bm25"], flush=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
