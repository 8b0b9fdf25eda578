"""Filter expressions over document metadata, indexed terms and latent concepts.

A filter restricts a search to the documents it selects; it compiles to a boolean mask over
the index's doc numbers, which search hands to the kernels as "skip these documents" next to
the deletions (exact search stays rank-safe: see ``Index.search``). Grammar (keywords are
case-insensitive; ``field`` is a metadata field name, or any name in backquotes)::

    expr       := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | test
    test       := field OP literal                     year >= 2015, source != "pmc"
                | literal OP field [OP literal]        2010 <= year < 2015
                | field ["not"] "in" "[" literal ("," literal)* "]"
                | "exists" "(" field ")"
                | "has" "(" STRING ")"                 the document holds this indexed term
                | "latent" "(" INTEGER ")" [OP NUMBER] latent j of a sparse-coding index (default: > 0)
                | "concept" "(" STRING ")" [OP NUMBER] any latent whose label (first 3 words) holds the word
                | "true" | "false"
    OP         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    literal    := STRING ("..." or '...') | NUMBER | yyyy-mm-dd | "true" | "false"

Semantics: a comparison is false where the field is missing (``exists(f)`` tests presence); a
multi-valued keyword field matches when any of its values does; ``f != v`` and ``f not in
[...]`` mean ``exists(f) and not (f = v)`` (none of its values is ``v``); ``not`` is the plain
complement (it selects documents missing the field too). Keywords compare as strings (ranges
lexicographic), dates as dates (``date >= 2015-01-01`` or ``"2015-01-01"``), booleans with
``=`` / ``!=`` only. An unknown field, or a literal of the wrong type, is an
:class:`~sparsearch.errors.InvalidInputError`; a syntax error names its column.

>>> expr = parse('year >= 2015 and source in ["pubmed", "pmc"]')
>>> mask = compile_filter(index, expr)            # doctest: +SKIP  (n_docs,) bool
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .errors import InvalidInputError, UnsupportedError
from .metadata import Column, parse_date

__all__ = ["parse", "compile_filter", "describe", "to_milvus", "MAX_FILTER_CHARS", "Cmp", "In", "Exists", "Has", "Latent",
           "Concept", "And", "Or", "Not", "Const", "Node"]

#: the longest filter expression accepted (a bound on parsing work)
MAX_FILTER_CHARS = 4096
#: a latent answers concept("w") when w is one of its label's first words (its label shows as many)
CONCEPT_WORDS = 3
#: nesting bound (parentheses / not), so that parsing never recurses deeply
MAX_DEPTH = 64


# ----------------------------------------------------------------------------- syntax tree
@dataclass(frozen=True)
class Cmp:
    field: str
    op: str
    value: Any
    col: int


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Any, ...]
    negate: bool
    col: int


@dataclass(frozen=True)
class Exists:
    field: str
    col: int


@dataclass(frozen=True)
class Has:
    term: str
    col: int


@dataclass(frozen=True)
class Latent:
    latent: int
    op: str
    threshold: float
    col: int


@dataclass(frozen=True)
class Concept:
    label: str
    op: str
    threshold: float
    col: int


@dataclass(frozen=True)
class And:
    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    part: "Node"


@dataclass(frozen=True)
class Const:
    value: bool


Node = Union[Cmp, In, Exists, Has, Latent, Concept, And, Or, Not, Const]


@dataclass(frozen=True)
class _Date:
    """A date literal (days since 1970-01-01) and how it was written."""

    days: int
    text: str


# ----------------------------------------------------------------------------- tokens
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w.]))
  | (?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<bq>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<punct>[()\[\],])
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}
_FUNCS = {"exists", "has", "latent", "concept"}
_ESC = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # date num str field kw op punct end
    text: str
    value: Any
    col: int  # 1-based


def _error(expr: str, col: int, problem: str) -> InvalidInputError:
    return InvalidInputError(f"filter {expr!r}, column {col}: {problem}")


def _unescape(body: str, expr: str, col: int) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESC:
                raise _error(expr, col + i, f"unknown escape \\{nxt} in a string")
            out.append(_ESC[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokens(expr: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            c = expr[pos]
            hint = " (strings need quotes)" if c not in "\"'`" else " (unterminated string)"
            raise _error(expr, pos + 1, f"unexpected character {c!r}{hint}")
        kind, text, col = m.lastgroup, m.group(), pos + 1
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "date":
            days = parse_date(text)
            if days is None:
                raise _error(expr, col, f"{text} is not a valid date")
            out.append(_Tok("date", text, _Date(days, text), col))
        elif kind == "num":
            v: Any = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
            if isinstance(v, float) and not math.isfinite(v):
                raise _error(expr, col, f"{text} is not a finite number")
            out.append(_Tok("num", text, v, col))
        elif kind == "str":
            out.append(_Tok("str", text, _unescape(text[1:-1], expr, col + 1), col))
        elif kind == "bq":
            out.append(_Tok("field", text, text[1:-1], col))
        elif kind == "name":
            low = text.lower()
            if low in _KEYWORDS:
                out.append(_Tok("kw", text, low, col))
            elif low in _FUNCS and pos < len(expr) and expr[pos:].lstrip().startswith("("):
                out.append(_Tok("func", text, low, col))
            else:
                out.append(_Tok("field", text, text, col))
        else:
            out.append(_Tok(kind, text, text, col))
    out.append(_Tok("end", "", None, len(expr) + 1))
    return out


# ----------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, t: _Tok, problem: str) -> InvalidInputError:
        got = "the end of the filter" if t.kind == "end" else repr(t.text)
        return _error(self.expr, t.col, f"{problem}, got {got}")

    def expect(self, kind: str, text: str | None = None, what: str = "") -> _Tok:
        t = self.next()
        if t.kind != kind or (text is not None and t.value != text):
            raise self.fail(t, f"expected {what or text or kind}")
        return t

    def is_kw(self, word: str) -> bool:
        t = self.peek()
        return t.kind == "kw" and t.value == word

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _error(self.expr, 1, "empty filter")
        node = self.or_()
        t = self.peek()
        if t.kind != "end":
            raise self.fail(t, "expected 'and', 'or' or the end of the filter")
        return node

    def chain(self, word: str, operand: Callable[[], Node], cls: type) -> Node:
        """``operand (word operand)*``: one operand, or ``cls`` of all of them."""
        parts = [operand()]
        while self.is_kw(word):
            self.next()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else cls(tuple(parts))

    def or_(self) -> Node:
        return self.chain("or", self.and_, Or)

    def and_(self) -> Node:
        return self.chain("and", self.unary, And)

    def unary(self) -> Node:
        t = self.peek()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(self.expr, t.col, f"nested more than {MAX_DEPTH} levels deep")
        try:
            if t.kind == "kw" and t.value == "not":
                self.next()
                return Not(self.unary())
            if t.kind == "punct" and t.value == "(":
                self.next()
                node = self.or_()
                self.expect("punct", ")", "')'")
                return node
            return self.test()
        finally:
            self.depth -= 1

    def literal(self, what: str = "a value (a quoted string, a number, a yyyy-mm-dd date, true or false)") -> Any:
        t = self.next()
        if t.kind in ("str", "num", "date"):
            return t.value
        if t.kind == "kw" and t.value in ("true", "false"):
            return t.value == "true"
        if t.kind == "field":
            raise _error(self.expr, t.col, f"expected {what}, got the name {t.text!r} (quote strings: \"{t.text}\")")
        raise self.fail(t, f"expected {what}")

    def op(self) -> str:
        t = self.next()
        if t.kind != "op":
            raise self.fail(t, "expected a comparison (=, !=, <, <=, >, >=) or 'in'")
        return "=" if t.value == "==" else t.value

    def test(self) -> Node:
        t = self.peek()
        if t.kind == "func":
            return self.func()
        if t.kind == "kw" and t.value in ("true", "false") and self.toks[self.i + 1].kind != "op":
            self.next()
            return Const(t.value == "true")
        if t.kind == "field":
            self.next()
            if self.is_kw("not") or self.is_kw("in"):
                negate = self.is_kw("not")
                if negate:
                    self.next()
                    if not self.is_kw("in"):
                        raise self.fail(self.peek(), "expected 'in' after 'not'")
                self.next()
                return In(t.value, self.values(), negate, t.col)
            op = self.op()
            return Cmp(t.value, op, self.literal(), t.col)
        if t.kind in ("str", "num", "date", "kw"):  # literal OP field [OP literal]
            lo = self.literal("a field name, a function, 'not' or '('")
            op1 = self.op()
            f = self.next()
            if f.kind != "field":
                raise self.fail(f, "expected a field name")
            first = Cmp(f.value, _FLIP[op1], lo, f.col)
            if self.peek().kind == "op":
                op2 = self.op()
                return And((first, Cmp(f.value, op2, self.literal(), f.col)))
            return first
        raise self.fail(t, "expected a field name, a function (exists, has, latent, concept), 'not' or '('")

    def values(self) -> tuple[Any, ...]:
        self.expect("punct", "[", "'[' (a list of values)")
        out = []
        if self.peek().kind == "punct" and self.peek().value == "]":
            self.next()
            return ()
        while True:
            out.append(self.literal())
            t = self.next()
            if t.kind == "punct" and t.value == "]":
                return tuple(out)
            if not (t.kind == "punct" and t.value == ","):
                raise self.fail(t, "expected ',' or ']'")
            if self.peek().kind == "punct" and self.peek().value == "]":
                self.next()
                return tuple(out)

    def func(self) -> Node:
        t = self.next()
        self.expect("punct", "(", "'('")
        name = t.value
        if name == "exists":
            f = self.next()
            if f.kind != "field":
                raise self.fail(f, "exists() takes a field name")
            node: Node = Exists(f.value, f.col)
        elif name == "has":
            s = self.next()
            if s.kind != "str":
                raise self.fail(s, "has() takes a quoted term")
            node = Has(s.value, s.col)
        else:
            a = self.next()
            if name == "latent" and not (a.kind == "num" and isinstance(a.value, int) and a.value >= 0):
                raise self.fail(a, "latent() takes a latent number (an integer >= 0)")
            if name == "concept" and a.kind != "str":
                raise self.fail(a, "concept() takes a quoted label word")
            self.expect("punct", ")", "')'")
            op, thr = ">", 0.0
            if self.peek().kind == "op":
                op = self.op()
                v = self.next()
                if v.kind != "num":
                    raise self.fail(v, f"{name}() compares with a number")
                thr = float(v.value)
            return Latent(a.value, op, thr, t.col) if name == "latent" else Concept(a.value, op, thr, t.col)
        self.expect("punct", ")", "')'")
        return node


_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@functools.lru_cache(maxsize=256)
def _parse_cached(expr: str) -> Node:
    return _Parser(expr).parse()


def parse(expr: str) -> Node:
    """The syntax tree of a filter expression; :class:`InvalidInputError` (one line, with the
    column) when it is not one. Parsed trees are cached."""
    if not isinstance(expr, str):
        raise InvalidInputError(f"a filter is a string expression, got {type(expr).__name__}")
    if len(expr) > MAX_FILTER_CHARS:
        raise InvalidInputError(f"filter of {len(expr):,} characters; at most {MAX_FILTER_CHARS:,}")
    if not expr.strip():
        raise InvalidInputError("empty filter")
    return _parse_cached(expr)


# ----------------------------------------------------------------------------- compile
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def _literal_for(typ: str, v: Any, node: Any, expr: str) -> Any:
    """A literal as the field's type compares it (days for dates)."""
    def bad(want: str) -> InvalidInputError:
        shown = v.text if isinstance(v, _Date) else repr(v)
        return _error(expr, node.col, f"field {node.field!r} is {typ}: compare it with {want}, not {shown}")

    if typ == "keyword":
        if isinstance(v, str):
            return v
        if isinstance(v, _Date):
            return v.text
        raise bad("a quoted string")
    if typ == "bool":
        if isinstance(v, bool):
            return v
        raise bad("true or false")
    if typ == "date":
        if isinstance(v, _Date):
            return v.days
        if isinstance(v, str) and parse_date(v) is not None:
            return parse_date(v)
        raise bad("a yyyy-mm-dd date")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad("a number")
    return v


