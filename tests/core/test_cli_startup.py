"""The CLI starts light: what a fresh interpreter imports for ``sparsearch --help`` and for a
BM25 text search (structure only; the wall time is ``benchmarks/cli_startup.py``'s business).

A BM25 search needs numpy and the index (its one-shot search: not even numba), never the
deep-learning stack (torch, transformers, ...), the HTTP service (FastAPI, uvicorn) or the
scale-out backends. At exit, the
console script skips the interpreter's final garbage collections (``gc.freeze``).
"""

from __future__ import annotations

import json
import subprocess
import sys

from sparsearch.cli import main

# top-level packages a BM25 search must not import
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "onnx", "tokenizers", "fastapi",
         "starlette", "uvicorn", "ray", "pymilvus", "milvus_lite")
# sparsearch modules it must not import either (the service package pulls FastAPI in)
HEAVY_INTERNAL = ("sparsearch.service", "sparsearch.milvus", "sparsearch.distributed")

_PROBE = r"""
import json, sys
argv = json.loads(sys.argv[1])
if argv:
    from sparsearch.cli import main
    try:
        main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
else:
    import sparsearch.cli
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _modules(argv: list[str]) -> tuple[set[str], str]:
    """(modules loaded, stdout) of a fresh interpreter that runs ``sparsearch ARGV`` (or only
    imports ``sparsearch.cli`` when ``argv`` is empty)."""
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    head, _, tail = r.stdout.rpartition("MODULES=")
    return set(json.loads(tail)), head


def _heavy(modules: set[str]) -> list[str]:
    """The packages of HEAVY and HEAVY_INTERNAL that ``modules`` holds (or holds modules of)."""
    return sorted({m.split(".")[0] for m in modules if m.split(".")[0] in HEAVY}
                  | {p for p in HEAVY_INTERNAL for m in modules if m == p or m.startswith(p + ".")})


def test_importing_the_cli_loads_no_heavy_package_and_no_numba():
    modules, _ = _modules([])
    assert not _heavy(modules)
    # commands import the index (numba) when they run: `sparsearch --help` does not pay for it
    assert "numba" not in modules and "sparsearch.index" not in modules


def test_a_bm25_text_search_imports_no_deep_learning_or_service_package(tiny_beir, tmp_path):
    out = tmp_path / "idx"
    try:
        main(["index", str(tiny_beir), "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    modules, stdout = _modules(["search", str(out), "-q", "programming compiler", "-k", "2"])
    assert "1. d6" in stdout and "Compilers" in stdout  # a hit with its title and snippet
    assert not _heavy(modules), f"a BM25 search imported {_heavy(modules)}"
    assert "sparsearch.highlight" in modules and "sparsearch.index.oneshot" in modules  # the path ran
    assert "numba" not in modules and "scipy" not in modules  # tests/index/test_oneshot.py: the same results


_FREEZE_PROBE = r"""
import atexit, gc, os
atexit.register(lambda: os.write(1, b"FROZEN=%d\n" % gc.get_freeze_count()))  # runs after main's own hook
from sparsearch.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
assert gc.get_freeze_count() == 0  # nothing frozen while the process lives on (tests call main in-process)
"""


def test_main_skips_the_final_garbage_collections_at_exit_only():
    r = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.rpartition("FROZEN=")[2]) > 0
