"""Latent feature labels and labelled explanations."""

from __future__ import annotations

import numpy as np
import pytest

from sparsearch.features import FeatureLabels, explain_hit, latent_id
from sparsearch.vectors import SparseBatch, Vocabulary

TOPICS = {
    0: ["insulin glucose diabetes", "glucose insulin pancreas", "diabetes insulin resistance glucose"],
    1: ["tumor cancer chemotherapy", "cancer metastasis tumor", "tumor cancer oncology cells"],
    2: ["malaria mosquito parasite", "parasite malaria infection", "mosquito malaria transmission"],
}
FILLER = "the study patients results cells analysis"


def _corpus(seed: int = 0):
    rng = np.random.default_rng(seed)
    texts, rows = [], []
    for topic, sents in TOPICS.items():
        for rep in range(4):
            texts.append(f"{sents[rep % 3]} {FILLER}")
            z = np.zeros(4, np.float32)
            z[topic] = 1.0 + rng.random()
            z[3] = 0.1 * rng.random() + 0.01  # a weak latent active everywhere
            rows.append(z)
    return texts, np.array(rows)


def test_labels_name_the_topic_words_not_the_filler():
    texts, codes = _corpus()
    labels = FeatureLabels.fit(SparseBatch.from_dense(codes, Vocabulary.from_size(4, "f")), texts, top_docs=4)
    assert set(labels.label(0).split(", ")) <= {"insulin", "glucose", "diabetes"}
    assert set(labels.label("f1").split(", ")) <= {"tumor", "cancer", "chemotherapy"}
    assert labels.words(2)[0][0] == "malaria"
    for j in range(3):
        assert all(w not in FILLER.split() for w, _ in labels.words(j))
        ws = [s for _, s in labels.words(j)]
        assert ws == sorted(ws, reverse=True) and all(s > 0 for s in ws)
    assert labels.n_active == [4, 4, 4, 12]


def test_dead_latent_and_roundtrip(tmp_path):
    texts, codes = _corpus()
    codes = np.concatenate([codes, np.zeros((len(codes), 1), np.float32)], 1)  # latent 4 never fires
    labels = FeatureLabels.fit(codes, texts, top_docs=4)
    assert labels.label(4) == "(unlabelled)"
    labels.save(tmp_path / "labels.json")
    again = FeatureLabels.load(tmp_path / "labels.json")
    assert [w for w, _ in again.words(0)] == [w for w, _ in labels.words(0)]
    assert [s for _, s in again.words(0)] == pytest.approx([s for _, s in labels.words(0)], abs=1e-5)
    with pytest.raises(IndexError):
        labels.words(99)
    with pytest.raises(ValueError, match="code rows"):
        FeatureLabels.fit(codes[:3], texts)


def test_latent_id_parsing():
    assert latent_id("f123") == 123 and latent_id(7) == 7 and latent_id("latent_5") == 5
    with pytest.raises(ValueError, match="not a latent id"):
        latent_id("insulin")


def test_explain_hit_maps_index_terms_to_labels(tmp_path):
    from sparsearch.index import build_index

    texts, codes = _corpus()
    vocab = Vocabulary.from_size(4, "f")
    docs = SparseBatch.from_dense(codes, vocab, ids=[f"d{i}" for i in range(len(texts))])
    labels = FeatureLabels.fit(docs, texts, top_docs=4)
    index = build_index(docs, tmp_path / "idx", quantization="float32")
    query = SparseBatch.from_dicts([{"f1": 2.0, "f3": 1.0}], Vocabulary.from_size(4, "f"), ids=["q"], grow=False)
    scores, docnums = index.search(query, k=1)
    hit = explain_hit(index, query, int(docnums[0, 0]), labels)
    assert [c.term for c in hit] == ["f1", "f3"]
    assert hit[0].latent == 1 and ("cancer" in hit[0].label or "tumor" in hit[0].label)
    assert sum(c.contribution for c in hit) == pytest.approx(float(scores[0, 0]), rel=1e-3)
    # plain tuples work as well
    assert labels.explain([("f2", 1.0, 0.5, 0.5)])[0].label.startswith("malaria")
