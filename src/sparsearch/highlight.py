"""Snippets, highlight spans and latent labels for search hits (best effort, never raises).

A hit's explanation gives each matching index term its share of the score; every word of the
document is mapped back to index terms the way its index's encoder would (analyzer stems,
wordpieces, or the lowercased word), and weighs the sum of its terms' shares. The snippet is
the window of ``window`` words with the largest weight; spans are ``(start, end, weight)``
character offsets into the snippet with weights in (0, 1].
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["highlight", "highlight_hit", "leading_snippet", "label"]

_WORD = re.compile(r"\w+", re.UNICODE)


def _word_terms(encoder: Any, words: list[str]) -> list[list[str]]:
    """The index terms each word maps to (analyzer stems, wordpieces, or the lowercased word)."""
    try:
        analyzer = getattr(encoder, "analyzer", None)
        if analyzer is not None and hasattr(analyzer, "analyze_many"):
            return analyzer.analyze_many(words)
        tok = getattr(encoder, "tokenizer", None)
        if tok is not None and hasattr(tok, "tokenize"):
            return [tok.tokenize(w.lower()) + [w.lower()] for w in words]
    except Exception:  # highlighting is best effort
        pass
    return [[w.lower()] for w in words]


_CACHE_MAX = 200_000
_cache_lock = threading.Lock()
_caches: dict[int, tuple[Any, dict[str, tuple[str, ...]]]] = {}


def _term_cache(encoder: Any) -> dict[str, tuple[str, ...]]:
    key = id(encoder)
    with _cache_lock:
        entry = _caches.get(key)
        if entry is None or entry[0] is not encoder:
            if len(_caches) > 64:
                _caches.clear()
            entry = _caches[key] = (encoder, {})
    return entry[1]


def _weights(lows: list[str], encoders: Sequence[Any], term_weight: Sequence[dict[str, float]]) -> np.ndarray:
    """Matched weight of every (lowercased) word: the sum of the weights of the terms it maps to."""
    w = np.zeros(len(lows))
    if not lows:
        return w
    uniq = list(dict.fromkeys(lows))
    per_word = dict.fromkeys(uniq, 0.0)
    for enc, tw in zip(encoders, term_weight):
        if not tw:
            continue
        cache = _term_cache(enc)  # words repeat across documents and requests
        missing = [x for x in uniq if x not in cache]
        if missing:
            if len(cache) > _CACHE_MAX:
                cache.clear()
            for x, terms in zip(missing, _word_terms(enc, missing)):
                cache[x] = tuple(terms)
        for x in uniq:
            for t in cache.get(x, (x,)):
                v = tw.get(t)
                if v is not None:
                    per_word[x] += v
    if any(per_word.values()):
        w[:] = [per_word[x] for x in lows]
    return w


def highlight(text: str, encoders, term_weight, scale: float, window: int | None):
    """``(snippet, spans)``: a window of ``window`` words with the largest matched weight."""
    text = text[:20000]
    low = text.lower()
    lows = _WORD.findall(low) if len(low) == len(text) else [x.lower() for x in _WORD.findall(text)]
    w = _weights(lows, encoders, term_weight)
    n = len(lows)
    first, last = 0, n
    if window is not None and n > window:
        cs = np.concatenate([[0.0], np.cumsum(w)])
        sums = cs[window:] - cs[:n - window + 1]
        best = np.flatnonzero(sums >= sums.max() - 1e-12)  # of the best windows, the middle one centres the matches
        first = int(best[len(best) // 2]) if sums.max() > 0 else 0
        last = first + window
    a, b, spans_abs = 0, len(text), []
    hit = np.flatnonzero(w[first:last] > 0) + first
    need = set(hit.tolist()) | {first, last - 1}
    for i, m in enumerate(_WORD.finditer(text)):
        if i >= last:
            break
        if i in need:
            if i == first and first > 0:
                a = m.start()
            if i == last - 1 and last < n:
                b = m.end()
            if w[i] > 0:
                spans_abs.append((m.start(), m.end(), round(float(min(w[i] / scale, 1.0)), 4)))
    prefix = "… " if a > 0 else ""
    snippet = prefix + text[a:b] + (" …" if b < len(text) else "")
    off = len(prefix) - a
    return snippet, [(s + off, e + off, x) for s, e, x in spans_abs if s >= a and e <= b]


def leading_snippet(text: str, window: int | None) -> str:
    """The snippet :func:`highlight` gives when no word matches: the first ``window`` words (and
    what lies between them) with `` …`` when more follow. Only those words are read, not the
    whole text, so that a hit without explanation costs a few microseconds."""
    text = text[:20000]
    if window is None or window < 1:
        return text
    m = _first_words(window).match(text)  # one match in C: a loop over the words took ~20 us a hit
    if m is None or _WORD.search(text, m.end()) is None:  # at most `window` words: all of it
        return text
    return text[:m.end()] + " …"  # more words follow: cut after the window's last one


@functools.lru_cache(maxsize=16)
def _first_words(n: int) -> re.Pattern:
    """The text up to the end of its ``n``-th word, for ``match``: anchored, and possessive (a
    word or a gap is taken whole and never given back, so no word is split to make up the count,
    and a text of fewer words fails at once)."""
    return re.compile(r"\W*+\w++(?:\W++\w++){%d}" % (n - 1), re.UNICODE)


def label(encoder: Any, term: str) -> str | None:
    labels = getattr(encoder, "labels", None)
    if labels is None:
        return None
    try:
        return labels.label(term)
    except Exception:
        return None


def term_shares(explanations: Sequence[Sequence[Any]]) -> tuple[list[dict[str, float]], float]:
    """Per explained index, each term's share of the hit's score (``.term``/``.contribution`` of
    the contributions), and the scale that maps the largest summed share to 1."""
    shares: list[dict[str, float]] = []
    for contributions in explanations:
        tw: dict[str, float] = {}
        for c in contributions:
            tw[c.term] = tw.get(c.term, 0.0) + c.contribution
        tot = sum(tw.values()) or 1.0
        shares.append({t: v / tot for t, v in tw.items()})
    return shares, sum(max(t.values()) for t in shares if t) or 1.0


def highlight_hit(doc: Mapping[str, str], encoders: Sequence[Any], explanations: Sequence[Sequence[Any]] | None,
                  window: int) -> tuple[str, list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """``(snippet, spans in the snippet, spans in the title)`` of a stored document ``{"title", "text"}``;
    ``explanations`` (one list of contributions per encoder) weigh the words; without them the
    snippet is the document's start and nothing is highlighted."""
    if explanations is None:
        return leading_snippet(doc["text"], window), [], []
    shares, scale = term_shares(explanations)
    snippet, spans = highlight(doc["text"], encoders, shares, scale, window)
    return snippet, spans, highlight(doc["title"], encoders, shares, scale, None)[1]
