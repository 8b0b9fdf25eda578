"""Text analyzers: text -> list of terms.

* :class:`WordAnalyzer`: Unicode word tokens, lowercased, stopwords removed (a named list:
  ``lucene``, Lucene's classic 33 words, ``english``, a fuller list of English function words,
  or ``none``; or your own file or list), stemmed with PyStemmer (Snowball ``english``, the
  classic ``porter``, any other PyStemmer algorithm, or ``none``), as Lucene/Anserini's English
  analyzer does for BM25 baselines. The defaults (:data:`DEFAULT_STOPWORDS`,
  :data:`DEFAULT_STEMMER`) were chosen on train/dev judgements (``benchmarks/bm25_analyzer.py``).
* :class:`WordPieceAnalyzer`: a Hugging Face tokenizer's wordpieces (the vocabulary that
  learned sparse models such as SPLADE live in).

A word analyzer's ``language`` (issue 17) is ``english`` (the default), another Snowball language of
PyStemmer (:func:`language_names`: its stemmer by default, and the language's stopword list from the
``stop-words`` package, BSD-3-Clause, where it has one, else no stopwords; see below), or ``cjk``: Chinese,
Japanese and Korean text as overlapping character bigrams (Lucene's CJKAnalyzer/CJKBigramFilter:
a run of Han, Hiragana, Katakana or Hangul characters gives its bigrams, a lone character itself),
other words in the same text as words. Non-English languages normalise text to NFC (``cjk``: NFKC,
which also folds full-width Latin and half-width Katakana, as Lucene's CJKWidthFilter) and keep
combining marks inside words (Devanagari vowel signs, decomposed accents), so the Snowball
stemmers see whole words; English analysis is unchanged.

Stopword lists of other languages (:data:`STOPWORDS_PACKAGE_LANGUAGES`) come from the ``stop-words``
package (BSD-3-Clause), read offline from its installed ``stop_words/stop-words/<language>.txt``; its
file names (the values of its ``languages.json``) are PyStemmer's language names. Each is the
default of its language and can be named, ``stopwords="french"``; ``"english"`` stays sparsearch's
own list (and English's default stays it), not the package's. Lists exist for arabic, catalan,
czech, danish, dutch, finnish, french, german, greek, hindi, hungarian, indonesian, italian,
norwegian, persian, polish, portuguese, romanian, russian, spanish, swedish and turkish; armenian,
basque, esperanto, estonian, irish, lithuanian, nepali, serbian, sesotho, tamil and yiddish (and
``cjk``) have none and keep no stopwords unless given a file. An entry of the package's lists is
NFC-normalised and lowercased, as the tokenizer's tokens are, and loses trailing apostrophes, dots
and quotes (elisions such as French ``l'`` and ``qu'`` match the tokens ``l`` and ``qu`` that
``l'homme`` and ``qu'il`` split into; abbreviations such as ``c.``); entries that are then not one
token (Persian and Romanian phrases, Spanish ``por qué``, stray mojibake) are left out, as their
parts alone may be content words. ``config()`` records such a list's words themselves (sorted), so
an index analyzes queries the same way whatever later versions of the package hold.

A word analyzer's ``config()`` carries ``"version": 2`` (``3`` with a ``"language"`` other than
English; configs without a language are English). Configs without a version were written when the
only named stopword list was Lucene's and was called ``"english"``: :func:`get_analyzer` reads
their ``"english"`` as ``"lucene"`` (and their missing settings as that time's defaults), so
indexes built then analyze queries exactly as before. Version-3 configs written before the
package lists record ``"stopwords": "none"`` and keep meaning no stopwords; one without a
``"stopwords"`` key is read as ``"none"`` too (that time's default for a non-English language).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import Stemmer

from .errors import InvalidInputError

__all__ = ["Analyzer", "WordAnalyzer", "WordPieceAnalyzer", "LUCENE_STOPWORDS", "ENGLISH_STOPWORDS",
           "STOPWORD_LISTS", "STOPWORDS_PACKAGE_LANGUAGES", "DEFAULT_STOPWORDS", "DEFAULT_STEMMER",
           "stemmer_names", "language_names", "stopword_list_names", "package_stopwords", "get_analyzer"]

# Lucene's classic English stop set (EnglishAnalyzer; Anserini's BM25 baselines and bm25s's "en").
LUCENE_STOPWORDS: frozenset[str] = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

# English function words, grouped by part of speech. Left out on purpose: single letters other
# than "a" ("vitamin d", "t cells", "type i" are content in technical text), "i" and "us" (roman
# numeral, country), and quantity/comparison words that carry meaning in claims ("less", "fewer",
# "increase"). Stopwords are matched on lowercased, unstemmed \w+ tokens, so the fragments that
# contractions split into ("doesn't" -> "doesn" "t") are listed without the apostrophe.
_ENGLISH_FUNCTION_WORDS = {
    "pronouns": "me my mine myself we our ours ourselves you your yours yourself yourselves he him his "
                "himself she her hers herself it its itself they them their theirs themselves one oneself "
                "who whom whose which what whatever whoever whomever whichever anyone anybody anything "
                "someone somebody something everyone everybody everything nobody nothing",
    "determiners": "a an the this that these those each every either neither some any no none all both "
                   "few many much more most other others another such same several own",
    "prepositions": "about above across after against along alongside amid among amongst around at before "
                    "behind below beneath beside besides between beyond by despite down during except for "
                    "from in inside into near of off on onto out outside over past per since than through "
                    "throughout till to toward towards under underneath unlike until up upon via with within "
                    "without",
    "conjunctions": "and but or nor so yet because although though while whilst whereas whether if unless "
                    "as once whenever wherever lest",
    "auxiliaries": "am is are was were be been being have has having had do does did doing will would "
                   "shall should can could may might must ought",
    "contractions": "aren isn wasn weren hasn haven hadn don doesn didn wouldn shouldn couldn mustn "
                    "ll re ve",
    "adverbs": "also just only very quite rather too often always never sometimes usually already still "
               "even again ever here there where when why how then now thus hence therefore however "
               "moreover furthermore nevertheless nonetheless otherwise instead indeed perhaps almost "
               "enough else not hereby thereby whereby wherein therein herein thereof whereof "
               "accordingly meanwhile",
    "other": "etc ie eg vs",
}
ENGLISH_STOPWORDS: frozenset[str] = frozenset(w for words in _ENGLISH_FUNCTION_WORDS.values() for w in words.split())

STOPWORD_LISTS: dict[str, frozenset[str]] = {"lucene": LUCENE_STOPWORDS, "english": ENGLISH_STOPWORDS,
                                             "none": frozenset()}
# Snowball languages whose stopword list comes from the stop-words package (BSD-3-Clause); "english"
# is left out on purpose: that name is sparsearch's own list. See the module docstring.
STOPWORDS_PACKAGE_LANGUAGES: tuple[str, ...] = (
    "arabic", "catalan", "czech", "danish", "dutch", "finnish", "french", "german", "greek", "hindi",
    "hungarian", "indonesian", "italian", "norwegian", "persian", "polish", "portuguese", "romanian",
    "russian", "spanish", "swedish", "turkish")
_STOPWORDS_PACKAGE = "stop-words>=2025.11.4"
DEFAULT_STOPWORDS = "english"
DEFAULT_STEMMER = "porter"
_CONFIG_VERSION = 3  # written only for a non-English language; English configs stay version 2
_LEGACY_DEFAULTS = {"stemmer": "english", "stopwords": "lucene"}  # what a version-1 config left out meant
_FROM_LANGUAGE: Any = object()  # "the language's default" for stemmer and stopwords

_TOKEN = re.compile(r"\w+", re.UNICODE)
# Han (radicals, ideographs, iteration marks), Hiragana, Katakana (without the middle dot), Hangul.
_CJK = ("\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3041-\u3096\u3099\u309a\u309d-\u309f"
        "\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
        "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff\U00020000-\U0003134f")
_NOT_LANGUAGES = ("porter", "dutch_porter")  # PyStemmer algorithms that are variants, not languages


def language_names() -> list[str]:
    """Accepted languages: ``cjk`` and PyStemmer's Snowball languages (``english``, ``french``, ...)."""
    return ["cjk", *(a for a in Stemmer.algorithms() if a not in _NOT_LANGUAGES)]


