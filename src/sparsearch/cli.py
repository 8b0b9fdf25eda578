"""The ``sparsearch`` command: index, add, delete, merge, build-approx, search, evaluate, tune, stats, serve, ...

Run ``sparsearch COMMAND --help`` for every option. Commands raise
:class:`~sparsearch.errors.SparsearchError` for anything the user can fix; :func:`main` (the
console script) prints it as one ``error:`` line and exits with status 2. Commands import what
they need when they run, so that ``sparsearch --help`` starts fast.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from .errors import ConflictError, InvalidInputError, MissingExtraError, MissingFileError, SparsearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sparse retrieval: encode, index, search and evaluate (BM25, SPLADE, CSR).")

DEFAULT_DATA = Path(os.environ.get("SPARSEARCH_DATA", "../shared/data")) / "scifact"


def _parse_opts(opts: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, booleans)."""
    out: dict[str, Any] = {}
    for o in opts or []:
        if "=" not in o:
            raise InvalidInputError(f"--encoder-opt expects key=value, got {o!r}")
        k, v = o.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _load_queries(index, queries: Optional[Path], query: list[str] | None):
    """Query vectors from --query texts, a BEIR queries.jsonl, or a sparse vector file."""
    from .evaluation import _read_jsonl_objects
    from .vectors import FormatError, SparseBatch

    if query:
        return index.load_encoder().encode_queries(query, [str(i) for i in range(len(query))])
    if queries is None:
        raise InvalidInputError("give --query TEXT (repeatable) or --queries FILE")
    if not queries.is_file():
        raise MissingFileError(f"no query file {queries}")
    if queries.suffix == ".npz":
        return SparseBatch.load_npz(queries)
    with open(queries, encoding="utf-8") as f:
        line = next((line for line in f if line.strip()), "{}")
    try:
        first = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"{queries}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(first, dict) and ("vector" in first or "content" in first):
        return SparseBatch.read_jsonl(queries)
    objs = [o for _, o in _read_jsonl_objects(queries)]
    return index.load_encoder().encode_queries([o.get("text", "") for o in objs], [str(o["_id"]) for o in objs])


MODE_HELP = ("exact (block-max MaxScore, rank-safe), exhaustive (score every posting), approximate "
             "(Seismic-style; needs the approximate index: `sparsearch build-approx INDEX` or `index --approximate`), "
             "or anytime (impact-ordered postings scored best first until --max-postings / --budget-ms run out)")
MAX_POSTINGS_HELP = "anytime: stop each query after this many postings (default: no limit)."
BUDGET_MS_HELP = ("anytime: stop scoring each query after this many milliseconds (default: no limit); encoding the "
                  "query and selecting its top k come on top.")
QUERY_CUT_HELP = ("approximate: visit the posting lists of the query's N largest terms (default: the setting saved by "
                  "`tune --save`, else 10).")
HEAP_FACTOR_HELP = ("approximate: skip blocks whose summary score is below heap_factor x the current k-th score "
                    "(default: the setting saved by `tune --save`, else 0.9).")
CANDIDATES_HELP = ("approximate: 0 = Seismic's block scan; N >= 1 = the candidate strategy: partial scores over the "
                   "--query-cut heaviest terms' pruned lists, then the N best documents scored exactly (default: the "
                   "setting saved by `tune --save`, else 0, or 100 on an index built --no-summaries).")
FORWARD_CUT_HELP = ("approximate, Seismic's block scan: score each document on its N heaviest entries only, then "
                    "the --rerank best on their whole vectors (default: the setting saved by `tune --save`, else 0 = "
                    "whole vectors).")
RERANK_HELP = ("approximate with --forward-cut: documents scored on their whole vectors at the end (at least k; "
               "default: the setting saved by `tune --save`, else 200).")


FUSION_HELP = "Hybrid index: fusion of the representations, rrf, minmax or zscore (default: the saved or default one)."
WEIGHTS_HELP = ("Hybrid index: fusion weight per representation, NAME=W comma-separated (bm25=0.3,dense=0.7) or in "
                "the index's order (0.3,0.7).")
DEPTH_HELP = "Hybrid index: documents each representation returns before fusion."
RRF_K_HELP = "Hybrid index: the RRF rank constant."
FILTER_HELP = ('Search only the documents this expression selects, e.g. \'year >= 2015 and source in ["pubmed", "pmc"]\', '
               '\'not exists(author)\', \'has("cancer")\' (metadata fields of the corpus; see the README, "Filters").')


