"""tools/inductor_cuda_kernels.py: inductor's CUDA Triton kernels for a compiled training step,
generated without a GPU, then compiled for sm_90 (here with the installed Triton). It found,
with the device's Triton 3.6, the failure the H200 hit on the earlier decomposed left-spin form
(docs/fp4_gpu_notes.md, twenty-third session)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
from apt_ext.triton.fp4_decode import INTERPRET  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import inductor_cuda_kernels as tool  # noqa: E402

pytestmark = pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET=1 replaces compilation")


def test_decomposed_left_spin_kernels_generate_and_compile(tmp_path):
    torch.manual_seed(0)
    graphs = tool.partitioned_graphs(*tool.left_spin_stack("decomposed"))
    assert [kind for kind, _, _ in graphs] == ["fw", "bw"]
    kernels = tool.cuda_kernels(graphs)
    # the sites' row norms fuse into inductor's own kernels, forward and backward
    norm_kernels = sorted(n for n in kernels if "vector_norm" in n or "sqrt" in n)
    assert kernels and all(n.startswith("triton_") and "@triton.jit" in src for n, src in kernels.items())
    assert norm_kernels, sorted(kernels)
    paths = []
    for name in norm_kernels[:3]:
        paths.append(tmp_path / f"{name}.py")
        paths[-1].write_text(kernels[name])
    assert tool.compile_each(paths, None) == {p.name: "ok" for p in paths}
    assert not torch.cuda.is_available()  # the fake device is gone again


def test_compile_each_reports_a_failure(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("@triton.jit\ndef f():\n    pass\n")  # no inductor signature
    (result,) = tool.compile_each([path], None).values()
    assert result != "ok" and "signature" in result