def compile_filter(index: Any, node: Node | str) -> np.ndarray:
    """The documents (a bool mask over ``index``'s doc numbers, deleted ones included) that
    ``node`` selects. ``index``: an :class:`~sparsearch.index.Index` (its ``metadata`` store,
    vocabulary and segments; ``has`` / ``latent`` read posting lists, ``concept`` the labels
    saved with a sparse-coding encoder)."""
    expr = node if isinstance(node, str) else describe(node)
    tree = parse(node) if isinstance(node, str) else node
    return _Compiler(index, expr).run(tree)


class _Compiler:
    def __init__(self, index: Any, expr: str) -> None:
        self.index = index
        self.expr = expr
        self.n = int(index.n_docs)
        self._store = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self.index.metadata
        return self._store

    def field_type(self, node: Any) -> str:
        typ = self.store.field_type(node.field)
        if typ is None:
            have = ", ".join(sorted(self.store.schema)) or "none"
            raise _error(self.expr, node.col, f"unknown field {node.field!r} (the index's metadata fields: {have})")
        return typ

    def run(self, node: Node) -> np.ndarray:
        if isinstance(node, And):
            out = self.run(node.parts[0])
            for p in node.parts[1:]:
                out = out & self.run(p)
            return out
        if isinstance(node, Or):
            out = self.run(node.parts[0])
            for p in node.parts[1:]:
                out = out | self.run(p)
            return out
        if isinstance(node, Not):
            return ~self.run(node.part)
        if isinstance(node, Const):
            return np.full(self.n, node.value, np.bool_)
        if isinstance(node, Exists):
            self.field_type(node)
            return self.store.mask(node.field, Column.exists)
        if isinstance(node, Cmp):
            return self.compare(node)
        if isinstance(node, In):
            return self.member(node)
        if isinstance(node, Has):
            return self.has(node)
        if isinstance(node, Latent):
            return self.latents([node.latent], node.op, node.threshold)
        if isinstance(node, Concept):
            return self.concept(node)
        raise AssertionError(f"unknown filter node {node!r}")  # pragma: no cover

    def compare(self, node: Cmp) -> np.ndarray:
        typ = self.field_type(node)
        if typ == "bool" and node.op not in ("=", "!="):
            raise _error(self.expr, node.col, f"field {node.field!r} is bool: use = or != with true/false")
        v = _literal_for(typ, node.value, node, self.expr)
        if node.op == "!=":
            eq = self.compare(Cmp(node.field, "=", node.value, node.col))
            return self.store.mask(node.field, Column.exists) & ~eq
        fn = _CMP[node.op]
        if typ == "keyword":
            return self.store.mask(node.field, lambda c: c.keyword_mask(fn(c.dictionary, v)))
        return self.store.mask(node.field, lambda c: np.asarray(c.present, np.bool_) & fn(c.values, v))

    def member(self, node: In) -> np.ndarray:
        typ = self.field_type(node)
        vals = [_literal_for(typ, v, node, self.expr) for v in node.values]
        if typ == "keyword":
            want = np.array(vals, dtype=str) if vals else np.zeros(0, "<U1")
            hit = self.store.mask(node.field, lambda c: c.keyword_mask(np.isin(c.dictionary, want)))
        else:
            want_n = np.array(vals, np.float64 if typ == "float" else np.int64 if typ != "bool" else np.bool_)
            hit = self.store.mask(node.field, lambda c: np.asarray(c.present, np.bool_) & np.isin(c.values, want_n))
        if node.negate:
            return self.store.mask(node.field, Column.exists) & ~hit
        return hit

    def has(self, node: Has) -> np.ndarray:
        out = np.zeros(self.n, np.bool_)
        t = self.index.vocab.get(node.term)
        if t is None or t < 0:
            return out
        for seg, base in zip(self.index.segments, self.index.bases):
            docs, _ = seg.postings(int(t))
            out[int(base) + docs] = True
        return out

    def latents(self, latents: list[int], op: str, thr: float) -> np.ndarray:
        """Documents where any of ``latents`` (terms ``f<j>``) has a weight ``op thr``."""
        out = np.zeros(self.n, np.bool_)
        fn = _CMP[op]
        zero_ok = bool(fn(0.0, thr))
        for j in latents:
            t = self.index.vocab.get(f"f{j}")
            hit = np.zeros(self.n, np.bool_)
            present = np.zeros(self.n, np.bool_)
            if t is not None and t >= 0:
                for seg, base in zip(self.index.segments, self.index.bases):
                    docs, imp = seg.postings(int(t))
                    w = np.asarray(imp, np.float64) * float(seg.term_scales(np.array([t]))[0])
                    present[int(base) + docs] = True
                    hit[int(base) + docs] = fn(w, thr)
            if zero_ok:  # documents without the latent have weight 0
                hit |= ~present
            out |= hit
        return out

    def concept(self, node: Concept) -> np.ndarray:
        labels = getattr(self.index, "feature_labels", None)
        labels = labels() if callable(labels) else labels
        if labels is None:
            raise _error(self.expr, node.col, "concept() needs latent labels: the index is not a sparse-coding index "
                                              "with saved feature labels (use latent(J) instead)")
        word = node.label.lower()
        ids = [j for j in range(len(labels)) if any(w.lower() == word for w, _ in labels.words(j)[:CONCEPT_WORDS])
               or labels.label(j, CONCEPT_WORDS).lower() == word]
        if not ids:
            raise _error(self.expr, node.col, f"no latent is labelled {node.label!r}")
        return self.latents(ids, node.op, node.threshold)