@lru_cache(maxsize=1)
def _word_patterns() -> tuple[re.Pattern, re.Pattern]:
    """(word pattern, CJK-aware pattern) for non-English languages: ``\\w`` plus the combining marks
    (Unicode category M) of the Basic Multilingual Plane that ``\\w`` leaves out."""
    marks = "".join(chr(c) for c in range(0x300, 0x10000)
                    if unicodedata.category(chr(c))[0] == "M" and not _TOKEN.match(chr(c)))
    marks = re.escape(marks)
    word = re.compile(f"[\\w{marks}]+")
    cjk = re.compile(f"([{_CJK}]+)|(?:(?![{_CJK}])[\\w{marks}])+")
    return word, cjk


def _cjk_tokens(text: str) -> list[str]:
    """Words, and overlapping bigrams of each CJK run (a run of one character: itself)."""
    out: list[str] = []
    for m in _word_patterns()[1].finditer(text):
        run = m.group(1)
        if run is None:
            out.append(m.group(0))
        elif len(run) == 1:
            out.append(run)
        else:
            out.extend(run[i:i + 2] for i in range(len(run) - 1))
    return out


def stemmer_names() -> list[str]:
    """Accepted stemmer names: ``none`` and PyStemmer's algorithms (``english``, ``porter``, ...)."""
    return ["none", *Stemmer.algorithms()]


