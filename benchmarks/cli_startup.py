"""CLI start-up: wall time of one BM25 text search from the shell, end to end.

Times ``sparsearch search INDEX -q QUERY`` (the console script, a fresh process each time)
``--runs`` times (median and p90), after warm-up runs that fill the file cache, numba's cache
of compiled kernels and the bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped for the
child processes and ``src`` is byte-compiled first: an installed package has its ``.pyc``
files). With ``--old SRC`` (the ``src`` folder of another revision, e.g. a ``git worktree``)
both revisions are timed in the same run, interleaved ABBA, with the same interpreter and
index, and their outputs must be equal. Also written: where the import time goes (each
top-level package's share of ``-X importtime``, self times summed), which heavy packages a
BM25 search imports (it should import none of torch, transformers, sentence_transformers,
onnxruntime, fastapi, uvicorn), and floors: the start-up of the interpreter alone and with
the third-party packages a search needs.

``--extra NAME=DIR`` adds this revision run with ``DIR`` first on ``PYTHONPATH`` (e.g. another
version of a dependency installed there) as one more variant of the same run.

Where one-shot search (``sparsearch.index.oneshot``: numpy only) stops paying: on a synthetic
index of ``--crossover-docs`` documents (terms of every document frequency), the same
``sparsearch search --queries VECTORS`` is timed end to end with the one-shot search forced
(``oneshot.MAX_POSTINGS`` set high) and with the numba kernels forced (set to -1), interleaved,
for queries reading from a few thousand to millions of postings; the outputs must be equal.
``MAX_POSTINGS`` is chosen below the crossover.

    git worktree add --detach /tmp/e/old HEAD~3    # or: git archive HEAD src | tar -x -C /tmp/e/old
    python benchmarks/cli_startup.py --old /tmp/e/old/src [--old-rev HEAD's hash]
    pip install --no-deps --target /tmp/typer028 "typer==0.28.0"   # typer before pydantic
    python benchmarks/cli_startup.py --old /tmp/e/old/src --extra "new, typer 0.28=/tmp/typer028"
    python benchmarks/cli_startup.py                       # this revision only

Writes ``benchmarks/results/cli_startup.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPARSEARCH_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "fastapi", "starlette", "uvicorn",
         "pydantic", "numba", "scipy", "llvmlite", "sqlite3", "rich")
FLOORS = ("pass", "import numpy", "import numpy, sqlite3, Stemmer, typer", "import numpy, typer, pydantic",
          "import scipy.sparse", "import numba")

# Where one search's time goes, phase by phase in one fresh interpreter (this revision's layout):
# the phases are what the console script does, in its order, each timed on its own.
PHASES = r"""
import contextlib, io, json, sys, time
from pathlib import Path
t = [("start", time.perf_counter())]
def mark(name):
    t.append((name, time.perf_counter()))
import numpy as np; mark("import numpy")
import sparsearch; mark("import sparsearch (vectors: numpy only)")
import sparsearch.cli as cli; mark("import sparsearch.cli (typer)")
class Parsed(Exception):
    pass
def parsed(*a, **k):
    raise Parsed
open_oneshot, cli._open_oneshot = cli._open_oneshot, parsed
try:
    cli.app(args=["search", sys.argv[1], "-q", sys.argv[2]], prog_name="sparsearch", standalone_mode=False)
except Parsed:
    pass
cli._open_oneshot = open_oneshot; mark("typer: parse the command line (pydantic)")
from sparsearch.index.oneshot import OneShotIndex
from sparsearch.searching import params_for_mode
import sparsearch.evaluation; mark("import sparsearch.index.oneshot (searching, encoders, manifest, storage)")
params = params_for_mode("exact")
one = OneShotIndex.open(sys.argv[1]); mark("open the index (manifest, vocabulary, segments; CRC32s checked)")
qv = cli._load_queries(one, None, [sys.argv[2]]); mark("load the BM25 encoder (its state), encode the query")
scores, docs = one.search(qv, 10, params); mark(f"one-shot search (numpy; {one.postings(qv)} postings)")
with contextlib.redirect_stdout(io.StringIO()):
    cli._print_hits(one, qv, scores, docs, [sys.argv[2]], None, False, False)
