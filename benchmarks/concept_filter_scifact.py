"""Concept filters on SciFact: a CSR index, the labels of its most used latents, filtered queries.

    python benchmarks/concept_filter_scifact.py [--data ../shared/data/scifact] [--index indexes/scifact-csr-concepts]

1. Builds (or reuses, unless ``--rebuild``) a CSR (k=32, h=1536) index of SciFact with latent
   labels (``labels.json`` saved with the encoder). The coder is the one of
   ``benchmarks/csr_scifact.py`` (75% of the train queries + titles, seed 0), taken from the
   trained-coder cache when that benchmark or ``hybrid_best_scifact.py`` ran before.
2. Counts, per latent, the documents in which it is active (non-zero) and lists the five most
   used with their labels (the first three label words, as ``concept()`` matches them).
3. Runs each query unfiltered and with a filter (``concept("<word>")`` and ``latent(j) > t``,
   neither needs any metadata), and times both (median of ``--repeat`` single-query searches,
   ``evaluation.time_queries``, one thread; the filter's bitmap is compiled on first use and
   cached, timed apart).

Writes benchmarks/results/concept_filter_scifact.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from csr_scifact import default_coder, split_train  # noqa: E402 (benchmarks/ is the script's folder)
from sparsearch.evaluation import load_beir, time_queries  # noqa: E402
from sparsearch.index import build_index, open_index  # noqa: E402
from sparsearch.searching import ExactParams  # noqa: E402

#: (query, filter, threshold): the query runs unfiltered and with ``filter > threshold``;
#: ``latent(@word)`` stands for the most used latent that concept("word") matches
DEMOS = (
    ("aging", 'concept("stem")', 0.3),
    ("obesity and diabetes", 'concept("immune")', 0.3),
    ("cell migration", "latent(@cancer)", 0.3),
)


def concept_latents(labels, word: str) -> list[int]:
    """The latents ``concept(word)`` matches: ``word`` among the first three words of the label."""
    return [j for j in range(len(labels)) if word in labels.label(j).split(", ")]


def build(args, test, train) -> tuple[float, float | None]:
    """Build the CSR index with labels at ``args.index`` (reused when present): (seconds, seconds
    of them spent training or loading the coder), (0, None) when reused."""
    if (args.index / "manifest.json").exists() and not args.rebuild:
        return 0.0, None
    t = time.perf_counter()
    _, fit_q = split_train(train, args.dev_fraction, args.seed)
    csr, _, D, _, train_s = default_coder(test, train, fit_q, args.dev_fraction, args.seed, labels=True)
    csr.label_features(test.doc_texts(), doc_emb=D)
    build_index(csr.codes(D, 32, test.doc_ids), args.index, encoder=csr, documents=test.corpus,
                extra={"collection": "scifact"})
    return time.perf_counter() - t, train_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")) / "scifact")
    ap.add_argument("--index", type=Path, default=Path("indexes/scifact-csr-concepts"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--dev-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    test, train = load_beir(args.data, "test"), load_beir(args.data, "train")
    build_s, train_s = build(args, test, train)
    built = train_s is not None
    idx = open_index(args.index)
    labels = idx.feature_labels()
    enc = idx.load_encoder()
    titles = {d: v.get("title", "") for d, v in test.corpus.items()}
    n_docs = len(idx.doc_ids)

    # latents by the number of documents they are active in (counted when labelling, same codes
    # as the index), checked against the index's postings through latent(j) for the five kept
    df = np.asarray(labels.n_active, np.int64)
    top = np.argsort(-df, kind="stable")[:5]
    for j in top:
        got = int(idx.filter_mask(f"latent({j})").sum())
        if got != df[j]:
            raise SystemExit(f"latent {j}: labels count {df[j]} documents, the index {got}")
    rows = [{"latent": int(j), "documents": int(df[j]), "share": float(df[j] / n_docs),
             "label": labels.label(int(j)), "words": [w for w, _ in labels.words(int(j))]} for j in top]

    demos = []
    one = ExactParams(threads=1)
    for query, base, thr in DEMOS:
        word = base.split('"')[1] if base.startswith("concept") else base.split("@")[1].rstrip(")")
        matched = concept_latents(labels, word)
        if base.startswith("latent"):
            matched = [max(matched, key=lambda j: df[j])]
            base = f"latent({matched[0]})"
        flt = f"{base} > {thr}"
        q = enc.encode_queries([query], ["q"])
        t = time.perf_counter()
        selected = int(idx.filter_mask(flt).sum())
        compile_ms = 1000 * (time.perf_counter() - t)
        selected_any = int(idx.filter_mask(base).sum())
        fp = ExactParams(threads=1, filter=flt)
        res = {}
        for name, p in (("unfiltered", one), ("filtered", fp)):
            scores, docs = idx.search(q, 5, p)
            res[name] = {"ids": [idx.doc_ids[d] for d in docs[0]], "scores": [float(s) for s in scores[0]],
                         "ms": 1000 * float(np.median(time_queries(lambda _, p=p: idx.search(q, 5, p), args.repeat)))}
        demos.append({"query": query, "filter": flt, "selected": selected, "selected_any_weight": selected_any,
                      "latents": [{"latent": j, "label": labels.label(j), "documents": int(df[j])} for j in matched],
                      "compile_ms": compile_ms, **res})
        print(query, "|", flt, "|", selected, "docs", flush=True)

    report = {"index": str(args.index), "built": built, "build_seconds": build_s, "coder_seconds": train_s,
              "documents": n_docs,
              "latents": len(labels), "top_latents": rows, "demos": demos, "repeat": args.repeat}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concept_filter_scifact.json").write_text(json.dumps(report, indent=1))

    L = ["# Concept filters on SciFact (CSR k=32, h=1536)", "",
         f"Index `{args.index}` ({n_docs} documents, {len(labels)} latents; "
         + (f"built in {build_s:.0f} s, of which {train_s:.1f} s for the coder of `benchmarks/csr_scifact.py`: "
            + ("from its cache)" if train_s < 60 else "trained)") if built else "reused)")
         + ". Produced by `python benchmarks/concept_filter_scifact.py`.", "",
         "## The five latents active in the most documents", "",
         "| latent | documents | share | label (first 3 words: what `concept()` matches) | more label words |",
         "|---|---|---|---|---|"]
    for r in rows:
        more = ", ".join(r["words"][3:])
        L.append(f"| f{r['latent']} | {r['documents']} | {r['share']:.1%} | {r['label']} | {more} |")
    L += ["", "A label is read from a latent's 25 strongest documents; the most used latents are also weakly "
          "active in a large share of the corpus, so a concept filter is most selective with a weight threshold "
          "(`concept(\"w\") > 0.3` below); `concept(\"w\")` matches every latent with `w` among its first three "
          "label words.",
          "", "## Queries, unfiltered and filtered (top 5)", "",
          f"Latency: median of {args.repeat} single-query exact searches on one thread after 2 untimed ones "
          "(`evaluation.time_queries`; query already encoded); "
          "the filter's bitmap is compiled on first use and cached per expression and commit (first-use time shown).",
          ""]
    for d in demos:
        L += [f"### `{d['query']}` with `{d['filter']}`", "",
              f"Latents matched ({len(d['latents'])}): "
              + "; ".join(f"f{x['latent']} ({x['label']})" for x in d["latents"]) + ".", "",
              f"The filter selects {d['selected']} of {n_docs} documents ({d['selected_any_weight']} with any weight; "
              f"bitmap compiled in {d['compile_ms']:.1f} ms). "
              f"Search: {d['unfiltered']['ms']:.3f} ms unfiltered, {d['filtered']['ms']:.3f} ms filtered.", "",
              "```bash",
              f"sparsearch search {args.index} -q {shlex.quote(d['query'])} -k 5 --filter {shlex.quote(d['filter'])}",
              "```", "", "| rank | unfiltered | score | filtered | score |", "|---|---|---|---|---|"]
        for i in range(5):
            u = d["unfiltered"]
            f = d["filtered"]
            cu = f"{u['ids'][i]}: {titles.get(u['ids'][i], '')[:90]}" if i < len(u["ids"]) else ""
            cf = f"{f['ids'][i]}: {titles.get(f['ids'][i], '')[:90]}" if i < len(f["ids"]) else ""
            su = f"{u['scores'][i]:.3f}" if i < len(u["scores"]) else ""
            sf = f"{f['scores'][i]:.3f}" if i < len(f["scores"]) else ""
            L.append(f"| {i + 1} | {cu.replace('|', '/')} | {su} | {cf.replace('|', '/')} | {sf} |")
        L.append("")
    (args.out / "concept_filter_scifact.md").write_text("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    main()