def stopword_list_names() -> list[str]:
    """Accepted stopword list names: ``lucene``, ``english``, ``none`` and the languages of
    :data:`STOPWORDS_PACKAGE_LANGUAGES` (``french``, ``german``, ...)."""
    return [*STOPWORD_LISTS, *STOPWORDS_PACKAGE_LANGUAGES]


_ENTRY_END = "'\u2019\".\u200e\u200f\ufeff"  # trailing elision apostrophes, dots, quotes, marks


@lru_cache(maxsize=None)
def package_stopwords(language: str) -> frozenset[str]:
    """The stop-words package's list for ``language`` (one of :data:`STOPWORDS_PACKAGE_LANGUAGES`),
    read from its installed files, as the analyzer matches it (see the module docstring)."""
    if language not in STOPWORDS_PACKAGE_LANGUAGES:
        raise InvalidInputError(f"no stop-words list named {language!r}; use one of "
                                f"{', '.join(STOPWORDS_PACKAGE_LANGUAGES)}")
    try:
        text = resources.files("stop_words").joinpath("stop-words", f"{language}.txt").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise InvalidInputError(f"stopwords {language!r} come from the stop-words package, which is not "
                                f"installed (pip install '{_STOPWORDS_PACKAGE}')") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"stopwords {language!r}: the installed stop-words package has no readable "
                                f"list for it ({type(e).__name__}); reinstall '{_STOPWORDS_PACKAGE}'") from None
    word = _word_patterns()[0]
    words = set()
    for line in text.splitlines():
        entry = unicodedata.normalize("NFC", line.strip().strip(_ENTRY_END)).lower()
        if word.fullmatch(entry):
            words.add(entry)
    return frozenset(words)


