"""Shared fixtures: real BEIR collections when present, tiny synthetic ones always."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(os.environ.get("SPARSEARCH_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def beir_path(name: str) -> Path:
    """Path of a real collection, or skip the test saying why."""
    p = DATA / name
    if not (p / "corpus.jsonl").exists():
        pytest.skip(f"real collection {name!r} not found at {p} (set SPARSEARCH_DATA to the folder holding it)")
    return p


def write_beir(root: Path, docs: dict[str, tuple[str, str]], queries: dict[str, str],
               qrels: dict[str, dict[str, int]], split: str = "test") -> Path:
    """Write a BEIR-layout collection to ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, (title, text) in docs.items():
            f.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, text in queries.items():
            f.write(json.dumps({"_id": i, "text": text}) + "\n")
    with open(root / "qrels" / f"{split}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, rel in qrels.items():
            for d, g in rel.items():
                f.write(f"{q}\t{d}\t{g}\n")
    return root


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    """A 6-document collection with 3 judged queries, generated in the test."""
    docs = {
        "d1": ("Cats", "cats are small domesticated carnivorous mammals"),
        "d2": ("Dogs", "dogs are domesticated descendants of wolves"),
        "d3": ("Wolves", "the wolf is a large canine native to eurasia and north america"),
        "d4": ("Python", "python is a programming language that emphasises readability"),
        "d5": ("Snakes", "pythons are large constricting snakes"),
        "d6": ("Compilers", "a compiler translates a programming language into machine code"),
    }
    queries = {"q1": "domesticated cats", "q2": "wolves and dogs", "q3": "programming language compiler",
               "q4": "unrelated astronomy question"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d6": 2, "d4": 1}}
    return write_beir(tmp_path / "tiny", docs, queries, qrels)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models: one intra-op thread is fastest and avoids oversubscribing a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
