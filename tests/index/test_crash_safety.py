"""Crash safety: a process killed in the middle of a build, an add or a merge leaves the previous
index (or the complete new one) loadable and intact.

A child process runs one write operation on an existing index and is killed with SIGKILL

* at deterministic points: just before its n-th ``os.replace`` / ``os.fsync`` call (every
  rename of a segment, bitmap, store, vocabulary and the manifest itself, and the fsyncs of
  the files being written), and
* at random times within the operation's measured duration (seeded, so the schedule is the
  same on every run; where the kill lands depends on the machine, and every landing is valid).

After each kill the index must open with checksum verification, answer the fixed queries
exactly as either the old or the new state does, have a readable document store that agrees
with it, and accept the next write, which removes every leftover of the killed one.
(SIGKILL kills the process, not the machine: what reached the page cache survives, as after a
process crash; power loss is the fsyncs' business and is not simulated.)
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

from sparsearch.docstore import open_docstore, store_names
from sparsearch.errors import NotFoundError
from sparsearch.index import Index, build_index
from sparsearch.index.updates import add_documents, delete_documents
from sparsearch.searching import ExactParams
from sparsearch.vectors import SparseBatch, Vocabulary

from tests.index.crashpoints import CRASH_POINTS

CHILD = r"""
import json, os, signal, sys, time
op, path, data, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import numpy as np
from sparsearch.vectors import SparseBatch
from sparsearch.index import build_index
from sparsearch.index.updates import add_documents, merge

""" + CRASH_POINTS + r"""

os.replace, os.fsync = replace, fsync
batch = SparseBatch.load_npz(os.path.join(data, "new.npz"))
docs = {i: ("title " + i, "text of " + i) for i in batch.ids}
print("ready", flush=True)
t = time.perf_counter()
if op == "build":
    build_index(batch, path, quantization="float32", overwrite=True, documents=docs)
elif op == "add":
    add_documents(path, batch, docs)
elif op == "merge":
    merge(path)
else:
    raise SystemExit("unknown op " + op)
