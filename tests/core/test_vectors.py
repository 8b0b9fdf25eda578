import json

import numpy as np
import pytest

from sparsearch.vectors import FormatError, SparseBatch, Vocabulary, iter_jsonl_chunks, read_jsonl


def test_from_dicts_roundtrip_and_row_order():
    b = SparseBatch.from_dicts([{"b": 2.0, "a": 1.0}, {}, {"c": 0.5, "a": 0.0}], ids=["x", "y", "z"])
    assert len(b) == 3 and b.nnz == 3
    assert b.vocab.terms == ["b", "a", "c"]
    assert b.row_dict(0) == {"b": 2.0, "a": 1.0}
    assert b.row_dict(1) == {}
    assert b.row_dict(2) == {"c": 0.5}  # explicit zero dropped
    assert list(b.indices[:2]) == [0, 1]  # sorted term ids within a row
    b.validate()


def test_jsonl_and_npz_roundtrip(tmp_path):
    b = SparseBatch.from_dicts([{"hello": 1.25, "world": 0.5}, {"world": 3.0}], ids=["d1", "d2"])
    b.write_jsonl(tmp_path / "v.jsonl")
    b2 = read_jsonl(tmp_path / "v.jsonl")
    assert b2.ids == ["d1", "d2"] and b2.to_dicts() == b.to_dicts()
    b.save_npz(tmp_path / "v.npz")
    b3 = SparseBatch.load_npz(tmp_path / "v.npz")
    assert b3.vocab == b.vocab and b3.ids == b.ids
    np.testing.assert_array_equal(b3.indices, b.indices)
    np.testing.assert_array_equal(b3.values, b.values)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"id": "a", "vector": {"x": 1.0}', "malformed JSON"),
        ('{"id": "a", "vector": {"x": "heavy"}}', "is not a number"),
        ('{"id": "a", "vector": {"x": -1.0}}', "negative"),
        ('{"id": "a", "vector": {"x": NaN}}', "not finite"),
        ('{"id": "a", "vector": {"x": Infinity}}', "not finite"),
        ('{"id": "a", "vector": [1, 2]}', "'vector' field"),
        ('[1, 2, 3]', "expected a JSON object"),
        ('{"id": "a", "vector": {"x": true}}', "is not a number"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, problem):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "ok", "vector": {"x": 1.0}}\n\n' + line + "\n")
    with pytest.raises(FormatError) as e:
        read_jsonl(p)
    assert "bad.jsonl, line 3" in str(e.value) and problem in str(e.value)


def test_fixed_vocabulary_rejects_unknown_token(tmp_path):
    p = tmp_path / "v.jsonl"
    p.write_text(json.dumps({"id": "a", "vector": {"known": 1.0, "zebra": 2.0}}) + "\n")
    with pytest.raises(FormatError, match="unknown token 'zebra'"):
        read_jsonl(p, Vocabulary(["known"]), grow=False)


def test_chunks_share_a_growing_vocabulary(tmp_path):
    p = tmp_path / "v.jsonl"
    with open(p, "w") as f:
        for i in range(10):
            f.write(json.dumps({"id": str(i), "vector": {f"t{i}": 1.0, "common": 0.5}}) + "\n")
    chunks = list(iter_jsonl_chunks(p, chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    whole = SparseBatch.concat(chunks)
    assert len(whole.vocab) == 11 and whole.ids == [str(i) for i in range(10)]
    # release: the same batch, each chunk dropped from the list once copied
    released = SparseBatch.concat(list(chunks), release=True)
    kept = list(chunks)
    SparseBatch.concat(kept)
    assert all(c is not None for c in kept)
    listed = list(chunks)
    SparseBatch.concat(listed, release=True)
    assert listed == [None] * 4
    assert released.to_dicts() == whole.to_dicts() and released.ids == whole.ids
    assert np.array_equal(released.indptr, whole.indptr)


def test_remap_drop_error_add():
    b = SparseBatch.from_dicts([{"a": 1.0, "b": 2.0}, {"c": 3.0}])
    target = Vocabulary(["c", "a"])
    r = b.remap(target)
    assert r.to_dicts() == [{"a": 1.0}, {"c": 3.0}]
    with pytest.raises(KeyError, match="unknown token 'b'"):
        b.remap(Vocabulary(["c", "a"]), unknown="error")
    grown = Vocabulary(["c", "a"])
    assert b.remap(grown, unknown="add").to_dicts() == b.to_dicts() and "b" in grown


def test_prune_top_k_and_threshold():
    b = SparseBatch.from_dicts([{"a": 0.125, "b": 0.5, "c": 0.25, "d": 0.75}, {"a": 0.0625}, {}])
    p = b.prune(top_k=2)
    assert p.to_dicts() == [{"b": 0.5, "d": 0.75}, {"a": 0.0625}, {}]
    assert b.prune(threshold=0.2).to_dicts() == [{"b": 0.5, "c": 0.25, "d": 0.75}, {}, {}]


def test_max_pool_rows_takes_the_termwise_maximum():
    b = SparseBatch.from_dicts([{"a": 0.5, "b": 2.0}, {"a": 1.5, "c": 0.25}, {"d": 1.0}, {"b": 3.0}])
    m = b.max_pool_rows(np.array([0, 0, 2, 0]), 3)
    m.validate()
    assert m.to_dicts() == [{"a": 1.5, "b": 3.0, "c": 0.25}, {}, {"d": 1.0}]
    assert m.vocab is b.vocab and m.ids is None
    with pytest.raises(ValueError, match="owner"):
        b.max_pool_rows(np.array([0, 3, 0, 0]), 3)
    with pytest.raises(ValueError, match="owner"):
        b.max_pool_rows(np.array([0, 0]), 3)


def test_slicing_and_fancy_indexing():
    b = SparseBatch.from_dicts([{"a": 1.0}, {"b": 2.0}, {"a": 3.0, "b": 4.0}], ids=["x", "y", "z"])
    assert b[1:3].to_dicts() == [{"b": 2.0}, {"a": 3.0, "b": 4.0}] and b[1:3].ids == ["y", "z"]
    assert b[[2, 0]].ids == ["z", "x"] and b[[2, 0]].to_dicts()[1] == {"a": 1.0}
    assert len(b[3:]) == 0


def test_invalid_csr_is_rejected():
    with pytest.raises(ValueError):
        SparseBatch(np.array([0, 2]), np.array([0], np.int32), np.array([1.0], np.float32), Vocabulary(["a"]))
    bad = SparseBatch(np.array([0, 2]), np.array([1, 0], np.int32), np.array([1.0, 1.0], np.float32),
                      Vocabulary(["a", "b"]))
    with pytest.raises(ValueError, match="strictly increasing"):
        bad.validate()