# ----------------------------------------------------------------------------- printing
def _lit(v: Any) -> str:
    if isinstance(v, _Date):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return repr(v)


def _name(f: str) -> str:
    return f if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", f) and f.lower() not in _KEYWORDS | _FUNCS else f"`{f}`"


def describe(node: Node) -> str:
    """A canonical expression of ``node`` (parses back to the same tree, columns aside)."""
    if isinstance(node, And):
        return " and ".join(f"({describe(p)})" if isinstance(p, Or) else describe(p) for p in node.parts)
    if isinstance(node, Or):
        return " or ".join(describe(p) for p in node.parts)
    if isinstance(node, Not):
        inner = describe(node.part)
        return f"not ({inner})" if isinstance(node.part, (And, Or)) else f"not {inner}"
    return _LEAVES[type(node)](node)


_LEAVES: dict[type, Callable[[Any], str]] = {
    Const: lambda n: "true" if n.value else "false",
    Cmp: lambda n: f"{_name(n.field)} {n.op} {_lit(n.value)}",
    In: lambda n: f"{_name(n.field)} {'not in' if n.negate else 'in'} [{', '.join(_lit(v) for v in n.values)}]",
    Exists: lambda n: f"exists({_name(n.field)})",
    Has: lambda n: f"has({_lit(n.term)})",
    Latent: lambda n: f"latent({n.latent}) {n.op} {n.threshold!r}",
    Concept: lambda n: f"concept({_lit(n.label)}) {n.op} {n.threshold!r}",
}