print(json.dumps({"points": calls, "seconds": time.perf_counter() - t}), flush=True)
"""

N_OLD, N_NEW, V = 800, 300, 600


def _synth(rng: np.random.Generator, n: int, V: int, prefix: str) -> SparseBatch:
    m = (rng.random((n, V)) < 0.02) * rng.random((n, V)).astype(np.float32)
    return SparseBatch.from_dense(m, Vocabulary.from_size(V, "t"), [f"{prefix}{i}" for i in range(n)])


def _docs(batch: SparseBatch) -> dict[str, tuple[str, str]]:
    return {i: ("title " + i, "text of " + i) for i in batch.ids}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("crash")
    old = _synth(rng, N_OLD, V, "a")
    new = _synth(rng, N_NEW, V + 50, "b")   # new terms: the vocabulary grows
    queries = _synth(rng, 12, V + 50, "q")
    new.save_npz(root / "new.npz")
    return root, old, new, queries


def _results(index: Index, queries: SparseBatch) -> list[list[tuple[str, float]]]:
    scores, docs = index.search(queries, 10, ExactParams(threads=1))
    ids = index.doc_ids
    return [[(ids[d], round(float(s), 5)) for d, s in zip(dr, sr) if d >= 0] for dr, sr in zip(docs, scores)]


def _make_old(path: Path, old: SparseBatch, segmented: bool) -> None:
    """The state before the operation: one segment, or (for merge) three with deletions."""
    if not segmented:
        build_index(old, path, quantization="float32", documents=_docs(old))
        return
    build_index(old[:300], path, quantization="float32", documents=_docs(old[:300]))
    add_documents(path, old[300:550], _docs(old[300:550]))
    add_documents(path, old[550:], _docs(old[550:]))
    delete_documents(path, [f"a{i}" for i in range(0, N_OLD, 7)])


def _run_child(op: str, path: Path, data_dir: Path, crash_at: int = -1, kill_after: float | None = None):
    env = dict(os.environ, PYTHONHASHSEED="0", NUMBA_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-c", CHILD, op, str(path), str(data_dir), str(crash_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise AssertionError(f"child failed to start: {line!r} {p.stderr.read() if p.stderr else ''}")
    if kill_after is not None:
        time.sleep(kill_after)
        p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def _check(path: Path, queries: SparseBatch, expected: dict[str, list], live_ids: dict[str, set[str]],
           n_segments: dict[str, int]) -> str:
    """The index is loadable, verified, equal to one of the expected states; returns which."""
    index = Index.open(path, verify=True)
    got = _results(index, queries)
    states = [name for name, res in expected.items() if res == got and n_segments[name] == len(index.segments)]
    assert states, "index answers neither like the old nor like the new state"
    state = states[0]
    store = open_docstore(path, index.manifest)
    live = {i for i in index.doc_ids if _is_live(index, i)}
    assert live == live_ids[state]
    assert set(store.ids()) >= live and all(store.get(i) is not None for i in list(live)[:20])
    store.close()
    return state


def _is_live(index: Index, doc_id: str) -> bool:
    try:
        index.docnum(doc_id)
        return True
    except NotFoundError:
        return False


def _next_write_cleans(path: Path) -> None:
    """A later write succeeds (the dead writer's lock is gone) and removes the torn leftovers."""
    extra = SparseBatch.from_dicts([{"t1": 1.0, "fresh-term": 2.0}], Vocabulary(), ["zz-extra"])
    add_documents(path, extra, {"zz-extra": ("extra", "added after the crash")})
    index = Index.open(path)
    named = {s["name"] for s in index.manifest["segments"]} | {s["deletes"] for s in index.manifest["segments"]}
    named |= {index.manifest["vocab"], *store_names(index.manifest)}
    for e in path.iterdir():
        assert not e.name.startswith(".tmp-"), f"leftover {e.name}"
        if e.name.startswith(("seg-", "deletes-", "docs-", "vocab-")):
            assert e.name in named, f"unreferenced {e.name} survived the next commit"


def _expected(tmp: Path, op: str, old: SparseBatch, new: SparseBatch, queries: SparseBatch):
    before = tmp / "ref-before"
    _make_old(before, old, segmented=op == "merge")
    ib = Index.open(before)
    exp = {"old": _results(ib, queries)}
    live = {"old": {i for i in ib.doc_ids if _is_live(ib, i)}}
    after = tmp / "ref-after"
    if op == "build":
        ia = build_index(new, after, quantization="float32")
    elif op == "add":
        _make_old(after, old, segmented=False)
        add_documents(after, new)
        ia = Index.open(after)
    else:
        ia = Index.open(before)  # merge changes segments, not results
    exp["new"] = _results(ia, queries)
    live["new"] = {i for i in ia.doc_ids if _is_live(ia, i)}
    segs = {"old": len(ib.segments), "new": 1 if op == "merge" else len(ia.segments)}
    return exp, live, segs


@pytest.mark.parametrize("op", ["build", "add", "merge"])
def test_killed_writer_leaves_a_loadable_index(op, data, tmp_path):
    data_dir, old, new, queries = data
    exp, live, segs = _expected(tmp_path, op, old, new, queries)
    # an uninterrupted run: how many crash points and how long the operation takes
    ref = tmp_path / "full"
    _make_old(ref, old, segmented=op == "merge")
    rc, out, err = _run_child(op, ref, data_dir)
    assert rc == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert _check(ref, queries, exp, live, segs) == "new"
    n_points, seconds = info["points"], info["seconds"]
    assert n_points >= 4

    rng = np.random.default_rng(11)
    points = sorted(set(np.linspace(0, n_points - 1, 3).astype(int).tolist()) | {n_points - 1})
    plans = [("point", p) for p in points] + [("time", float(rng.uniform(0, seconds * 1.2))) for _ in range(2)]
    seen = set()
    for kind, arg in plans:
        path = tmp_path / f"idx-{kind}-{arg}"
        _make_old(path, old, segmented=op == "merge")
        if kind == "point":
            rc, _, err = _run_child(op, path, data_dir, crash_at=int(arg))
            assert rc == -signal.SIGKILL, f"child was meant to die at point {arg}: rc={rc} {err[-500:]}"
        else:
            _run_child(op, path, data_dir, kill_after=arg)
        state = _check(path, queries, exp, live, segs)
        seen.add(state)
        _next_write_cleans(path)
        Index.open(path, verify=True)
    # the first crash point (before anything is renamed) keeps the old state, the last the new one
    assert seen == {"old", "new"}
