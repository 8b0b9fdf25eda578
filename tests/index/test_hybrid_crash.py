"""A hybrid index survives SIGKILL during its build like a single one (see test_crash_safety.py).

A child process rebuilds a hybrid index (two sparse representations and a dense one, with a
document store) over an existing one and is killed just before its n-th ``os.replace`` /
``os.fsync`` (points spread over the whole build, and the commit's last ones) or at random times. After
each kill the index opens with checksum verification and answers the fixed queries exactly as
either the old or the new build, with a readable store; the next build removes the leftovers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparsearch.docstore import open_docstore
from sparsearch.index.hybrid import HybridIndex, HybridQueries, build_hybrid_from_vectors
from sparsearch.searching import HybridParams
from sparsearch.vectors import SparseBatch, Vocabulary

from tests.index.crashpoints import CRASH_POINTS

CHILD = r"""
import os, signal, sys, json, time
path, data, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
from sparsearch.vectors import SparseBatch
from sparsearch.index.hybrid import build_hybrid_from_vectors

""" + CRASH_POINTS + r"""

a = SparseBatch.load_npz(os.path.join(data, "a.npz"))
b = SparseBatch.load_npz(os.path.join(data, "b.npz"))
emb = np.load(os.path.join(data, "emb.npy"))
docs = {i: ("title " + i, "new text of " + i) for i in a.ids}
os.replace, os.fsync = replace, fsync
print("ready", flush=True)
t = time.perf_counter()
build_hybrid_from_vectors(path, a.ids, [("a", a), ("b", b), ("vec", emb)], documents=docs, quantization="float32")
print(json.dumps({"points": calls, "seconds": time.perf_counter() - t}), flush=True)
"""

N, V, D = 400, 300, 12


def _synth(rng: np.random.Generator, n: int, prefix: str) -> SparseBatch:
    m = (rng.random((n, V)) < 0.03) * rng.random((n, V)).astype(np.float32)
    return SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"{prefix}{i:04d}" for i in range(n)])


def _parts(rng: np.random.Generator, prefix: str):
    a, b = _synth(rng, N, prefix), _synth(rng, N, prefix)
    return a, b, rng.standard_normal((N, D)).astype(np.float32)


def _results(idx: HybridIndex, q: HybridQueries) -> list:
    s, d = idx.search(q, 10, HybridParams(threads=1))
    return [[(idx.doc_ids[x], round(float(v), 5)) for x, v in zip(dr, sr) if x >= 0] for dr, sr in zip(d, s)]


def _run(path: Path, data_dir: Path, crash_at: int, kill_after: float | None = None):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(data_dir), str(crash_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
    if kill_after is not None:
        time.sleep(kill_after)
        p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def test_killed_hybrid_build_leaves_old_or_new(tmp_path):
    rng = np.random.default_rng(11)
    old, new = _parts(rng, "o"), _parts(rng, "n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    new[0].save_npz(data_dir / "a.npz")
    new[1].save_npz(data_dir / "b.npz")
    np.save(data_dir / "emb.npy", new[2])
    qa, qb = _synth(rng, 8, "q"), _synth(rng, 8, "q")
    q = HybridQueries({"a": qa, "b": qb, "vec": rng.standard_normal((8, D)).astype(np.float32)}, qa.ids)

    def make_old(p: Path) -> None:
        a, b, emb = old
        build_hybrid_from_vectors(p, a.ids, [("a", a), ("b", b), ("vec", emb)], quantization="float32",
                                  documents={i: ("title " + i, "old text of " + i) for i in a.ids})

    ref_old, ref_new = tmp_path / "ref-old", tmp_path / "ref-new"
    make_old(ref_old)
    build_hybrid_from_vectors(ref_new, new[0].ids, [("a", new[0]), ("b", new[1]), ("vec", new[2])],
                              quantization="float32")
    expected = {"old": _results(HybridIndex.open(ref_old), q), "new": _results(HybridIndex.open(ref_new), q)}
    full = tmp_path / "full"
    make_old(full)
    rc, out, err = _run(full, data_dir, -1)
    assert rc == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    points, seconds = info["points"], info["seconds"]
    assert points > 10
    rng_t = np.random.default_rng(5)
    # crash points spread evenly over the build (every representation, the store) plus the last
    # ones (the commit's renames and fsyncs), and two random times: each child costs a start-up
    spread = sorted(set(np.linspace(0, points - 1, 6).round().astype(int).tolist()) | set(range(points - 3, points)))
    plan = [(i, None) for i in spread] + [(-1, float(t)) for t in rng_t.uniform(0, seconds, 2)]
    seen = set()
    for n, (crash_at, after) in enumerate(plan):
        p = tmp_path / f"k{n}"
        make_old(p)
        _run(p, data_dir, crash_at, after)
        idx = HybridIndex.open(p, verify=True)
        got = _results(idx, q)
        state = "old" if got == expected["old"] else "new" if got == expected["new"] else None
        assert state is not None, f"crash point {crash_at}: neither the old nor the new hybrid"
        seen.add(state)
        store = open_docstore(p, idx.manifest)
        doc = store.get(idx.doc_ids[0])
        assert doc is not None and doc["text"].startswith(f"{state} text")
        store.close()
        # the next build succeeds and leaves nothing of the killed one
        build_hybrid_from_vectors(p, old[0].ids, [("a", old[0])], quantization="float32")
        leftovers = [e.name for e in p.iterdir() if e.name.startswith((".tmp-", "docs-"))]
        assert not leftovers, leftovers
        assert len([e for e in p.iterdir() if e.name.startswith("rep-")]) == 1
    assert seen == {"old", "new"}
