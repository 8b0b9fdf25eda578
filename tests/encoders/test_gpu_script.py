"""benchmarks/gpu_encoding.py, the one prepared GPU run of issue 19: without a CUDA device it
measures nothing and says so in one line (exit 2); with one, it writes docs/s for both encoders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the encoders need torch (the 'splade' / 'dense' extras)")

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_encoding_script(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_encoding.py"), "--docs", "16",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    if not torch.cuda.is_available():
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "no CUDA device" in run.stderr
        assert not out.exists()
    else:  # a GPU machine: the figures themselves
        assert run.returncode == 0, run.stderr[-2000:]
        res = json.loads(out.read_text())
        assert res["documents"] == 16 and res["dense_docs_per_s"] > 0 and res["splade_docs_per_s"] > 0
