"""Text analyzers: text -> list of terms.

* :class:`WordAnalyzer`: Unicode word tokens, lowercased, English stopwords removed, stemmed
  with PyStemmer (Snowball ``english`` or the classic ``porter``), as Lucene/Anserini's
  English analyzer does for BM25 baselines.
* :class:`WordPieceAnalyzer`: a Hugging Face tokenizer's wordpieces (the vocabulary that
  learned sparse models such as SPLADE live in).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import Stemmer

__all__ = ["Analyzer", "WordAnalyzer", "WordPieceAnalyzer", "ENGLISH_STOPWORDS", "get_analyzer"]

# Lucene's classic English stop set (the one Anserini's BM25 baselines use).
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Analyzer:
    """Base analyzer: ``analyze(text) -> list[str]`` and a JSON ``config()``."""

    def analyze(self, text: str) -> list[str]:
        raise NotImplementedError

    def analyze_many(self, texts: Sequence[str], progress: bool | None = None) -> list[list[str]]:
        """Analyze every text; a progress bar shows for large inputs (> 20,000) or on request."""
        if progress or (progress is None and len(texts) > 20_000):
            from tqdm.auto import tqdm

            return [self.analyze(t) for t in tqdm(texts, desc="analyze", unit="doc", mininterval=1.0)]
        return [self.analyze(t) for t in texts]

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class WordAnalyzer(Analyzer):
    """Lowercase word tokenizer with stopwords and stemming.

    Args:
        stemmer: PyStemmer algorithm (``"porter"``, ``"english"``, ...) or ``None`` for none.
        stopwords: ``"english"`` (Lucene's list), ``None``, or an explicit list of words.
        lowercase: fold case before stopping and stemming.
        min_length: drop tokens shorter than this many characters.
    """

    def __init__(
        self,
        stemmer: str | None = "english",
        stopwords: str | Sequence[str] | None = "english",
        lowercase: bool = True,
        min_length: int = 1,
    ) -> None:
        self.stemmer_name = stemmer
        if stopwords == "english":
            self.stopwords: frozenset[str] = ENGLISH_STOPWORDS
        elif stopwords is None:
            self.stopwords = frozenset()
        elif isinstance(stopwords, str):
            raise ValueError(f"unknown stopword list {stopwords!r} (use 'english', None or a list of words)")
        else:
            self.stopwords = frozenset(stopwords)
        self._stopwords_spec = stopwords if isinstance(stopwords, str) or stopwords is None else sorted(self.stopwords)
        self.lowercase = lowercase
        self.min_length = min_length
        if stemmer is not None and stemmer not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer {stemmer!r}; PyStemmer offers {', '.join(Stemmer.algorithms())}")
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        # Stems repeat heavily across a corpus; PyStemmer keeps an internal cache too, but
        # skipping the call entirely for known words is what makes analysis cheap.
        self._memo: dict[str, str] = {}

    def tokens(self, text: str) -> list[str]:
        """Unstemmed tokens (after case folding, stopwords and length filter)."""
        if self.lowercase:
            text = text.lower()
        sw, m = self.stopwords, self.min_length
        return [t for t in _TOKEN.findall(text) if len(t) >= m and t not in sw]

    def analyze(self, text: str) -> list[str]:
        toks = self.tokens(text)
        if self._stemmer is None:
            return toks
        memo = self._memo
        missing = [t for t in set(toks) if t not in memo]
        if missing:
            for t, s in zip(missing, self._stemmer.stemWords(missing)):
                memo[t] = s
            if len(memo) > 2_000_000:  # bound memory on huge vocabularies
                memo.clear()
                return self._stemmer.stemWords(toks)
        return [memo[t] for t in toks]

    def config(self) -> dict[str, Any]:
        return {"type": "word", "stemmer": self.stemmer_name, "stopwords": self._stopwords_spec,
                "lowercase": self.lowercase, "min_length": self.min_length}


class WordPieceAnalyzer(Analyzer):
    """A Hugging Face tokenizer's tokens (special tokens excluded).

    Args:
        tokenizer: a local path or hub id understood by ``tokenizers.Tokenizer`` /
            ``transformers.AutoTokenizer``.
        max_length: truncate to this many tokens (``None``: no truncation).
    """

    def __init__(self, tokenizer: str, max_length: int | None = None) -> None:
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self._tok = _load_fast_tokenizer(tokenizer)

    @property
    def vocabulary(self) -> list[str]:
        """Tokens in id order."""
        vocab = self._tok.get_vocab()
        out = [""] * len(vocab)
        for t, i in vocab.items():
            out[i] = t
        return out

    def token_ids(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ids[: self.max_length] if self.max_length else ids

    def analyze(self, text: str) -> list[str]:
        enc = self._tok.encode(text, add_special_tokens=False)
        toks = enc.tokens
        return toks[: self.max_length] if self.max_length else toks

    def config(self) -> dict[str, Any]:
        return {"type": "wordpiece", "tokenizer": self.tokenizer_name, "max_length": self.max_length}


@lru_cache(maxsize=8)
def _load_fast_tokenizer(name: str):
    """A ``tokenizers.Tokenizer`` from a folder with tokenizer.json, else via transformers."""
    from pathlib import Path

    p = Path(name)
    if (p / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(p / "tokenizer.json"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, use_fast=True).backend_tokenizer


def get_analyzer(config: dict[str, Any]) -> Analyzer:
    """Rebuild an analyzer from its ``config()``."""
    cfg = dict(config)
    kind = cfg.pop("type", "word")
    if kind == "word":
        return WordAnalyzer(**cfg)
    if kind == "wordpiece":
        return WordPieceAnalyzer(**cfg)
    raise ValueError(f"unknown analyzer type {kind!r}")