def _read_stopword_file(path: Path) -> list[str]:
    """One word per line; blank lines and ``#`` comments skipped; errors name the file (and line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        if str(path) in language_names():  # a language without a list, not a typo
            raise InvalidInputError(f"stopwords {str(path)!r}: no stopword list for this language (lists: "
                                    f"{', '.join(stopword_list_names())}) and no readable file of that name "
                                    f"({why})") from None
        raise InvalidInputError(f"stopwords {str(path)!r}: neither a list name "
                                f"({', '.join(stopword_list_names())}) nor a readable file of one word per "
                                f"line ({why})") from None
    words = []
    for n, line in enumerate(lines, 1):
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if len(word.split()) > 1:
            raise InvalidInputError(f"stopword file {str(path)!r} line {n}: {word!r} is not one word")
        words.append(word)
    return words


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
        stemmer: a PyStemmer algorithm (``"english"``: Snowball/porter2, ``"porter"``: the
            classic Porter stemmer, or any of :func:`stemmer_names`), or ``"none"`` / ``None``.
        stopwords: a list name (``"lucene"``, ``"english"``, ``"none"``; see
            :data:`STOPWORD_LISTS`; or a language of :data:`STOPWORDS_PACKAGE_LANGUAGES`,
            ``"french"``, the stop-words package's list, whose words ``config()`` records),
            ``None`` (none), the path of a file with one word per line
            (blank lines and ``#`` comments skipped), or a sequence of words. Words from a file or
            a sequence are lowercased when ``lowercase`` is set, and recorded in ``config()``
            themselves, so an index does not depend on the file afterwards.
        lowercase: fold case before stopping and stemming.
        min_length: drop tokens shorter than this many characters.
        language: ``"english"``, another of :func:`language_names` or ``"cjk"`` (see the module
            docstring). It sets the defaults of ``stemmer`` (English: :data:`DEFAULT_STEMMER`;
            another Snowball language: its own; ``cjk``: none) and ``stopwords`` (English:
            :data:`DEFAULT_STOPWORDS`; a language of :data:`STOPWORDS_PACKAGE_LANGUAGES`: its
            list; others: none), and the tokenization.

    Unknown stemmers and languages and unreadable stopword files raise
    :class:`~sparsearch.errors.InvalidInputError`.
    """

    def __init__(
        self,
        stemmer: str | None = _FROM_LANGUAGE,
        stopwords: str | os.PathLike | Sequence[str] | None = _FROM_LANGUAGE,
        lowercase: bool = True,
        min_length: int = 1,
        language: str = "english",
    ) -> None:
        if not isinstance(language, str) or language not in language_names():
            raise InvalidInputError(f"unknown language {language!r}; use one of {', '.join(language_names())}")
        self.language = language
        if stemmer is _FROM_LANGUAGE:
            stemmer = DEFAULT_STEMMER if language == "english" else None if language == "cjk" else language
        if stopwords is _FROM_LANGUAGE:
            stopwords = (DEFAULT_STOPWORDS if language == "english" else
                         language if language in STOPWORDS_PACKAGE_LANGUAGES else "none")
        self.lowercase = lowercase
        self.min_length = min_length
        self.stopwords, self._stopwords_spec = self._resolve_stopwords(stopwords)
        if stemmer is None or stemmer == "none":
            stemmer = None
        elif stemmer not in Stemmer.algorithms():
            raise InvalidInputError(f"unknown stemmer {stemmer!r}; use one of {', '.join(stemmer_names())}")
        self.stemmer_name = stemmer
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        # Stems repeat heavily across a corpus; PyStemmer keeps an internal cache too, but
        # skipping the call entirely for known words is what makes analysis cheap.
        self._memo: dict[str, str] = {}

    def _resolve_stopwords(self, spec: Any) -> tuple[frozenset[str], str | list[str]]:
        """(the stop set, what ``config()`` records: a list name or the words themselves)."""
        if spec is None:
            return frozenset(), "none"
        if isinstance(spec, str) and spec in STOPWORD_LISTS:
            return STOPWORD_LISTS[spec], spec
        if isinstance(spec, str) and spec in STOPWORDS_PACKAGE_LANGUAGES:
            stop = package_stopwords(spec)  # recorded as its words: the package's lists may change
            return stop, sorted(stop)
        if isinstance(spec, (str, os.PathLike)):
            words = _read_stopword_file(Path(spec))
        elif isinstance(spec, Sequence) and all(isinstance(w, str) for w in spec):
            words = list(spec)
        else:
            raise InvalidInputError(f"stopwords must be a list name ({', '.join(stopword_list_names())}), "
                                    f"a file path or a list of words, got {type(spec).__name__}")
        stop = frozenset(w.lower() if self.lowercase else w for w in words)
        return stop, sorted(stop)

    def tokens(self, text: str) -> list[str]:
        """Unstemmed tokens (after case folding, stopwords and length filter)."""
        if self.language == "english":
            toks = _TOKEN.findall(text.lower() if self.lowercase else text)
        else:
            text = unicodedata.normalize("NFKC" if self.language == "cjk" else "NFC", text)
            if self.lowercase:
                text = text.lower()
            toks = _cjk_tokens(text) if self.language == "cjk" else _word_patterns()[0].findall(text)
        sw, m = self.stopwords, self.min_length
        return [t for t in toks if len(t) >= m and t not in sw]

    def analyze(self, text: str) -> list[str]:
        toks = self.tokens(text)
        if self._stemmer is None:
            return toks
        memo = self._memo
        missing = [t for t in set(toks) if t not in memo]
        if missing:
            # a token the stemmer reduces to nothing (Porter: "s") stays itself: no empty terms
            for t, s in zip(missing, self._stemmer.stemWords(missing)):
                memo[t] = s or t
            if len(memo) > 2_000_000:  # bound memory on huge vocabularies
                memo.clear()
                return [s or t for t, s in zip(toks, self._stemmer.stemWords(toks))]
        return [memo[t] for t in toks]

    def config(self) -> dict[str, Any]:
        """English configs stay version 2 (readable by releases before languages); others are
        version 3 and record their ``language``."""
        cfg = {"type": "word", "version": 2, "stemmer": self.stemmer_name or "none",
               "stopwords": self._stopwords_spec, "lowercase": self.lowercase, "min_length": self.min_length}
        if self.language != "english":
            cfg.update(version=_CONFIG_VERSION, language=self.language)
        return cfg


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
    """Rebuild an analyzer from its ``config()``; word-analyzer configs older than version 2
    (no ``"version"`` key) read ``stopwords: "english"`` as Lucene's list, configs without a
    ``"language"`` are English, and a non-English version-3 config without ``"stopwords"`` has
    none (see module docstring)."""
    cfg = dict(config)
    kind = cfg.pop("type", "word")
    if kind == "word":
        version = cfg.pop("version", 1)
        if not isinstance(version, int) or not 1 <= version <= _CONFIG_VERSION:
            raise InvalidInputError(f"word analyzer config version {version!r} is not one this sparsearch "
                                    f"reads (1 to {_CONFIG_VERSION})")
        if version == 1:
            cfg = {**_LEGACY_DEFAULTS, **cfg}
            if cfg["stopwords"] == "english":
                cfg["stopwords"] = "lucene"
        elif version == 3 and cfg.get("language", "english") != "english":
            cfg.setdefault("stopwords", "none")  # other languages had no default list before stop-words
        return WordAnalyzer(**cfg)
    if kind == "wordpiece":
        return WordPieceAnalyzer(**cfg)
    raise InvalidInputError(f"unknown analyzer type {kind!r}")
