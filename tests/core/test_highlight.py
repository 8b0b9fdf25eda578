"""Snippets without explanation (issue 19: a hit's snippet must not cost a pass over its whole
text): ``leading_snippet`` equals what ``highlight`` gives when no word is weighted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsearch.highlight import highlight, highlight_hit, leading_snippet

WORDS = ["alpha", "beta", "Ünïcode", "naïve", "x", "42", "a_b", "日本語", "—", "...", " ", "\n", "it's", "e.g."]


def _text(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(["", " ", ", ", ". ", "  "]) for _ in range(n))


@pytest.mark.parametrize("n_words", [0, 1, 5, 29, 30, 31, 200, 5000])
@pytest.mark.parametrize("window", [1, 3, 30])
def test_leading_snippet_equals_highlight_without_weights(n_words, window):
    rng = np.random.default_rng(n_words * 31 + window)
    for _ in range(5):
        text = _text(rng, n_words)
        assert leading_snippet(text, window) == highlight(text, [], [], 1.0, window)[0]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(1, 40))
def test_leading_snippet_equals_highlight_on_any_text(text, window):
    assert leading_snippet(text, window) == highlight(text, [], [], 1.0, window)[0]


def test_long_texts_are_cut_as_before():
    text = "word " * 10_000  # 50,000 characters: highlight reads the first 20,000
    assert leading_snippet(text, 30) == highlight(text, [], [], 1.0, 30)[0]
    assert leading_snippet(text, 30).endswith(" …") and leading_snippet(text, 30).count("word") == 30
    assert leading_snippet(text, 5000) == highlight(text, [], [], 1.0, 5000)[0] == text[:20000]


def test_highlight_hit_without_explanation_uses_the_leading_words():
    doc = {"title": "T", "text": "one two three four five six"}
    assert highlight_hit(doc, [], None, 3) == ("one two three …", [], [])
    assert highlight_hit(doc, [], None, 10) == ("one two three four five six", [], [])