mark("titles, snippets, print (document store: CRC32 checked; explanations)")
print(json.dumps({n: t[i][1] - t[i - 1][1] for i, (n, _) in enumerate(t) if i}))
"""

# One CLI search with the one-shot search forced on (MAX_POSTINGS high) or off (-1: numba kernels).
FORCED = r"""
import sys
import sparsearch.index.oneshot as oneshot
oneshot.MAX_POSTINGS = int(sys.argv[1])
from sparsearch.cli import main
main(sys.argv[2:])
"""

# A synthetic index of vectors: terms t0..t23, t in a document with probability 0.8 * 0.55**t
# (document frequencies from 80% of the documents down to a few hundred), log-normal weights.
SYNTHETIC = r"""
import sys
import numpy as np
from sparsearch.index import build_index
from sparsearch.vectors import SparseBatch, Vocabulary
n, V = int(sys.argv[2]), 24
rng = np.random.default_rng(0)
rows, cols = [], []
for t in range(V):
    d = np.flatnonzero(rng.random(n) < 0.8 * 0.55 ** t)
    rows.append(d)
    cols.append(np.full(len(d), t, np.int32))
rows, cols = np.concatenate(rows), np.concatenate(cols)
o = np.lexsort((cols, rows))
indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[o], minlength=n))])
b = SparseBatch(indptr, cols[o], rng.lognormal(0, 1, len(o)).astype(np.float32), Vocabulary.from_size(V, "t"),
                [f"d{i}" for i in range(n)])
build_index(b, sys.argv[1])
"""
# the crossover's queries: term sets reading from a few thousand to all postings
CROSSOVER_QUERIES = ([11], [9], [7], [5], [4], [3], [2], [1], [0], [0, 1], [0, 1, 2, 3], list(range(24)))


def child_env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src)
    return env


def command(index: Path, query: str) -> list[str]:
    script = Path(sys.executable).parent / "sparsearch"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "sparsearch.cli"]
    return [*head, "search", str(index), "-q", query]


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child: user + system, stdout) of one run."""
    wall, cpu, _, out = run_measured(cmd, env)
    return wall, cpu, out


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s: user + system, peak memory MiB, stdout) of one run of ``cmd``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read().decode()[-2000:]}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode()


