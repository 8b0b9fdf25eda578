"""Fuzz the command line with mutated inputs and indexes (issue 15 item 8).

Seeded random mutations (flipped and inserted bytes, non-UTF-8 bytes, truncation, dropped and
repeated lines, JSON values replaced by values of other types) of BEIR corpora, JSONL/CSV/text
document files, vector files and every file of a built index are fed to ``sparsearch`` through
:func:`sparsearch.cli.main`. Whatever the mutation, the command must end with exit code 0 or 2
and never with a traceback (an exception other than ``SystemExit`` escaping ``main``); a failed
``index`` must leave no index directory behind, and a failed update no stray files. Bounded to
about half a minute (a fixed number of seeded cases; ``SPARSEARCH_FUZZ_SCALE=10`` runs ten times as
many); every failure names its seed and mutation to replay it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from sparsearch.index import Index
from sparsearch.index.storage import is_managed
from sparsearch.vectors import SparseBatch
from tests.core.test_cli import cli

SCALE = float(os.environ.get("SPARSEARCH_FUZZ_SCALE", "1"))
JUNK = [123, -1, 1e308, None, True, [], ["a", 1], {}, {"x": {"y": 1}}, "", "\u0000", "é" * 3, "a\nb"]
WORDS = "cat dog wolf python snake compiler language machine code small large north".split()


def corpus_docs(rng: random.Random, n: int = 12) -> list[dict]:
    return [{"_id": f"d{i}", "title": rng.choice(WORDS).title(),
             "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))} for i in range(n)]


# ----------------------------------------------------------------------------- mutations
def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random byte-level mutation of ``data`` and its description."""
    if not data:
        return b"\xff", "empty->0xff"
    i = rng.randrange(len(data))
    kind = rng.choice(["flip", "insert", "non-utf8", "truncate", "drop-line", "repeat-line", "zero"])
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:], f"flip@{i}"
    if kind == "insert":
        return data[:i] + bytes([rng.randrange(256)]) + data[i:], f"insert@{i}"
    if kind == "non-utf8":
        return data[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + data[i:], f"non-utf8@{i}"
    if kind == "truncate":
        return data[:i], f"truncate@{i}"
    if kind == "zero":
        return data[:i] + b"\x00" * min(8, len(data) - i) + data[i + 8:], f"zero@{i}"
    lines = data.split(b"\n")
    j = rng.randrange(len(lines))
    if kind == "drop-line":
        return b"\n".join(lines[:j] + lines[j + 1:]), f"drop-line {j + 1}"
    return b"\n".join(lines[:j + 1] + lines[j:]), f"repeat-line {j + 1}"


def _edit_json_value(obj, rng: random.Random, depth: int = 0):
    """``obj`` with one value somewhere inside replaced by junk; returns (new obj, path)."""
    if isinstance(obj, dict) and obj and depth < 4 and rng.random() < 0.8:
        k = rng.choice(list(obj))
        new, path = _edit_json_value(obj[k], rng, depth + 1)
        return {**obj, k: new}, f"{k}/{path}"
    if isinstance(obj, list) and obj and depth < 4 and rng.random() < 0.8:
        i = rng.randrange(len(obj))
        new, path = _edit_json_value(obj[i], rng, depth + 1)
        return obj[:i] + [new] + obj[i + 1:], f"{i}/{path}"
    return rng.choice(JUNK), "="


def mutate_json_text(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Replace a value in one JSON line (or the whole JSON document) by a value of another type."""
    lines = data.split(b"\n")
    candidates = [j for j, line in enumerate(lines) if line.strip()]
    if not candidates:
        return mutate_bytes(data, rng)
    j = rng.choice(candidates)
    try:
        obj = json.loads(lines[j])
    except ValueError:
        try:  # a pretty-printed JSON document
            new, path = _edit_json_value(json.loads(data), rng)
            return json.dumps(new).encode(), f"json {path}"
        except ValueError:
            return mutate_bytes(data, rng)
    new, path = _edit_json_value(obj, rng)
    lines[j] = json.dumps(new).encode()
    return b"\n".join(lines), f"line {j + 1}: json {path}"


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    return mutate_json_text(data, rng) if rng.random() < 0.4 else mutate_bytes(data, rng)


# ----------------------------------------------------------------------------- checks
def run(case: str, *args) -> int:
    """Run the CLI; fail the test (naming ``case``) on a traceback or an exit code other than 0 or 2."""
    try:
        r = cli(*args)
    except Exception as e:  # escaped main(): a traceback for the user
        pytest.fail(f"{case}: `sparsearch {' '.join(map(str, args))}` raised {type(e).__name__}: {e}")
    assert "Traceback" not in r.output, f"{case}: {r.output}"
    assert r.exit_code in (0, 2), f"{case}: exit {r.exit_code}: {r.output}"
    if r.exit_code == 2:
        assert r.stderr.strip().splitlines()[-1].startswith("error: "), f"{case}: {r.stderr}"
    return r.exit_code


def check_index_run(case: str, source: Path, out: Path, *extra: str) -> None:
    """`index SOURCE -o OUT`: 0 and a searchable index, or 2 and no OUT at all."""
    code = run(case, "index", source, "-o", out, *extra)
    if code == 2:
        assert not out.exists(), f"{case}: a failed index left {sorted(p.name for p in out.iterdir())}"
    else:
        assert Index.open(out).n_docs >= 1, case
        run(case, "search", out, "-q", "cat compiler", "--json")
        shutil.rmtree(out)


def cases(seed: int, n: int):
    """``n`` x SCALE seeded random generators, one per case (the same cases on every machine)."""
    for i in range(max(1, round(n * SCALE))):
        yield seed * 100_000 + i, random.Random(seed * 100_000 + i)


# ----------------------------------------------------------------------------- tests
def test_fuzz_mutated_corpora_and_document_files(tmp_path):
    """issue 15 item 8: mutated BEIR corpora, JSONL documents, CSV and text files: exit 0 or 2, no
    traceback, and a failed index leaves nothing behind."""
    base_rng = random.Random(15)
    docs = corpus_docs(base_rng)
    beir = "".join(json.dumps(d) + "\n" for d in docs).encode()
    jsonl = "".join(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"], "n": 1}) + "\n"
                    for d in docs).encode()
    csv = ("id,title,text\n" + "".join(f'{d["_id"]},{d["title"]},"{d["text"]}"\n' for d in docs)).encode()
    text = "".join(d["text"] + "\n" for d in docs).encode()
    for seed, rng in cases(1, 60):
        kind = rng.choice(["beir", "jsonl", "csv", "text"])
        data, how = mutate({"beir": beir, "jsonl": jsonl, "csv": csv, "text": text}[kind], rng)
        case = f"seed {seed} {kind} {how}"
        work = tmp_path / f"c{seed}"
        work.mkdir()
        if kind == "beir":
            (work / "col").mkdir()
            (work / "col" / "corpus.jsonl").write_bytes(data)
            source = work / "col"
        else:
            source = work / {"jsonl": "docs.jsonl", "csv": "docs.csv", "text": "docs.txt"}[kind]
            source.write_bytes(data)
        check_index_run(case, source, work / "out" / "idx")
        shutil.rmtree(work)


def test_fuzz_mutated_vector_files(tmp_path):
    """issue 15 item 8: mutated vector JSONL files: exit 0 or 2, no traceback, nothing left on failure."""
    rng0 = random.Random(8)
    vecs = [{w: round(rng0.uniform(0.1, 3), 3) for w in rng0.sample(WORDS, 4)} for _ in range(10)]
    SparseBatch.from_dicts(vecs, ids=[f"v{i}" for i in range(10)]).write_jsonl(tmp_path / "v.jsonl")
    clean = (tmp_path / "v.jsonl").read_bytes()
    for seed, rng in cases(2, 60):
        data, how = mutate(clean, rng)
        (tmp_path / "m.jsonl").write_bytes(data)
        check_index_run(f"seed {seed} vectors {how}", tmp_path / "m.jsonl", tmp_path / "out")


def test_fuzz_mutated_index_files(tiny_beir, tmp_path):
    """issue 15 item 8: one mutated file of a built index (any JSON, array, store or encoder file): stats,
    search (text, --json), add, delete and merge end with exit 0 or 2, never a traceback, and a failed
    update leaves no stray file behind."""
    good = tmp_path / "good"
    assert cli("index", tiny_beir, "-o", good).exit_code == 0
    files = sorted(p.relative_to(good) for p in good.rglob("*") if p.is_file() and p.name != ".lock")
    (tmp_path / "more.txt").write_text("cats and compilers\n")
    for seed, rng in cases(3, 30):
        rel = rng.choice(files)
        idx = tmp_path / f"i{seed}"
        shutil.copytree(good, idx)
        data, how = mutate((idx / rel).read_bytes(), rng) if rel.suffix == ".json" or rng.random() < 0.5 \
            else mutate_bytes((idx / rel).read_bytes(), rng)
        (idx / rel).write_bytes(data)
        case = f"seed {seed} {rel} {how}"
        run(case, "stats", idx)
        run(case, "search", idx, "-q", "domesticated cats")
        run(case, "search", idx, "-q", "compiler", "--json", "--explain")
        for cmd in (("add", idx, tmp_path / "more.txt", "--replace"), ("delete", idx, "d1", "--ignore-missing"),
                    ("merge", idx)):
            before = set(os.listdir(idx))
            if run(case, *cmd) == 2:
                stray = [e for e in set(os.listdir(idx)) - before if is_managed(e)]
                assert not stray, f"{case}: failed {cmd[0]} left {stray}"
        shutil.rmtree(idx)