def _parse_weights(text: str, names: list[str]) -> tuple[float, ...]:
    """``--weights`` as one weight per representation, in the index's order."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            given = {n.strip(): float(w) for n, _, w in (p.partition("=") for p in parts)}
            unknown = set(given) - set(names)
            if unknown:
                raise InvalidInputError(f"--weights names {sorted(unknown)[0]!r}; the representations are "
                                        f"{', '.join(names)}")
            return tuple(given.get(n, 0.0) for n in names)
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise InvalidInputError(f"--weights {text!r}: expected numbers (NAME=W or W, comma-separated)") from None
    if len(weights) != len(names):
        raise InvalidInputError(f"--weights gives {len(weights)} numbers for {len(names)} representations "
                                f"({', '.join(names)})")
    return weights


def _search_params(mode: str, index: Path, *, threads: Optional[int] = None, strict_vocab: bool = False,
                   query_cut: Optional[int] = None, heap_factor: Optional[float] = None,
                   fusion: Optional[str] = None, weights: Optional[str] = None, depth: Optional[int] = None,
                   rrf_k: Optional[float] = None, max_postings: Optional[int] = None,
                   budget_ms: Optional[float] = None, candidates: Optional[int] = None,
                   forward_cut: Optional[int] = None, rerank: Optional[int] = None):
    """The parameter object of ``--mode`` (for a hybrid index: its fusion, with ``--mode`` applied
    to its sparse representations); knobs not given come from ``tune --save`` / ``tune-fusion --save``."""
    from dataclasses import replace

    from .index.approximate import default_params
    from .index.hybrid import DEFAULT_FUSION, is_hybrid, load_fusion
    from .index.manifest import read_manifest
    from .searching import params_for_mode

    unknown = "error" if strict_vocab else "drop"
    if is_hybrid(index):
        sparse = params_for_mode(mode, threads=threads, unknown=unknown, query_cut=query_cut, heap_factor=heap_factor,
                                 max_postings=max_postings, budget_ms=budget_ms, candidates=candidates,
                                 forward_cut=forward_cut, rerank=rerank)
        base = load_fusion(index) or DEFAULT_FUSION
        names = [m["name"] for m in read_manifest(index)["members"]]
        given = {k: v for k, v in {"fusion": fusion, "depth": depth, "rrf_k": rrf_k,
                                   "weights": _parse_weights(weights, names) if weights else None}.items()
                 if v is not None}
        return replace(base, sparse=sparse, threads=threads, unknown=unknown, **given).check()
    if fusion is not None or weights is not None or depth is not None or rrf_k is not None:
        raise InvalidInputError(f"{index} is not a hybrid index: --fusion, --weights, --depth and --rrf-k do not apply")
    saved = default_params(index) if mode == "approximate" else None
    return params_for_mode(mode, threads=threads, unknown=unknown, query_cut=query_cut, heap_factor=heap_factor,
                           saved=saved, max_postings=max_postings, budget_ms=budget_ms, candidates=candidates,
                           forward_cut=forward_cut, rerank=rerank)


def _with_filter(params, expr: Optional[str]):
    """``params`` restricted to the documents the filter ``expr`` selects (``None``: unchanged)."""
    from dataclasses import replace

    return params if expr is None else replace(params, filter=expr).check()


def _open_searcher(index: Path, mode: str):
    """``(index, searcher)``: the index itself, or its approximate index for --mode approximate
    (opened, never built: a missing one raises NotFoundError naming `sparsearch build-approx`). A
    hybrid index is its own searcher (its sparse representations follow the mode's parameters)."""
    from .index import Index
    from .index.approximate import ApproximateIndex
    from .index.hybrid import open_searcher

    idx = open_searcher(index)
    if isinstance(idx, Index) and mode == "approximate":
        return idx, ApproximateIndex.open(idx)
    return idx, idx


DATA_HELP = ("What to index (detected, or named by --format): a BEIR folder (corpus.jsonl; queries/qrels optional), "
             "a .jsonl file of {\"id\", \"text\"[, \"title\"]} documents, a .csv/.tsv file with a header row, a plain "
             ".txt file (one document per line, ids = line numbers), a folder of .txt/.md files (ids = relative "
             "paths), or ready sparse vectors (.jsonl of {\"id\", \"vector\"} lines, or .npz), indexed as they are.")
FORMAT_HELP = "Input format: auto (detect), beir, jsonl (documents), vectors, csv, tsv, text, folder."
ID_FIELD_HELP = "CSV/TSV column (or JSONL key) of the document ids (default: id, _id or docid; else the line number)."
TEXT_FIELD_HELP = "CSV/TSV column (or JSONL key) of the document text (default: text, body or contents)."
TITLE_FIELD_HELP = "CSV/TSV column (or JSONL key) of the document title (default: title, if present)."


def _read_input(data: Path, fmt: str, id_field: Optional[str], text_field: Optional[str],
                title_field: Optional[str]):
    """``ingest.read_input``: documents (TextInput) or ready vectors (VectorInput); no documents is an error."""
    from .ingest import TextInput, read_input
    from .vectors import FormatError

    src = read_input(data, fmt=fmt, id_field=id_field, text_field=text_field, title_field=title_field)
    if isinstance(src, TextInput) and not len(src):
        raise FormatError(f"{data}: no documents (only blank lines)")
    return src


@contextlib.contextmanager
def _undo_on_failure(out: Path) -> Iterator[None]:
    """If the command fails (an error or an interrupt), remove what it created at ``out``: the
    directory itself (and any parent it created) when it did not exist before, else, under the
    writer lock, the new entries that the index's current manifest does not name. A failed
    command leaves no partially written index behind."""
    from .index.manifest import named_files, read_manifest
    from .index.storage import PERMANENT_NAMES, Directory, is_managed

    created, p = None, out.absolute()
    while not p.exists() and p != p.parent:
        created, p = p, p.parent
    before = set(os.listdir(out)) if created is None and out.is_dir() else set()
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            if created is not None:
                shutil.rmtree(created) if created.is_dir() else created.unlink()
            elif out.is_dir():
                d = Directory(out)
                with d.lock():
                    keep = (named_files(read_manifest(d)) | PERMANENT_NAMES) if d.exists("manifest.json") else set()
                    for name in set(d.entries()) - before - keep:
                        if is_managed(name):
                            d.remove(name)
        raise


@app.command("index")
def index_cmd(
    data: Annotated[Path, typer.Argument(help=DATA_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to create.")],
    encoder: Annotated[list[str], typer.Option(
        help="Encoder spec for text collections: bm25, bm25:robertson, splade[:MODEL], splade-doc[:MODEL] "
             "(inference-free), splade-idf[:MODEL] (SPLADE queries plus corpus IDF), csr[:...], dense[:MODEL] (bundled MiniLM by default). Repeat it for a hybrid "
             "index: one directory with every representation, searched together and fused.")] = ["bm25"],
    encoder_opt: Annotated[Optional[list[str]], typer.Option(
        "--encoder-opt", help="Encoder setting as key=value, repeatable (e.g. k1=1.2 b=0.75 top_k=256); in a hybrid "
                              "index prefix it with the representation's name (bm25.k1=1.2, dense.batch_size=32).")] = None,
    language: Annotated[Optional[str], typer.Option(
        help="Language of the bm25 analyzer: english (default), any Snowball language of PyStemmer (its stemmer "
             "and, where the stop-words package has one, its stopword list) or cjk (character bigrams); the "
             "same as --encoder-opt language=LANG (bm25.language=LANG in a hybrid index).")] = None,
    dense_quantization: Annotated[str, typer.Option(
        help="Storage of dense vectors: float32 (exact), float16 or int8 (smaller, slightly lossy).")] = "float32",
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    id_field: Annotated[Optional[str], typer.Option(help=ID_FIELD_HELP)] = None,
    text_field: Annotated[Optional[str], typer.Option(help=TEXT_FIELD_HELP)] = None,
    title_field: Annotated[Optional[str], typer.Option(help=TITLE_FIELD_HELP)] = None,
    quantization: Annotated[str, typer.Option(help="Impact storage: uint8 (linear 8-bit, default) or float32.")] = "uint8",
    schema: Annotated[Optional[str], typer.Option(
        help="Declared types of metadata fields, e.g. 'year:integer,source:keyword' (keyword, integer, float, "
             "date, bool); other fields are inferred. Filters (--filter) test these fields.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Atomically replace an existing index at --out.")] = False,
    approximate: Annotated[bool, typer.Option(
        "--approximate", help="Also build the approximate index (default settings; `sparsearch build-approx` "
                              "takes the build knobs) for `search --mode approximate`.")] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Encode and index in parallel Ray workers: the corpus is cut into shards of --shard-size "
                      "documents, each becomes one segment; the index is the same for any --workers. Needs the "
                      "'distributed' extra.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        help="Ray to use (implies --ray): 'local' (default: a local instance with --workers CPUs), 'auto' (the "
             "cluster this machine joined with `ray start`), or ray://HOST:10001. On a cluster --out must be on "
             "a filesystem every node writes to.")] = None,
    workers: Annotated[int, typer.Option(help="--ray: worker processes (one CPU each).")] = 2,
    shard_size: Annotated[int, typer.Option(help="--ray: documents per shard (= per segment); fixes the index "
                                                 "layout, whatever the number of workers.")] = 10_000,
    threads_per_worker: Annotated[int, typer.Option(help="--ray: torch / ONNX / numba threads per worker.")] = 1,
) -> None:
    """Encode documents (or read ready vectors) and build a persistent inverted index.

    A failed run leaves nothing behind: the directory it created (or the files it added to an
    existing one) is removed.
    """
    from .encoders import get_encoder
    from .index import build_index
    from .ingest import TextInput
    from .metadata import parse_schema

    t0 = time.perf_counter()
    ray = ray or ray_address is not None
    parse_schema(schema)  # a bad declaration fails before any work
    if language is not None:
        if not any(e.partition(":")[0] == "bm25" for e in encoder):
            raise InvalidInputError(f"--language sets the analyzer of a bm25 encoder; this index has none "
                                    f"(--encoder {' '.join(encoder)})")
        encoder_opt = [*(encoder_opt or []), f"language={language}" if len(encoder) == 1 else f"bm25.language={language}"]
    if schema and (ray or len(encoder) > 1 or encoder[0].partition(":")[0] == "dense"):
        raise InvalidInputError("--schema applies to a single-representation index built here (without --ray); "
                                "a hybrid or Ray build infers its field types")
    if len(encoder) > 1 or encoder[0].partition(":")[0] == "dense":
        if ray or approximate:
            raise InvalidInputError("--ray and --approximate build single-representation indexes; build the hybrid, "
                                    "then `sparsearch build-approx` it")
        return _index_hybrid(data, out, encoder, encoder_opt, fmt=fmt, id_field=id_field, text_field=text_field,
                             title_field=title_field, quantization=quantization, dense_quantization=dense_quantization,
                             overwrite=overwrite, t0=t0)
    encoder = encoder[0]
    with _undo_on_failure(out):
        src = _read_input(data, fmt, id_field, text_field, title_field)
        extra = {"source": str(data.resolve()), "input_format": src.format}
        if ray:
            idx = _index_with_ray(src, out, encoder, _parse_opts(encoder_opt), quantization=quantization,
                                  overwrite=overwrite, address=ray_address, workers=workers, shard_size=shard_size,
                                  threads_per_worker=threads_per_worker, extra=extra)
        elif isinstance(src, TextInput):
            enc = get_encoder(encoder, **_parse_opts(encoder_opt))
            texts = src.encoder_texts()
            typer.echo(f"encoding {len(texts):,} documents of {src.source.name} ({src.format}) with {encoder} ...",
                       err=True)
            enc.fit(texts)
            batch = enc.encode_documents(texts, src.ids)
            idx = build_index(batch, out, quantization=quantization, encoder=enc, overwrite=overwrite,
                              extra={**extra, "encode_seconds": time.perf_counter() - t0}, documents=src.rows(),
                              schema=schema)
        else:
            idx = build_index(src.batches(), out, quantization=quantization, overwrite=overwrite, progress=True,
                              extra=extra, schema=schema)
    st = idx.stats()
    typer.echo(f"indexed {st['n_docs']:,} documents, {st['n_terms']:,} terms, {st['n_postings']:,} postings "
               f"in {time.perf_counter() - t0:.1f}s -> {out} ({st['index_bytes'] / 1e6:.1f} MB, "
               f"{st['bytes_per_posting']:.2f} bytes/posting"
               + (f", {st['n_segments']} segments" if st["n_segments"] > 1 else "") + ")")
    if approximate:
        try:
            _build_approximate(idx)
        except SparsearchError as e:  # the index itself is complete and committed
            e.args = (f"{e} (the index {out} was written; build its approximate index with "
                      f"`sparsearch build-approx {out}`)",)
            raise


def _member_options(specs: list[str], names: list[str], encoder_opt: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """``--encoder-opt`` of a hybrid build split by representation (``NAME.key=value``)."""
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in _parse_opts(encoder_opt).items():
        name, dot, opt = key.partition(".")
        if not dot or name not in per:
            raise InvalidInputError(f"--encoder-opt {key}=...: in a hybrid index name the representation, e.g. "
                                    f"{names[0]}.{key.rpartition('.')[2]}=... (representations: {', '.join(names)})")
        per[name][opt] = value
    return per


def _index_hybrid(data: Path, out: Path, specs: list[str], encoder_opt: Optional[list[str]], *, fmt: str,
                  id_field: Optional[str], text_field: Optional[str], title_field: Optional[str], quantization: str,
                  dense_quantization: str, overwrite: bool, t0: float) -> None:
    """``sparsearch index --encoder A --encoder B ...``: one hybrid index of every representation."""
    from .index.hybrid import build_hybrid, make_encoder, member_names
    from .ingest import TextInput

    names = member_names(specs)
    options = _member_options(specs, names, encoder_opt) if len(specs) > 1 else {names[0]: _parse_opts(encoder_opt)}
    with _undo_on_failure(out):
        src = _read_input(data, fmt, id_field, text_field, title_field)
        if not isinstance(src, TextInput):
            raise InvalidInputError(f"{data}: a hybrid (or dense) index is built from texts, not ready vectors")
        encoders = [(n, make_encoder(spec, **options[n])) for n, spec in zip(names, specs)]
        idx = build_hybrid(out, src.encoder_texts(), src.ids, encoders, documents=src.rows(),
                           quantization=quantization, dense_quantization=dense_quantization, overwrite=overwrite,
                           extra={"source": str(data.resolve()), "input_format": src.format},
                           log=lambda m: typer.echo(m, err=True))
    st = idx.stats()
    what = f"as a hybrid of {', '.join(idx.names)}" if len(idx.names) > 1 else f"with {idx.names[0]}"
    typer.echo(f"indexed {st['n_docs']:,} documents {what} in "
               f"{time.perf_counter() - t0:.1f}s -> {out} ({st['index_bytes'] / 1e6:.1f} MB)")


def _index_with_ray(src, out: Path, encoder: str, options: dict[str, Any], *, address: Optional[str],
                    extra: dict[str, Any], **kw: Any):
    """``sparsearch index --ray``: documents encoded by Ray workers, or ready vectors indexed by them."""
    from .distributed import build_index_ray
    from .encoders import get_encoder
    from .ingest import TextInput

    if isinstance(src, TextInput):
        typer.echo(f"encoding {len(src):,} documents of {src.source.name} with {encoder} on Ray "
                   f"({kw['workers']} workers, shards of {kw['shard_size']:,}) ...", err=True)
        return build_index_ray(out, texts=src.encoder_texts(), ids=src.ids, encoder=get_encoder(encoder, **options),
                               address=address, documents=src.rows(), progress=True, extra=extra, **kw)
    return build_index_ray(out, vectors=src.read(), address=address, progress=True, extra=extra, **kw)


def _approx_note(index: Path, had_approx: bool) -> str:
    return (f"; its approximate index is now stale and was dropped: rebuild it with `sparsearch build-approx {index}`"
            if had_approx else "")


@app.command()
def add(
    index: Annotated[Path, typer.Argument(help="Index directory to add to.")],
    data: Annotated[Path, typer.Argument(help="Documents or vectors to add, in any format `sparsearch index` "
                                              "reads (see its --help); texts are encoded with the index's encoder.")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    id_field: Annotated[Optional[str], typer.Option(help=ID_FIELD_HELP)] = None,
    text_field: Annotated[Optional[str], typer.Option(help=TEXT_FIELD_HELP)] = None,
    title_field: Annotated[Optional[str], typer.Option(help=TITLE_FIELD_HELP)] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace documents whose id is already in the index (an upsert); without it such an "
                          "id is an error and nothing is added.")] = False,
    schema: Annotated[Optional[str], typer.Option(
        help="Declared types of the new documents' metadata fields, e.g. 'year:integer,source:keyword'; other "
             "fields are inferred, and fields the index has keep their type.")] = None,
) -> None:
    """Add documents to an index as a new segment (one commit; readers see all of them or none).

    A hybrid index is updated in every representation, in one commit of the whole hybrid."""
    from .index import Index
    from .index.approximate import ApproximateIndex
    from .index.hybrid import is_hybrid
    from .index.updates import add_documents, add_texts
    from .ingest import TextInput
    from .metadata import parse_schema

    t0 = time.perf_counter()
    parse_schema(schema)
    if schema and is_hybrid(index):
        raise InvalidInputError("--schema applies to a single-representation index; a hybrid index infers its "
                                "field types")
    if is_hybrid(index):
        return _add_to_hybrid(index, _read_input(data, fmt, id_field, text_field, title_field), replace, t0)
    idx = Index.open(index)
    had_approx = ApproximateIndex.exists(idx)
    src = _read_input(data, fmt, id_field, text_field, title_field)
    with _undo_on_failure(index):
        if isinstance(src, TextInput) and not idx.manifest.get("encoder"):
            raise InvalidInputError(f"{index} was built from ready vectors (it has no encoder): add vectors "
                                    f"(.jsonl of {{\"id\", \"vector\"}} lines or .npz), not texts")
        try:
            if isinstance(src, TextInput):
                add_texts(index, src.rows(), replace=replace, schema=schema)
                n = len(src)
            else:
                batch = src.read()
                add_documents(index, batch, replace=replace, schema=schema)
                n = len(batch)
        except ConflictError as e:  # the library's wording names its keyword argument
            e.args = (str(e).replace("pass replace=True", "pass --replace"),)
            raise
    st = Index.open(index).stats()
    typer.echo(f"added {n:,} documents to {index} in {time.perf_counter() - t0:.1f}s: {st['n_docs']:,} documents in "
               f"{st['n_segments']} segments" + _approx_note(index, had_approx))


def _add_to_hybrid(index: Path, src: Any, replace: bool, t0: float) -> None:
    """``sparsearch add`` on a hybrid index: texts only, every representation in one commit."""
    from .index.hybrid import HybridIndex
    from .index.hybrid_updates import add_to_hybrid
    from .ingest import TextInput

    if not isinstance(src, TextInput):
        raise InvalidInputError(f"{index} is a hybrid index: add documents as texts (each representation encodes "
                                f"them), not ready vectors")
    try:
        add_to_hybrid(index, src.rows(), replace=replace)
    except ConflictError as e:  # the library's wording names its keyword argument
        e.args = (str(e).replace("pass replace=True", "pass --replace"),)
        raise
    idx = HybridIndex.open(index)
    typer.echo(f"added {len(src):,} documents to the hybrid index {index} in {time.perf_counter() - t0:.1f}s: "
               f"{idx.n_live_docs:,} documents in {', '.join(idx.names)}")


@app.command()
def delete(
    index: Annotated[Path, typer.Argument(help="Index directory.")],
    ids: Annotated[list[str], typer.Argument(help="Ids of the documents to delete.")],
    ignore_missing: Annotated[bool, typer.Option(
        "--ignore-missing", help="Skip ids that are not in the index (default: such an id is an error and "
                                 "nothing is deleted).")] = False,
) -> None:
    """Delete documents from an index (one commit; `sparsearch merge` later reclaims their space)."""
    from .index import Index
    from .index.approximate import ApproximateIndex
    from .index.hybrid import is_hybrid
    from .index.hybrid_updates import delete_from_hybrid
    from .index.updates import delete_documents

    if is_hybrid(index):  # every representation, one commit of the whole hybrid
        n = delete_from_hybrid(index, ids, ignore_missing=ignore_missing)
        typer.echo(f"deleted {n:,} documents from the hybrid index {index}")
        return
    had_approx = ApproximateIndex.exists(Index.open(index))
    with _undo_on_failure(index):
        n = delete_documents(index, ids, missing="ignore" if ignore_missing else "error")
    typer.echo(f"deleted {n:,} documents from {index}" + (_approx_note(index, had_approx) if n else ""))


@app.command()
def merge(index: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Rewrite an index's live documents into one segment, dropping deleted ones (one commit)."""
    from .index import Index
    from .index.approximate import ApproximateIndex
    from .index.updates import merge as merge_index

    idx = Index.open(index)
    before, had_approx = len(idx.segments), ApproximateIndex.exists(idx)
    with _undo_on_failure(index):
        manifest = merge_index(index)
    st = Index.open(index).stats()
    changed = manifest is not idx.manifest and manifest != idx.manifest
    typer.echo((f"merged {before} segments into 1: {st['n_docs']:,} live documents" + _approx_note(index, had_approx))
               if changed else f"{index} is already one segment without deletions; nothing to merge")


def _build_approximate(idx, params=None, threads: Optional[int] = None) -> None:
    """Build and save the approximate index of ``idx`` (``params``: ApproxBuildParams, default settings)."""
    from .index.approximate import ApproximateIndex

    t0 = time.perf_counter()
    typer.echo(f"building the approximate index of {idx.path} ...", err=True)
    ax = ApproximateIndex.build(idx, params, save=True, threads=threads)
    typer.echo(f"built the approximate index of {ax.n_docs:,} documents in {time.perf_counter() - t0:.1f}s "
               f"({ax.memory_bytes() / 1e6:.1f} MB)")


@app.command("build-approx")
def build_approx(
    index: Annotated[Path, typer.Argument(help="Index directory; the approximate index is saved inside it.")],
    n_postings: Annotated[Optional[int], typer.Option(
        help="Static pruning (lambda): postings kept per list (on average with --pruning global).")] = None,
    pruning: Annotated[str, typer.Option(
        help="global: one collection-wide threshold keeps about --n-postings per list, none above "
             "--max-fraction x that (Seismic's default); fixed: every list keeps its top --n-postings.")] = "global",
    max_fraction: Annotated[Optional[float], typer.Option(
        help="--pruning global: longest list, in units of --n-postings.")] = None,
    centroid_fraction: Annotated[Optional[float], typer.Option(
        help="Blocks per pruned list (beta), as a fraction of its length.")] = None,
    summary_energy: Annotated[Optional[float], typer.Option(
        help="Fraction (alpha) of a block summary's L1 mass kept, in (0, 1].")] = None,
    kmeans_iterations: Annotated[Optional[int], typer.Option(
        help="Spherical k-means steps after the random-centroid pass (0: Seismic's clustering).")] = None,
    min_cluster_size: Annotated[Optional[int], typer.Option(
        help="Smaller clusters are dissolved into their members' second-best centroid.")] = None,
    doc_cut: Annotated[Optional[int], typer.Option(help="Components of a document compared when clustering.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the clustering.")] = None,
    summaries: Annotated[bool, typer.Option(
        help="--no-summaries: keep the pruned lists unclustered, without summaries; the index then serves only "
             "the candidate strategy (search --candidates N), in a fraction of the memory and build time.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="Build threads (default: all cores).")] = None,
) -> None:
    """Build (or rebuild) the Seismic-style approximate index of an index, for `search --mode approximate`.

    Knobs left out take the library defaults (`sparsearch.index.approximate.ApproxBuildParams` and
    `GlobalPruning`, defined there once). Search never builds it: this command (or `sparsearch index
    ... --approximate`) is the one that writes it; a later commit to the index (an update) makes it
    stale, and it must be rebuilt.
    """
    from .index import Index
    from .index.approximate import ApproxBuildParams, FixedPruning, GlobalPruning
    from .index.hybrid import HybridIndex, open_searcher

    def given(**kw: Any) -> dict[str, Any]:
        return {k: v for k, v in kw.items() if v is not None}

    if pruning == "global":
        prune: Any = GlobalPruning(**given(n_postings=n_postings, max_fraction=max_fraction))
    elif pruning == "fixed":
        if max_fraction is not None:
            raise InvalidInputError("--max-fraction goes with --pruning global")
        prune = FixedPruning(**given(n_postings=n_postings))
    else:
        raise InvalidInputError(f"unknown pruning {pruning!r}; use global or fixed")
    params = ApproxBuildParams(pruning=prune, **given(
        centroid_fraction=centroid_fraction, summary_energy=summary_energy, min_cluster_size=min_cluster_size,
        doc_cut=doc_cut, seed=seed, kmeans_iterations=kmeans_iterations), summaries=summaries)
    opened = open_searcher(index)
    if isinstance(opened, HybridIndex):  # every sparse representation gets its own
        targets = [m.searcher for m in opened.members if m.kind == "sparse"]
    elif isinstance(opened, Index):
        targets = [opened]
    else:
        targets = []
    if not targets:
        raise InvalidInputError(f"{index} has no sparse representation: approximate indexes are built for sparse ones")
    for target in targets:
        _build_approximate(target, params, threads)


@app.command()
def search(
    index: Annotated[list[Path], typer.Argument(
        help="Index directory; several directories are searched as the shards of one index.")],
    query: Annotated[Optional[list[str]], typer.Option("--query", "-q", help="Query text (repeatable).")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="BEIR queries.jsonl, or query vectors (.jsonl/.npz).")] = None,
    k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "exact",
    query_cut: Annotated[Optional[int], typer.Option(help=QUERY_CUT_HELP)] = None,
    heap_factor: Annotated[Optional[float], typer.Option(help=HEAP_FACTOR_HELP)] = None,
    candidates: Annotated[Optional[int], typer.Option(help=CANDIDATES_HELP)] = None,
    forward_cut: Annotated[Optional[int], typer.Option(help=FORWARD_CUT_HELP)] = None,
    rerank: Annotated[Optional[int], typer.Option(help=RERANK_HELP)] = None,
    max_postings: Annotated[Optional[int], typer.Option(help=MAX_POSTINGS_HELP)] = None,
    budget_ms: Annotated[Optional[float], typer.Option(help=BUDGET_MS_HELP)] = None,
    run: Annotated[Optional[Path], typer.Option(help="Write a TREC run file here instead of printing.")] = None,
    explain: Annotated[bool, typer.Option(help="Show each hit's top contributing terms.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per query: {query, query_id, hits: [{rank, id, score, title, "
                       "snippet}]} (title and snippet null when the index stores no texts).")] = False,
    threads: Annotated[Optional[int], typer.Option(help="Search threads (default: all cores).")] = None,
    strict_vocab: Annotated[bool, typer.Option(help="Fail on query terms the index does not know (instead of "
                                                    "ignoring them): catches vectors from another vocabulary.")] = False,
    shards: Annotated[Optional[int], typer.Option(
        help="Search one index as N shards (groups of its segments, e.g. the segments of an `index --ray` "
             "build), each in its own searcher; the merged top-k equals the unsharded results.")] = None,
    processes: Annotated[bool, typer.Option(
        "--processes", help="Shard searchers in child processes (one per shard) instead of this process.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Shard searchers as Ray actors (the 'distributed' extra).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        help="Ray to use for the shard actors (implies --ray): 'local' (default), 'auto', or ray://HOST:10001.")] = None,
    fusion: Annotated[Optional[str], typer.Option(help=FUSION_HELP)] = None,
    weights: Annotated[Optional[str], typer.Option(help=WEIGHTS_HELP)] = None,
    depth: Annotated[Optional[int], typer.Option(help=DEPTH_HELP)] = None,
    rrf_k: Annotated[Optional[float], typer.Option(help=RRF_K_HELP)] = None,
    filter_: Annotated[Optional[str], typer.Option("--filter", help=FILTER_HELP)] = None,
) -> None:
    """Search an index with text queries (encoded as at index time) or ready query vectors.

    With several index directories, --shards, --processes or --ray the search is sharded: the
    query batch fans out to one searcher per shard and their top-k lists are merged exactly
    (exact and exhaustive modes). Search only reads: it never writes to the index directory.
    """
    ray = ray or ray_address is not None
    sharded = len(index) > 1 or shards is not None or processes or ray
    opened = None
    if not (sharded or explain or strict_vocab or filter_ is not None or mode not in ("exact", "exhaustive")
            or query_cut is not None or heap_factor is not None or max_postings is not None or budget_ms is not None
            or candidates is not None or forward_cut is not None or rerank is not None
            or fusion is not None or weights is not None or depth is not None or rrf_k is not None):
        opened = _open_oneshot(index[0], mode, threads, queries, query)
        if opened is not None and opened[2] is not None:  # numpy scores it before numba would have loaded
            one, qv, one_params = opened
            scores, docs = one.search(qv, k, one_params)
            _print_hits(one, qv, scores, docs, query, run, explain, as_json)
            return
    params = _with_filter(_search_params(mode, index[0], threads=threads, strict_vocab=strict_vocab,
                                         query_cut=query_cut, heap_factor=heap_factor, fusion=fusion, weights=weights,
                                         depth=depth, rrf_k=rrf_k, max_postings=max_postings, budget_ms=budget_ms,
                                         candidates=candidates, forward_cut=forward_cut, rerank=rerank),
                          filter_)
    with contextlib.ExitStack() as stack:
        if sharded:
            from .distributed import ShardedIndex, ray_session

            if ray:
                stack.enter_context(ray_session(ray_address))
            idx: Any = stack.enter_context(ShardedIndex.open(
                index, shards=shards, backend="ray" if ray else "process" if processes else "inline"))
            searcher = idx
        elif opened is not None:  # the index opened (and checked) above, handed over to the numba kernels
            idx = searcher = _as_index(opened[0])
        else:
            idx, searcher = _open_searcher(index[0], mode)
        qv = opened[1] if opened is not None else _load_queries(idx, queries, query)
        per_member = None
        if hasattr(searcher, "search_detailed"):  # hybrid: keep each representation's ranking for the hits
            scores, docs, per_member, _ = searcher.search_detailed(qv, k, params)
        else:
            scores, docs = searcher.search(qv, k, params)
        _print_hits(idx, qv, scores, docs, query, run, explain, as_json, per_member)


def _open_oneshot(index: Path, mode: str, threads: Optional[int], queries: Optional[Path],
                  query: list[str] | None):
    """An exact (or exhaustive) search of one sparse index, opened without numba or scipy:
    ``(OneShotIndex, query vectors, params)``, ``params`` ``None`` unless the one-shot search
    answers it (:meth:`~sparsearch.index.oneshot.OneShotIndex.supports`) and its postings are
    few (:meth:`~sparsearch.index.oneshot.OneShotIndex.cost` at most
    :data:`~sparsearch.index.oneshot.MAX_POSTINGS`), so that numpy scores them sooner than numba
    and its kernels would load; else the index and queries go to :func:`_as_index`.
    ``None`` when the index is not a single sparse one (hybrid, dense) or anything fails: the
    normal path then opens it and says what is wrong."""
    from .errors import SparsearchError
    from .index.oneshot import MAX_POSTINGS, OneShotIndex
    from .searching import params_for_mode

    try:
        params = params_for_mode(mode, threads=threads)
        one = OneShotIndex.open(index)
        qv = _load_queries(one, queries, query)
        fast = one.supports(params) and one.cost(qv) <= MAX_POSTINGS
    except SparsearchError:
        return None
    return one, qv, params if fast else None


def _as_index(one):
    """The :class:`~sparsearch.index.Index` of an opened :class:`OneShotIndex` (its arrays, checked
    on opening, are not read again)."""
    from .index.searcher import Index
    from .index.segment import Segment

    segments = [Segment(path, meta, doc_ids=doc_ids, **arrays) for path, meta, arrays, doc_ids in one.segment_parts()]
    return Index(one.path, one.manifest, one.vocab, segments, one.deleted)


SNIPPET_WORDS = 30


def _docstores(idx) -> list:
    """The document stores of an index (or of the shards of a ShardedIndex) that have one;
    an unreadable store is a CorruptIndexError naming its file."""
    import sqlite3

    from .docstore import open_docstore
    from .errors import CorruptIndexError

    pairs = (zip(idx.paths, idx.manifests) if hasattr(idx, "manifests") else [(idx.path, idx.manifest)])
    stores = []
    for path, manifest in pairs:
        try:
            store = open_docstore(path, manifest)
        except (OSError, sqlite3.Error) as e:
            raise CorruptIndexError(f"{path}: unreadable document store ({e})") from None
        if store is not None:
            stores.append(store)
    return stores


def _stored_docs(stores: list, ids: list[str]) -> dict[str, dict[str, str]]:
    """``{id: {"title", "text"}}`` of the hits found in the stores, whitespace collapsed."""
    import sqlite3

    from .errors import CorruptIndexError

    found: dict[str, dict[str, str]] = {}
    for store in stores:
        try:
            docs = store.get_many([i for i in ids if i not in found])
        except sqlite3.Error as e:
            raise CorruptIndexError(f"{store.path}: unreadable document store ({e})") from None
        for i, d in docs.items():
            found[i] = {"title": " ".join(str(d["title"]).split()), "text": " ".join(str(d["text"]).split())}
    return found


def _representations(per_member: dict[str, tuple[np.ndarray, np.ndarray]], qi: int, d: int) -> dict[str, Any]:
    """Where a hybrid hit stands in each representation's own list: ``{name: {"rank", "score"}}``
    (``None`` both when the representation did not return it within its depth)."""
    out: dict[str, Any] = {}
    for name, (s, dd) in per_member.items():
        at = np.flatnonzero(dd[qi] == d)
        out[name] = ({"rank": int(at[0]) + 1, "score": round(float(s[qi, at[0]]), 6)} if len(at)
                     else {"rank": None, "score": None})
    return out


def _hits(idx, qv, scores: np.ndarray, docs: np.ndarray, query: list[str] | None, explain: bool,
          per_member: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> list[dict]:
    """One ``{"query", "query_id", "hits": [{"rank", "id", "score", "title", "snippet"[, "spans",
    "explanation", "representations"]}]}`` per query: titles and snippets (the best window of the
    stored text, query words highlighted) come from the index's document store when it has one;
    a hybrid index's hits say their rank and score in each representation (``per_member``)."""
    from .highlight import highlight_hit

    stores = _docstores(idx)
    # a sparse-coding (CSR) index's latents carry labels: show them next to the latent terms
    labels = idx.feature_labels() if explain and hasattr(idx, "feature_labels") else None
    if hasattr(idx, "highlight_encoders"):
        encoders = idx.highlight_encoders() if stores else []
    else:
        encoders = [idx.load_encoder()] if stores and idx.manifest.get("encoder") else []
    out = []
    qids = qv.ids or [str(i) for i in range(len(qv))]
    try:
        for qi, qid in enumerate(qids):
            ranked = [(int(d), float(s)) for d, s in zip(docs[qi], scores[qi]) if d >= 0]
            stored = _stored_docs(stores, [idx.doc_ids[d] for d, _ in ranked]) if stores else {}
            hits = []
            for rank, (d, s) in enumerate(ranked, 1):
                doc_id = idx.doc_ids[d]
                hit: dict[str, Any] = {"rank": rank, "id": doc_id, "score": round(s, 6), "title": None,
                                       "snippet": None}
                contributions = idx.explain(qv[qi:qi + 1], d) if (explain or doc_id in stored) else None
                if doc_id in stored:
                    doc = stored[doc_id]
                    snippet, spans, _ = highlight_hit(doc, encoders, [contributions] if encoders else None,
                                                      SNIPPET_WORDS)
                    hit.update(title=doc["title"], snippet=snippet, spans=[list(x[:2]) for x in spans])
                if explain:
                    hit["explanation"] = [{"term": c.term, **({"label": labels.label(c.term)} if labels is not None else {}),
                                           "contribution": round(float(c.contribution), 6)} for c in contributions[:8]]
                if per_member is not None:
                    hit["representations"] = _representations(per_member, qi, d)
                hits.append(hit)
            out.append({"query": query[qi] if query else None, "query_id": qid, "hits": hits})
    finally:
        for store in stores:
            store.close()
    return out


def _styled(snippet: str, spans: list[list[int]]) -> str:
    """The snippet with its highlighted words in bold (plain when the output is not a terminal)."""
    parts, at = [], 0
    for a, b in spans:
        parts += [snippet[at:a], typer.style(snippet[a:b], bold=True)]
        at = b
    return "".join(parts) + snippet[at:]


def _print_hits(idx, qv, scores: np.ndarray, docs: np.ndarray, query: list[str] | None, run: Optional[Path],
                explain: bool, as_json: bool = False,
                per_member: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Print ranked hits (id, score, title, snippet, explanations), one JSON object per query
    (``as_json``), or write them as a TREC run."""
    from .evaluation import to_run, write_trec_run

    if run is not None:
        write_trec_run(to_run(scores, docs, idx.doc_ids, qv.ids), run)
        typer.echo(f"wrote {run}")
        return
    for result in _hits(idx, qv, scores, docs, query, explain, per_member):
        if as_json:
            for h in result["hits"]:
                h.pop("spans", None)
            typer.echo(json.dumps(result, ensure_ascii=False))
            continue
        typer.secho(f"query {result['query'] if query else result['query_id']!r}", bold=True)
        for h in result["hits"]:
            typer.echo(f"  {h['rank']:>3}. {h['id']}  {h['score']:.4f}" + (f"  {h['title']}" if h["title"] else ""))
            if h["snippet"]:
                typer.echo("       " + _styled(h["snippet"], h["spans"]))
            if explain:
                typer.echo("       " + ", ".join(f"{c['term']}" + (f" ({c['label']})" if "label" in c else "")
                                                 + f"={c['contribution']:.3f}" for c in h["explanation"]))
            if "representations" in h:
                typer.echo("       " + "  ".join(f"{n} #{r['rank']} ({r['score']:.4f})" if r["rank"] else f"{n} -"
                                                 for n, r in h["representations"].items()))


@app.command()
def evaluate(
    index: Annotated[Path, typer.Argument(help="Index directory (built from the collection's corpus).")],
    data: Annotated[Path, typer.Argument(help="BEIR collection folder with queries.jsonl and qrels/.")],
    split: Annotated[str, typer.Option(help="qrels split to evaluate on.")] = "test",
    k: Annotated[int, typer.Option("-k", help="Depth of the run (R@1000 needs 1000).")] = 1000,
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "exact",
    query_cut: Annotated[Optional[int], typer.Option(help=QUERY_CUT_HELP)] = None,
    heap_factor: Annotated[Optional[float], typer.Option(help=HEAP_FACTOR_HELP)] = None,
    candidates: Annotated[Optional[int], typer.Option(help=CANDIDATES_HELP)] = None,
    forward_cut: Annotated[Optional[int], typer.Option(help=FORWARD_CUT_HELP)] = None,
    rerank: Annotated[Optional[int], typer.Option(help=RERANK_HELP)] = None,
    max_postings: Annotated[Optional[int], typer.Option(help=MAX_POSTINGS_HELP)] = None,
    budget_ms: Annotated[Optional[float], typer.Option(help=BUDGET_MS_HELP)] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated ir-measures names.")] = "nDCG@10,R@100,R@1000,RR@10",
    run: Annotated[Optional[Path], typer.Option(help="Also write the TREC run file here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all figures as JSON here.")] = None,
    fusion: Annotated[Optional[str], typer.Option(help=FUSION_HELP)] = None,
    weights: Annotated[Optional[str], typer.Option(help=WEIGHTS_HELP)] = None,
    depth: Annotated[Optional[int], typer.Option(help=DEPTH_HELP)] = None,
    rrf_k: Annotated[Optional[float], typer.Option(help=RRF_K_HELP)] = None,
    filter_: Annotated[Optional[str], typer.Option("--filter", help=FILTER_HELP)] = None,
) -> None:
    """Effectiveness (nDCG@10, R@100, R@1000, MRR@10) and efficiency (latency, QPS, size) of an index.

    A hybrid index also reports each representation alone (the same search's lists), each one's
    search and query-encoding time, and the fusion's time."""
    from .evaluation import load_beir, run_evaluation

    params = _with_filter(_search_params(mode, index, query_cut=query_cut, heap_factor=heap_factor, fusion=fusion,
                                         weights=weights, depth=depth, rrf_k=rrf_k, max_postings=max_postings,
                                         budget_ms=budget_ms, candidates=candidates, forward_cut=forward_cut,
                                         rerank=rerank), filter_)
    _, searcher = _open_searcher(index, mode)
    ds = load_beir(data, split)
    report = run_evaluation(searcher, ds, k=k, params=params, metrics=metrics.split(","), run_path=run)
    _print_report(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=1))


def _print_report(r: dict[str, Any]) -> None:
    q = r["quality"]
    typer.secho(f"{r['collection']} ({r['split']}, {r['queries']} queries, {r['encoder'] and r['encoder']['name']}, "
                f"{r['mode']})", bold=True)
    typer.echo("  quality:  " + "  ".join(f"{m}={v:.4f}" for m, v in q.items()))
    if r["queries_without_results"]:
        typer.echo(f"            {r['queries_without_results']} judged queries retrieved nothing; counting them "
                   f"as 0: " + "  ".join(f"{m}={v:.4f}" for m, v in r["quality_empty_as_zero"].items()))
    lat = r["latency_k10_single_thread"]
    typer.echo(f"  latency:  k=10, 1 thread, one query at a time: p50={lat['p50_ms']:.3f} ms  "
               f"p95={lat['p95_ms']:.3f} ms  p99={lat['p99_ms']:.3f} ms  mean={lat['mean_ms']:.3f} ms")
    typer.echo(f"  QPS:      k=10 batch, all threads: {r['qps_k10_batch_all_threads']:,.0f}   "
               f"query encoding: {r['query_encoding_ms_per_query']:.3f} ms/query")
    ix = r["index"]
    bs = r.get("build_seconds") or 0.0
    enc_s = r.get("encode_seconds")
    enc_s = sum(enc_s.values()) if isinstance(enc_s, dict) else enc_s
    typer.echo(f"  index:    {ix['n_docs']:,} docs  {ix['n_postings']:,} postings  {ix['index_bytes'] / 1e6:.2f} MB  "
               f"{ix['bytes_per_posting']:.2f} B/posting  build {bs:.2f}s"
               + (f" (+ encoding {enc_s:.1f}s)" if enc_s else ""))
    h = r.get("hybrid")
    if h:
        f = h["fusion"]
        typer.echo(f"  fusion:   {f['fusion']}" + (f" k={f['rrf_k']:g}" if f["fusion"] == "rrf" else "")
                   + (f" weights={f['weights']}" if f["weights"] else " equal weights")
                   + f", depth {f['depth']} per representation, sparse {f['sparse']}")
        lat = h["latency_k10_single_thread_ms"]
        typer.echo(f"  {'representation':<16}" + "".join(f"{m:>10}" for m in q) + f"{'p50 ms':>9}{'encode ms/q':>13}")
        for name in h["representations"]:
            qq = h["quality_per_representation"][name]
            typer.echo(f"  {name:<16}" + "".join(f"{qq[m]:>10.4f}" for m in q) + f"{lat[name]['p50_ms']:>9.3f}"
                       + f"{h['query_encoding_ms_per_query'].get(name, 0.0):>13.2f}")
        typer.echo(f"  {'fused':<16}" + "".join(f"{v:>10.4f}" for v in q.values()) + f"{lat['fusion']['p50_ms']:>9.3f}"
                   + "  (fusion alone)")


@app.command()
def tune(
    index: Annotated[Path, typer.Argument(help="Index directory with an approximate index (`sparsearch build-approx`).")],
    queries: Annotated[Path, typer.Option(help="Sample queries: BEIR queries.jsonl, or query vectors (.jsonl/.npz).")],
    target_recall: Annotated[float, typer.Option(help="Recall@k against exact search to reach, in (0, 1].")] = 0.95,
    k: Annotated[int, typer.Option("-k", help="Depth of the recall measure.")] = 10,
    sample: Annotated[int, typer.Option(help="Queries drawn (fixed seed) from --queries for the sweep.")] = 200,
    query_cuts: Annotated[str, typer.Option(help="Comma-separated query_cut values to try.")] = "3,5,8,10,15,20,30",
    heap_factors: Annotated[str, typer.Option(help="Comma-separated heap_factor values to try.")] = "0.5,0.6,0.7,0.8,0.9,1.0",
    candidates: Annotated[str, typer.Option(
        help="Comma-separated candidates values to try (0: Seismic's block scan, with every heap factor).")
    ] = "0,50,100,200,500,1000,2000",
    forward_cuts: Annotated[str, typer.Option(
        help="Comma-separated forward_cut values to try with Seismic's block scan (0: whole vectors).")] = "0,16,32",
    rerank: Annotated[Optional[int], typer.Option(
        help="Documents rescored on their whole vectors with a forward cut (default: ApproxParams', 200).")] = None,
    save: Annotated[bool, typer.Option(
        "--save", help="Save the chosen setting next to the index (settings.json): `search`/`evaluate --mode "
                       "approximate` and the service then use it when --query-cut/--heap-factor/--candidates/"
                       "--forward-cut/--rerank are not given.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the whole sweep here.")] = None,
) -> None:
    """Pick the fastest approximate setting (query_cut, heap_factor, candidates, forward_cut) reaching a target recall.

    Every setting searches the sample one query at a time on one thread; recall@k is measured
    against the exact top-k of the same queries. Prints the sweep and the chosen setting; --save
    makes it the index's default for approximate search.
    """
    from .index import Index
    from .index.approximate import ApproximateIndex, save_settings, tune as tune_fn
    from .searching import ApproxParams

    if not 0 < target_recall <= 1:
        raise InvalidInputError(f"--target-recall must be in (0, 1], got {target_recall}")
    try:
        qcs = tuple(int(x) for x in query_cuts.split(","))
        hfs = tuple(float(x) for x in heap_factors.split(","))
        cands = tuple(int(x) for x in candidates.split(","))
        fcs = tuple(int(x) for x in forward_cuts.split(","))
    except ValueError:
        raise InvalidInputError("--query-cuts, --candidates and --forward-cuts take integers and --heap-factors "
                                "numbers, comma-separated") from None
    if min(qcs) < 1 or not min(hfs) > 0 or min(cands) < 0 or min(fcs) < 0:
        raise InvalidInputError("query cuts must be >= 1, heap factors > 0, candidates and forward cuts >= 0")
    idx = Index.open(index)
    ax = ApproximateIndex.open(idx)
    qv = _load_queries(idx, queries, None)
    r = tune_fn(ax, qv, target_recall, k=k, query_cuts=qcs, heap_factors=hfs, candidates=cands, forward_cuts=fcs,
                rerank=ApproxParams.rerank if rerank is None else rerank, sample=sample)
    typer.echo(f"{'query_cut':>9} {'heap_factor':>11} {'candidates':>10} {'forward_cut':>11} {'recall@' + str(k):>9} "
               f"{'mean ms':>8}")
    for g in r["grid"]:
        typer.echo(f"{g['query_cut']:>9} {g['heap_factor']:>11.2f} {g['candidates']:>10} {g['forward_cut']:>11} "
                   f"{g['recall']:>9.3f} {g['mean_ms']:>8.3f}")
    verdict = "fastest reaching" if r["met"] else "NOT reached; most accurate for"
    typer.echo(f"{verdict} recall@{k} >= {target_recall}: --query-cut {r['query_cut']} "
               f"--heap-factor {r['heap_factor']} --candidates {r['candidates']} --forward-cut {r['forward_cut']}"
               + (f" --rerank {r['rerank']}" if r["forward_cut"] else "")
               + f" (recall {r['recall']:.3f}, {r['mean_ms']:.3f} ms/query)")
    if save:
        save_settings(index, ApproxParams(query_cut=int(r["query_cut"]), heap_factor=float(r["heap_factor"]),
                                          candidates=int(r["candidates"]), forward_cut=int(r["forward_cut"]),
                                          rerank=int(r["rerank"])), r)
        typer.echo(f"saved as the default approximate setting of {index}")
    if json_out is not None:
        json_out.write_text(json.dumps(r, indent=1))


@app.command("tune-fusion")
def tune_fusion_cmd(
    index: Annotated[Path, typer.Argument(help="Hybrid index directory.")],
    data: Annotated[Path, typer.Argument(help="BEIR collection folder with queries.jsonl and qrels/<split>.tsv.")],
    split: Annotated[str, typer.Option(help="Judged split to fit on: train or dev (never test).")] = "train",
    metric: Annotated[str, typer.Option(help="ir-measures metric to maximise.")] = "nDCG@10",
    step: Annotated[float, typer.Option(help="Weight grid step (weights are multiples of it summing to 1).")] = 0.1,
    methods: Annotated[str, typer.Option(help="Fusions to try, comma-separated.")] = "rrf,minmax,zscore",
    depth: Annotated[Optional[int], typer.Option(help=DEPTH_HELP)] = None,
    save: Annotated[bool, typer.Option(
        "--save", help="Save the chosen fusion with the index (fusion.json): search, evaluate and the service then "
                       "use it by default.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the whole grid here.")] = None,
) -> None:
    """Fit a hybrid index's fusion (method and per-representation weights) on train or dev qrels."""
    from .evaluation import load_beir
    from .index.hybrid import HybridIndex, save_fusion, tune_index_fusion

    if split == "test":
        raise InvalidInputError("tune-fusion fits on train or dev qrels; test qrels are for the final figure only")
    if not 0 < step <= 0.5:
        raise InvalidInputError(f"--step must be in (0, 0.5], got {step}")
    idx = HybridIndex.open(index)
    ds = load_beir(data, split)
    qv = idx.load_encoder().encode_queries(ds.query_texts(), ds.query_ids)
    params, choice = tune_index_fusion(idx, qv, ds.qrels, depth=depth, methods=tuple(methods.split(",")),
                                       step=step, metric=metric)
    typer.echo(f"{ds.name} {split}: {choice.n_queries} queries, {len(choice.table)} settings tried")
    typer.echo(f"best {metric} {choice.score:.4f}: --fusion {params.fusion} --weights "
               + ",".join(f"{n}={w:g}" for n, w in zip(idx.names, params.weights or ()))
               + (f" --rrf-k {params.rrf_k:g}" if params.fusion == "rrf" else ""))
    if save:
        save_fusion(index, params, {"collection": ds.name, "split": split, "metric": metric, "score": choice.score,
                                    "queries": choice.n_queries, "settings_tried": len(choice.table)})
        typer.echo(f"saved as the default fusion of {index}")
    if json_out is not None:
        json_out.write_text(json.dumps({"chosen": {"fusion": params.fusion, "weights": list(params.weights or ()),
                                                   "rrf_k": params.rrf_k, metric: choice.score},
                                        "grid": choice.table}, indent=1))


@app.command()
def adapt(
    data: Annotated[Path, typer.Argument(help="BEIR collection folder (corpus.jsonl; qrels only for --supervised).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the adapted model (then --encoder splade-doc:DIR).")],
    encoder: Annotated[Optional[str], typer.Option(
        help="splade-doc (inference-free), splade (queries and documents) or splade-idf (queries and documents, "
             "corpus IDF added to the query); default: the recipe's, else splade-doc.")] = None,
    base_model: Annotated[Optional[str], typer.Option(help="Starting masked-LM folder or hub id (default: bundled "
                                                           "SPLADE-tiny).")] = None,
    supervised: Annotated[bool, typer.Option("--supervised", help="Fine-tune on the judgements of --split instead "
                                                                  "(label-free adaptation reads no judgements).")] = False,
    split: Annotated[str, typer.Option(help="With --supervised: the judged split to train on (never test).")] = "train",
    recipe: Annotated[Optional[Path], typer.Option(help="JSON file of recipe fields (AdaptConfig) overriding the "
                                                        "defaults.")] = None,
    max_minutes: Annotated[float, typer.Option(help="Time budget of the training loop.")] = 25.0,
    seed: Annotated[int, typer.Option(help="Seed of sampling, shuffling and initialisation.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads while training (default: torch's).")] = None,
) -> None:
    """Adapt a learned sparse encoder to a collection: label-free (pseudo-queries from the corpus, BM25 + dense
    teacher) or, with --supervised, fine-tuned on train judgements. Saves the model with its provenance."""
    from dataclasses import fields

    from .encoders.adaptation import AdaptConfig
    from .encoders.adaptation import adapt as run_adapt
    from .encoders.adaptation import finetune

    given: dict[str, Any] = {}
    if recipe is not None:
        given = _read_recipe(recipe, {f.name for f in fields(AdaptConfig)})
    given.update(base_model=base_model, max_seconds=60.0 * max_minutes, seed=seed)
    if encoder is not None:
        given["encoder"] = encoder
    if threads is not None:
        given["threads"] = threads
    if max_minutes <= 0:
        raise InvalidInputError(f"--max-minutes must be > 0, got {max_minutes}")
    config = AdaptConfig(**given)
    t0 = time.perf_counter()
    prov = (finetune(data, out, config, split=split, progress=True) if supervised
            else run_adapt(data, out, config, progress=True))
    typer.echo(f"{prov['kind']} adaptation of {prov['base_model']} on {data}: {prov['steps']} steps, "
               f"{prov['examples_per_second']} examples/s, training {prov['train_seconds']:.0f} s, "
               f"total {time.perf_counter() - t0:.0f} s")
    typer.echo(f"saved {out} (provenance.json); index with --encoder {config.encoder}:{out}")


def _read_recipe(path: Path, known: set[str]) -> dict[str, Any]:
    """Recipe fields from a JSON object file; unknown fields and bad JSON are one-line errors."""
    try:
        given = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(given, dict):
        raise InvalidInputError(f"{path}: line 1: a recipe is a JSON object of AdaptConfig fields")
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidInputError(f"{path}: unknown recipe field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "split_queries" in given:
        given["split_queries"] = tuple(given["split_queries"])
    return given


@app.command()
def stats(index: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Print an index's manifest figures (documents, terms, postings, bytes, encoder; for a hybrid
    index also each representation's, under "members")."""
    from .index.hybrid import open_searcher

    typer.echo(json.dumps(open_searcher(index).stats(), indent=1))


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="BEIR collection to index and evaluate.")] = DEFAULT_DATA,
    encoder: Annotated[list[str], typer.Option(help="Representations (encoder specs), repeatable.")] = ["bm25"],
    workdir: Annotated[Path, typer.Option(help="Where the index is written.")] = Path("indexes"),
) -> None:
    """The main job: index a BEIR collection with every representation given (one hybrid index),
    search its test queries, print quality and speed of each representation and of their fusion."""
    from .evaluation import load_beir, run_evaluation
    from .index.hybrid import build_hybrid, make_encoder, member_names

    if not (data / "corpus.jsonl").exists():
        raise MissingFileError(f"no BEIR collection at {data} (expected corpus.jsonl); pass --data PATH")
    ds = load_beir(data, "test")
    encoders = []
    for name, spec in zip(member_names(encoder), encoder):
        try:
            encoders.append((name, make_encoder(spec)))
        except MissingExtraError as e:  # the demo runs what the install allows
            typer.secho(f"skipping encoder {spec!r}: {e}", fg="yellow", err=True)
    if not encoders:
        raise MissingExtraError("none of the demo's encoders is installed")
    out = workdir / f"{ds.name}-{'+'.join(n for n, _ in encoders)}"
    idx = build_hybrid(out, ds.doc_texts(), ds.doc_ids, encoders, documents=ds.corpus, overwrite=True,
                       extra={"source": str(data.resolve())}, log=lambda m: typer.echo(m, err=True))
    _print_report(run_evaluation(idx, ds))


MILVUS_URI_HELP = ("Milvus to use: a path ending in .db (Milvus Lite, embedded; created on export) or "
                   "http(s)://HOST:19530 (a Milvus server or cluster; pass --token).")


@app.command()
def export(
    index: Annotated[Path, typer.Argument(help="Index directory to export (an index or a hybrid index).")],
    milvus: Annotated[str, typer.Option("--milvus", help=MILVUS_URI_HELP)],
    collection: Annotated[Optional[str], typer.Option(
        help="Collection name (default: the index directory name; letters, digits and _).")] = None,
    token: Annotated[Optional[str], typer.Option(
        help="Milvus server credentials: user:password or an API key (default: $MILVUS_TOKEN).",
        envvar="MILVUS_TOKEN")] = None,
    dense: Annotated[bool, typer.Option(
        "--dense", help="Also store dense embeddings of the stored texts (title + text) for hybrid search, made "
                        "with --dense-model; needs the 'dense' extra and an index with a document store.")] = False,
    dense_model: Annotated[Optional[str], typer.Option(
        help="--dense: sentence-transformers model (hub id or folder; default: the bundled all-MiniLM-L6-v2).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing collection of that name.")] = False,
    index_type: Annotated[str, typer.Option(
        help="Milvus sparse index: SPARSE_INVERTED_INDEX (exact; the only one Milvus Lite builds) or SPARSE_WAND "
             "(a Milvus server).")] = "SPARSE_INVERTED_INDEX",
    batch_size: Annotated[int, typer.Option(help="Documents per insert request.")] = 1000,
) -> None:
    """Write an index's document vectors (dequantized impacts), ids, texts, vocabulary and encoder
    into a Milvus collection, to search it there (`sparsearch serve --backend milvus`). A hybrid
    index is written with one vector field per representation (its dense representations' stored
    vectors, dequantized), searched and fused as the local hybrid index."""
    from .index.hybrid import HybridIndex, open_searcher
    from .milvus import export as export_to_milvus

    t0 = time.perf_counter()
    idx = open_searcher(index)
    if isinstance(idx, HybridIndex) and (dense or dense_model):
        raise InvalidInputError(f"{index} is a hybrid index: its dense representations are exported from their "
                                f"stored vectors; --dense and --dense-model do not apply")
    emb, dense_config = (_dense_embeddings(idx, dense_model) if dense else (None, None))
    backend = export_to_milvus(idx, milvus, collection, token=token, dense=emb, dense_encoder=dense_config,
                               index_type=index_type, batch_size=batch_size, overwrite=overwrite)
    st = backend.stats()
    skipped = f" ({st['skipped_empty_docs']} without terms skipped)" if st["skipped_empty_docs"] else ""
    if st.get("kind") == "hybrid":
        what = ", ".join(f"{n} ({m['field']}: " + (f"{m['n_terms']:,} terms)" if m["kind"] == "sparse"
                                                    else f"dense d={m['dim']})") for n, m in st["members"].items())
    else:
        what = f"{st['n_terms']:,} terms" + (f", dense d={st['dense_dim']}" if st["dense_dim"] else "")
    typer.echo(f"exported {st['n_docs']:,} documents{skipped}, {what} to {milvus} collection "
               f"{backend.collection!r} ({st['index_type']}) in {time.perf_counter() - t0:.1f}s")
    backend.close()


def _dense_embeddings(idx, model: Optional[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Dense embeddings (index.n_docs, d) of the stored documents in doc-number order (texts
    embedded as ``title text``; deleted documents get an empty text) and the model's config."""
    from .docstore import open_docstore
    from .encoders.dense import DenseEncoder

    store = open_docstore(idx.path, idx.manifest)
    if store is None:
        raise InvalidInputError(f"{idx.path}: --dense embeds the stored texts, and this index has no document store")
    try:
        docs = store.get_many(idx.doc_ids)
    finally:
        store.close()
    texts = [(d["title"] + " " + d["text"]).strip() if (d := docs.get(i)) else "" for i in idx.doc_ids]
    enc = DenseEncoder(model)
    typer.echo(f"embedding {len(texts):,} documents with {enc.model_id} ...", err=True)
    return enc.encode_documents(texts, progress=True), enc.config()


@app.command()
def serve(
    index_dirs: Annotated[list[str], typer.Argument(
        help="Index directories to serve (named by directory name, or NAME=DIR); several are searched together "
             "and fused. A hybrid index (`index --encoder A --encoder B`) is searched with its fusion, each hit "
             "showing its rank in every representation. With --backend milvus: the Milvus URI (path.db for "
             "Milvus Lite, or http(s)://HOST:19530).")],
    host: Annotated[str, typer.Option(help="Interface to bind (its name is an allowed host too).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    token: Annotated[Optional[str], typer.Option(
        help="Bearer token (8+ characters) that writes (POST /documents, DELETE /documents/ID) and admin actions "
             "require; without one they are disabled (403). Prefer the environment variable.",
        envvar="SPARSEARCH_TOKEN")] = None,
    token_for_reads: Annotated[bool, typer.Option(
        "--token-for-reads", help="Searches, explanations, documents and /stats need the token too.")] = False,
    allowed_host: Annotated[Optional[list[str]], typer.Option(
        help="Host name clients reach the service by (the Host header), repeatable; other names are refused "
             "(DNS rebinding). Default: localhost, 127.0.0.1, ::1 and --host. '*' allows any name.")] = None,
    rate_limit: Annotated[Optional[float], typer.Option(
        help="Requests a second per client address (token bucket; 0: no limit), per worker process. Default 50.")] = None,
    rate_burst: Annotated[Optional[int], typer.Option(
        help="Requests a client may send at once before --rate-limit applies (per worker). Default 100.")] = None,
    max_concurrent_searches: Annotated[Optional[int], typer.Option(
        help="Searches queued or running at once, per worker process; past it 429 (0: no cap). Default 64.")] = None,
    backend: Annotated[str, typer.Option(
        help="local (index directories) or milvus (collections written by `sparsearch export`, searched by "
             "Milvus; same HTTP API, exact mode, no explanations).")] = "local",
    collection: Annotated[Optional[list[str]], typer.Option(
        help="--backend milvus: collection to serve, repeatable (default: every collection sparsearch exported "
             "there). A collection with dense vectors is also served as NAME-dense.")] = None,
    milvus_token: Annotated[Optional[str], typer.Option(
        help="--backend milvus: server credentials, user:password or an API key (default: $MILVUS_TOKEN).",
        envvar="MILVUS_TOKEN")] = None,
    workers: Annotated[int, typer.Option(
        help="Worker processes sharing the port, each opening the indexes itself (memory-mapped: the page cache "
             "is shared). A write through one worker is seen by the others within a second (their manifest "
             "check). --rate-limit, --rate-burst and --max-concurrent-searches apply per worker. Not with a "
             "Milvus Lite file, which one process owns.")] = 1,
) -> None:
    """HTTP search service with a web page: POST /search, /explain; GET /documents/{id}, /healthz, /stats;
    with --token: POST /documents, DELETE /documents/{id}."""
    if backend not in ("local", "milvus"):
        raise InvalidInputError(f"unknown backend {backend!r}; use local or milvus")
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    if backend == "milvus" and len(index_dirs) != 1:
        raise InvalidInputError(f"--backend milvus takes one Milvus URI, got {len(index_dirs)} arguments")
    if backend == "local" and collection:
        raise InvalidInputError("--collection goes with --backend milvus")
    try:
        from .service import Access, Limits, milvus_backends, serve as run_service
    except ImportError as e:
        raise MissingExtraError(f"the service needs the 'service' extra (fastapi, uvicorn): {e}") from None
    given = {"rate_limit_per_s": rate_limit, "rate_limit_burst": rate_burst,
             "max_concurrent_searches": max_concurrent_searches}
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    access = Access(token=token or None, token_for_reads=token_for_reads,
                    **({"allowed_hosts": tuple(allowed_host)} if allowed_host else {}))
    if backend == "milvus" and workers > 1:
        if "://" not in index_dirs[0]:
            raise InvalidInputError(f"--workers {workers}: a Milvus Lite file ({index_dirs[0]}) belongs to one "
                                    f"process; serve it with one worker, or use a Milvus server")
        # each worker connects itself (an opened client cannot be handed to another process)
        run_service([], host=host, port=port, log_level=log_level, limits=limits, access=access, workers=workers,
                    milvus={"uri": index_dirs[0], "collections": collection, "token": milvus_token})
    elif backend == "milvus":
        run_service([], host=host, port=port, log_level=log_level, limits=limits, access=access,
                    backends=milvus_backends(index_dirs[0], collection, token=milvus_token))
    else:
        # NAME=DIR names an index (an argument that is itself an existing path is a directory)
        named = [a.partition("=") if "=" in a and not Path(a).exists() else ("", "", a) for a in index_dirs]
        dirs: Any = [Path(d) for _, _, d in named]
        if any(n for n, _, _ in named):
            dirs = {}
            for n, _, d in named:
                name = n or Path(d).resolve().name
                if not name or name in dirs:
                    raise InvalidInputError(f"serve: index name {name!r} is empty or given twice; name each "
                                            f"directory with NAME=DIR")
                dirs[name] = Path(d)
        run_service(dirs, host=host, port=port, log_level=log_level, limits=limits, access=access, workers=workers)


def main(argv: Optional[list[str]] = None) -> None:
    """The console entry point (``sparsearch``): runs the command line ``argv`` (default:
    ``sys.argv[1:]``) and exits. A :class:`~sparsearch.errors.SparsearchError` (bad input, a
    missing or corrupt index, a missing extra) prints ``error: <message>`` on one line and
    exits with status 2; anything else is a bug and keeps its traceback.

    At exit the interpreter skips its final garbage collections (``gc.freeze`` in an ``atexit``
    hook): after a search, numba's typing tables and the imported packages hold ~130,000
    tracked objects whose traversal at shutdown took ~0.4 s, a third of a BM25 search from the
    shell. Nothing is lost: commands close their files, stores and locks themselves, ``atexit``
    hooks still run, and Python never promised finalizers of objects alive at exit."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    atexit.unregister(gc.freeze)  # once, however often main runs in one process (tests)
    atexit.register(gc.freeze)
    try:
        app(args=argv, prog_name="sparsearch")
    except SparsearchError as e:
        typer.secho(f"error: {' '.join(str(e).split())}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