def import_breakdown(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Self import time (ms) summed per top-level package, over one run with -X importtime."""
    r = subprocess.run(cmd, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    per: dict[str, float] = defaultdict(float)
    modules = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        name = name.strip()
        modules.append(name)
        top = ".".join(name.split(".")[:2]) if name.startswith("sparsearch.") else name.split(".")[0]
        per[top] += int(self_us) / 1000
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    total = sum(per.values())
    top = dict(sorted(((k, round(v, 1)) for k, v in per.items()), key=lambda kv: -kv[1]))
    return {"total_ms": round(total, 1), "per_package_ms": top, "heavy_loaded": loaded, "n_modules": len(modules)}


def stats(walls: list[float]) -> dict[str, float]:
    a = np.asarray(walls)
    return {"median_s": round(float(np.median(a)), 3), "p90_s": round(float(np.percentile(a, 90)), 3),
            "min_s": round(float(a.min()), 3), "max_s": round(float(a.max()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("/tmp/sparsearch-cli-startup/scifact-bm25"),
                    help="BM25 index (built from --data with `sparsearch index` when missing)")
    ap.add_argument("--data", type=Path, default=DATA / "scifact")
    ap.add_argument("--query", default="vitamin d bone density")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--old", type=Path, help="src folder of the revision to compare with (same run, ABBA)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=DIR",
                    help="also time this revision with DIR first on PYTHONPATH (e.g. another typer installed "
                         "there with pip install --target DIR --no-deps), as variant NAME")
    ap.add_argument("--old-rev", help="revision name of --old (default: its git HEAD, e.g. for a git worktree)")
    ap.add_argument("--crossover-docs", type=int, default=4_000_000,
                    help="documents of the synthetic index of the one-shot/numba crossover (0: skip it)")
    ap.add_argument("--crossover-runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "cli_startup")
    args = ap.parse_args()

    variants = {"new": ROOT / "src"}
    if args.old is not None:
        variants = {"old": args.old.resolve(), "new": ROOT / "src"}
    envs = {name: child_env(src) for name, src in variants.items()}
    for spec in args.extra:
        name, _, extra = spec.partition("=")
        variants[name] = ROOT / "src"
        envs[name] = {**envs["new"], "PYTHONPATH": f"{Path(extra).resolve()}{os.pathsep}{ROOT / 'src'}"}
    for name, src in variants.items():
        subprocess.run([sys.executable, "-m", "compileall", "-q", *envs[name]["PYTHONPATH"].split(os.pathsep)],
                       env=envs[name], check=True)
        where = subprocess.run([sys.executable, "-c", "import sparsearch; print(sparsearch.__file__)"],
                               env=envs[name], capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(src):
            raise SystemExit(f"{name}: sparsearch imports from {where}, not from {src}")
    revisions = {name: subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip() or "?" for name, src in variants.items()}
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True).stdout.strip()
    for name, src in variants.items():
        if src == ROOT / "src" and dirty:
            revisions[name] += " + working tree"
    if args.old_rev and "old" in revisions:
        revisions["old"] = args.old_rev
    if not (args.index / "manifest.json").exists():
        shutil.rmtree(args.index, ignore_errors=True)
        args.index.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*command(args.index, "")[:-4], "index", str(args.data), "--out", str(args.index)],
                       env=envs["new"], check=True)
    cmd = command(args.index, args.query)

    load_before = os.getloadavg()
    outputs: dict[str, str] = {}
    for name in variants:  # warm: file cache, numba cache, .pyc files
        for _ in range(args.warmup):
            outputs[name] = run_once(cmd, envs[name])[2]
    for name, out in outputs.items():
        if out != outputs["new"]:
            raise SystemExit(f"{name} and new print different results:\n{out}\n---\n{outputs['new']}")
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for i in range(args.runs):
        for name in (order if i % 2 == 0 else order[::-1]):  # ABBA: a slow minute hits both
            wall, cpu, _ = run_once(cmd, envs[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    breakdown = {name: import_breakdown(cmd, envs[name]) for name in variants}
    phase_runs = [json.loads(subprocess.run([sys.executable, "-c", PHASES, str(args.index), args.query],
                                            env=envs["new"], capture_output=True, text=True, check=True).stdout)
                  for _ in range(args.runs)]
    phases = {n: round(float(np.median([p[n] for p in phase_runs])) * 1000, 1) for n in phase_runs[0]}
    floors = {}
    for code in FLOORS:
        w = []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=envs["new"], check=True)
            w.append(time.perf_counter() - t)
        floors[code] = stats(w)
    cross = crossover(args.crossover_docs, args.crossover_runs, envs["new"]) if args.crossover_docs else None
    load_after = os.getloadavg()

    result = {
        "command": " ".join(["sparsearch", *cmd[cmd.index("search"):]]),
        "revisions": revisions, "extra_paths": dict(e.partition("=")[::2] for e in args.extra), "runs": args.runs, "warmup": args.warmup, "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "wall": {name: {**stats(w), "all_s": [round(x, 3) for x in w]} for name, w in walls.items()},
        "cpu": {name: {**stats(c), "all_s": [round(x, 3) for x in c]} for name, c in cpus.items()},
        "imports": breakdown, "phases_ms": phases, "floors": floors, "outputs_equal": len(outputs) > 1 or None,
        "crossover": cross,
        "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def crossover(n_docs: int, runs: int, env: dict[str, str]) -> dict[str, Any]:
    """End-to-end CLI time of one query with the one-shot search forced and with the numba
    kernels forced, by the postings it reads, on a synthetic index of ``n_docs`` documents."""
    path = Path(f"/tmp/sparsearch-cli-startup/synthetic-{n_docs}")
    if not (path / "manifest.json").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", SYNTHETIC, str(path), str(n_docs)], env=env, check=True)
    (seg,) = path.glob("seg-*/term_post_ptr.npy")
    df = np.diff(np.load(seg))
    rows = []
    for terms in CROSSOVER_QUERIES:
        qfile = path.parent / "crossover-query.jsonl"
        qfile.write_text(json.dumps({"id": "q", "vector": {f"t{t}": 1.0 + t / 8 for t in terms}}) + "\n")
        argv = ["search", str(path), "--queries", str(qfile), "-k", "10"]
        paths = {"one-shot": [sys.executable, "-c", FORCED, str(10**15), *argv],
                 "numba": [sys.executable, "-c", FORCED, "-1", *argv]}
        outs = {name: run_measured(cmd, env)[3] for name, cmd in paths.items()}  # warm-up
        if outs["one-shot"] != outs["numba"]:
            raise SystemExit(f"one-shot and numba print different results for terms {terms}")
        got: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for i in range(runs):
            for name in (list(paths) if i % 2 == 0 else list(paths)[::-1]):
                wall, _, rss, _ = run_measured(paths[name], env)
                got[name].append((wall, rss))
        rows.append({"terms": len(terms), "postings": int(df[terms].sum()),
                     **{f"{name}_s": round(float(np.median([w for w, _ in v])), 3) for name, v in got.items()},
                     **{f"{name}_mib": round(max(m for _, m in v)) for name, v in got.items()}})
        print(rows[-1], flush=True)
    return {"docs": n_docs, "postings": int(df.sum()), "runs": runs, "rows": rows}


def render(r: dict[str, Any]) -> str:
    names = list(r["wall"])
    lines = [f"# CLI start-up: `{r['command']}`", "",
             f"{r['runs']} runs after {r['warmup']} warm-up runs per revision"
             + (", revisions interleaved (order reversed every other run), same output" if len(names) > 1 else "")
             + f"; {r['cpus']} CPUs, load average {r['loadavg_before'][0]} before, {r['loadavg_after'][0]} after "
             f"({r['date']}, Python {r['python']}).", "",
             "| revision | median s | p90 s | min s | max s | CPU (user+sys) median s |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} ({r['revisions'][n]}) | {w['median_s']:.3f} | {w['p90_s']:.3f} | {w['min_s']:.3f} | {w['max_s']:.3f} | "
              f"{r['cpu'][n]['median_s']:.3f} |" for n, w in r["wall"].items()]
    if len(names) > 1:
        lines += ["", f"Speed-up (median): {r['wall']['old']['median_s'] / r['wall']['new']['median_s']:.2f}x"]
    lines += ["", "## Import time (one run with -X importtime, self times summed per package, ms)", "",
              "| package | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
    pkgs = list(dict.fromkeys(p for n in names for p in list(r["imports"][n]["per_package_ms"])[:14]))
    for p in pkgs:
        lines.append(f"| {p} | " + " | ".join(str(r["imports"][n]["per_package_ms"].get(p, "-")) for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['imports'][n]['total_ms']}**" for n in names) + " |")
    lines.append("| modules | " + " | ".join(str(r["imports"][n]["n_modules"]) for n in names) + " |")
    lines += ["", "Heavy packages imported: " + "; ".join(
        f"{n}: {', '.join(r['imports'][n]['heavy_loaded']) or 'none'}" for n in names), "",
        "## Phases of one search (new; each phase timed in a fresh interpreter, median of the runs, ms)", "",
        "| phase | ms |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in r["phases_ms"].items()]
    lines += [f"| **sum** | **{sum(r['phases_ms'].values()):.1f}** |", "",
        "## Floors (fresh interpreter, same environment, median / p90 s)", "",
        "| command | median s | p90 s |", "| --- | --- | --- |"]
    lines += [f"| `python -c '{k}'` | {v['median_s']:.3f} | {v['p90_s']:.3f} |" for k, v in r["floors"].items()]
    c = r.get("crossover")
    if c:
        lines += ["", f"## One-shot search (numpy) or numba kernels, by postings read (synthetic index of "
                      f"{c['docs']:,} documents, {c['postings']:,} postings; one query from a vector file; "
                      f"median of {c['runs']} interleaved runs each, end to end; peak memory of the process)", "",
                  "| query terms | postings | one-shot s | numba s | one-shot MiB | numba MiB |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {x['terms']} | {x['postings']:,} | {x['one-shot_s']:.3f} | {x['numba_s']:.3f} | "
                  f"{x['one-shot_mib']} | {x['numba_mib']} |" for x in c["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