# ----------------------------------------------------------------------------- Milvus
_MILVUS_OPS = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def to_milvus(expr: str, fields: Mapping[str, Mapping[str, Any]]) -> str | bool:
    """``expr`` as a Milvus boolean expression over the scalar fields of an export.

    ``fields``: metadata field name -> ``{"type", "field"`` (its Milvus field name)``, "multi"}``,
    as :func:`sparsearch.milvus.export` records them. Returns the expression, or ``True`` /
    ``False`` when the filter selects every / no document (constants folded away).

    Same semantics as :func:`compile_filter`: every comparison is guarded by presence (``f is
    not null and f == v``), so that Milvus' three-valued logic (a comparison with null is
    unknown, and so is its ``not``) never differs from ours under ``not``; a multi-valued keyword
    field is an ARRAY (a missing value: empty) tested with ``array_contains`` /
    ``array_contains_any``; dates are day numbers. What has no Milvus counterpart is an
    :class:`~sparsearch.errors.UnsupportedError` naming it: ``has()``, ``latent()``,
    ``concept()`` (they read the index's postings), and ranges over a multi-valued keyword field.
    """
    return _Milvus(expr, fields).run(parse(expr))


def _milvus_lit(v: Any, expr: str, col: int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _lit(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise _error(expr, col, f"the number {v!r} has no Milvus literal")
    return repr(v)


class _Milvus:
    def __init__(self, expr: str, fields: Mapping[str, Mapping[str, Any]]) -> None:
        self.expr, self.fields = expr, fields

    def field(self, node: Any) -> Mapping[str, Any]:
        f = self.fields.get(node.field)
        if f is None:
            have = ", ".join(sorted(self.fields)) or "none"
            raise _error(self.expr, node.col, f"unknown field {node.field!r} (the exported metadata fields: {have})")
        return f

    def exists(self, f: Mapping[str, Any]) -> str:
        return f"array_length({f['field']}) > 0" if f.get("multi") else f"{f['field']} is not null"

    def unsupported(self, node: Any, what: str) -> UnsupportedError:
        return UnsupportedError(f"filter {self.expr!r}, column {node.col}: {what} does not translate to a Milvus "
                                f"expression (it reads the index's postings or latents); search the local index")

    def run(self, node: Node) -> str | bool:
        if isinstance(node, (And, Or)):
            short = isinstance(node, Or)  # the constant that decides: true for or, false for and
            parts = []
            for p in node.parts:
                r = self.run(p)
                if r is short:
                    return short
                if r is not (not short):
                    parts.append(r)
            if len(parts) < 2:
                return parts[0] if parts else not short
            return f" {'or' if short else 'and'} ".join(f"({r})" for r in parts)
        if isinstance(node, Not):
            r = self.run(node.part)
            return (not r) if isinstance(r, bool) else f"not ({r})"
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Exists):
            return self.exists(self.field(node))
        if isinstance(node, Cmp):
            return self.compare(node)
        if isinstance(node, In):
            return self.member(node)
        what = {Has: "has()", Latent: "latent()", Concept: "concept()"}.get(type(node))
        if what is not None:
            raise self.unsupported(node, what)
        raise AssertionError(f"unknown filter node {node!r}")  # pragma: no cover

    def compare(self, node: Cmp) -> str:
        f = self.field(node)
        typ, name = f["type"], f["field"]
        if typ == "bool" and node.op not in ("=", "!="):
            raise _error(self.expr, node.col, f"field {node.field!r} is bool: use = or != with true/false")
        v = _milvus_lit(_literal_for(typ, node.value, node, self.expr), self.expr, node.col)
        if f.get("multi"):
            if node.op not in ("=", "!="):
                raise UnsupportedError(f"filter {self.expr!r}, column {node.col}: {node.op} on the multi-valued "
                                       f"field {node.field!r} does not translate to Milvus (=, !=, in and not in do)")
            eq = f"array_contains({name}, {v})"
        else:
            if node.op != "!=":
                return f"{name} is not null and {name} {_MILVUS_OPS[node.op]} {v}"
            eq = f"{name} is not null and {name} == {v}"
        return f"({self.exists(f)}) and not ({eq})" if node.op == "!=" else eq

    def member(self, node: In) -> str | bool:
        f = self.field(node)
        name = f["field"]
        vals = [_milvus_lit(_literal_for(f["type"], v, node, self.expr), self.expr, node.col) for v in node.values]
        if not vals:
            return self.exists(f) if node.negate else False
        listed = "[" + ", ".join(vals) + "]"
        hit = f"array_contains_any({name}, {listed})" if f.get("multi") else f"{name} is not null and {name} in {listed}"
        return f"({self.exists(f)}) and not ({hit})" if node.negate else hit
