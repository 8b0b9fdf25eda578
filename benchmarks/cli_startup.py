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

    git worktree add --detach /tmp/e/old HEAD~3
    python benchmarks/cli_startup.py --old /tmp/e/old/src
    pip install --no-deps --target /tmp/typer028 "typer==0.28.0"   # typer before pydantic
    python benchmarks/cli_startup.py --old /tmp/e/old/src --extra "new, typer 0.28=/tmp/typer028"
    python benchmarks/cli_startup.py                       # this revision only

Writes ``benchmarks/results/cli_startup.md`` and ``.json``.
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
import sparsearch; mark("import sparsearch (vectors: scipy.sparse)")
import sparsearch.cli as cli; mark("import sparsearch.cli (typer)")
class Parsed(Exception):
    pass
def parsed(*a, **k):
    raise Parsed
search_params, cli._search_params = cli._search_params, parsed
try:
    cli.app(args=["search", sys.argv[1], "-q", sys.argv[2]], prog_name="sparsearch", standalone_mode=False)
except Parsed:
    pass
cli._search_params = search_params; mark("typer: parse the command line (pydantic)")
import sparsearch.index, sparsearch.index.hybrid; mark("import sparsearch.index (numba)")
from sparsearch.index import kernels
kernels.snap_rows(np.array([0, 1]), np.array([0.5])); mark("numba: first cached kernel (target set-up)")
with contextlib.redirect_stdout(io.StringIO()):
    cli.search(index=[Path(sys.argv[1])], query=[sys.argv[2]])
mark("search: open index, encode, search, titles, snippets, print")
print(json.dumps({n: t[i][1] - t[i - 1][1] for i, (n, _) in enumerate(t) if i}))
"""


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, r.stdout


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
    load_after = os.getloadavg()

    result = {
        "command": " ".join(["sparsearch", *cmd[cmd.index("search"):]]),
        "revisions": revisions, "extra_paths": dict(e.partition("=")[::2] for e in args.extra), "runs": args.runs, "warmup": args.warmup, "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "wall": {name: {**stats(w), "all_s": [round(x, 3) for x in w]} for name, w in walls.items()},
        "cpu": {name: {**stats(c), "all_s": [round(x, 3) for x in c]} for name, c in cpus.items()},
        "imports": breakdown, "phases_ms": phases, "floors": floors, "outputs_equal": len(outputs) > 1 or None,
        "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
