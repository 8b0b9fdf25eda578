"""ONNX Runtime backend of the SPLADE encoder (optional; ``backend="onnx"`` / ``"onnx-int8"``).

The masked-LM and the SPLADE pooling are exported as one graph
``(input_ids, attention_mask) -> (B, V)`` weights: padding positions get a large negative
offset, the max over tokens is taken on raw logits, then ``log1p(relu(.))`` (equal to the
reference pooling because the activation is monotone). ``quantize=True`` applies ONNX Runtime's
dynamic int8 quantization to the matrix products (weights int8, activations quantized per
batch), which trades a little precision for speed on CPUs with VNNI. Exported files are kept
in the cache directory, keyed by the model's weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir

__all__ = ["OnnxSplade", "export_splade_onnx"]


def _weights_key(model: Any) -> str:
    h = hashlib.sha256()
    h.update(model.config.to_json_string().encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes()[:4096])
        h.update(str(tuple(p.shape)).encode())
        h.update(np.float64(p.detach().double().sum().item()).tobytes())
    return h.hexdigest()[:24]


def export_splade_onnx(model: Any, path: Path) -> Path:
    """Export ``model`` + SPLADE pooling to ``path`` (TorchScript-based ONNX exporter, opset 17)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, mlm):
            super().__init__()
            self.mlm = mlm

        def forward(self, input_ids, attention_mask):
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
            offset = (1.0 - attention_mask.to(logits.dtype)).unsqueeze(-1) * -1e4
            return torch.log1p(torch.relu((logits + offset).amax(dim=1)))

    wrapper = Pooled(model).eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["weights"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "weights": {0: "batch"}})
    return path


class OnnxSplade:
    """Callable ``(input_ids int64 (B, L), attention_mask (B, L)) -> float32 (B, V)`` on ONNX Runtime."""

    def __init__(self, model: Any, *, quantize: bool = False, threads: int | None = None) -> None:
        import onnxruntime as ort

        folder = cache_dir() / "onnx"
        key = _weights_key(model)
        fp32 = folder / f"splade-{key}.onnx"
        if not fp32.exists():
            tmp = folder / f".tmp-splade-{key}.onnx"
            export_splade_onnx(model, tmp)
            tmp.replace(fp32)
        path = fp32
        if quantize:
            path = folder / f"splade-{key}-int8.onnx"
            if not path.exists():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                tmp = folder / f".tmp-splade-{key}-int8.onnx"
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
                tmp.replace(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self.session.run(["weights"], {"input_ids": input_ids.astype(np.int64),
                                             "attention_mask": attention_mask.astype(np.int64)})[0]
        return np.ascontiguousarray(out, dtype=np.float32)
