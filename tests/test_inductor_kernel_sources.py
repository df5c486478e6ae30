"""tools/inductor_kernel_sources.py: a kernel's launches, source nodes and traffic read from
inductor wrapper code (a folder or a .tgz), and the profile's kernels looked up."""
from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import inductor_kernel_sources as iks  # noqa: E402

# The shape of inductor's wrapper module: each kernel's source (with its own benchmark harness,
# which calls .run(*args)) before call(), whose launches follow their source-nodes comments.
WRAPPER = """
triton_per_fused_mul_sum_0 = async_compile.triton('triton_per_fused_mul_sum_0', '''
@triton_heuristics.persistent_reduction(
    inductor_meta={'kernel_name': 'triton_per_fused_mul_sum_0', 'num_load': 2, 'kernel_num_gb': 0.0378},
)
@triton.jit
def triton_per_fused_mul_sum_0(in_ptr0, in_ptr1, out_ptr0, xnumel, r0_numel, XBLOCK : tl.constexpr):
    pass

def call(args):
    triton_per_fused_mul_sum_0.run(*args, stream=raw_stream0)
''')

triton_poi_fused_add_1 = async_compile.triton('triton_poi_fused_add_1', '''
@triton_heuristics.pointwise(
    inductor_meta={'kernel_name': 'triton_poi_fused_add_1', 'kernel_num_gb': 0.0252},
)
@triton.jit
def triton_poi_fused_add_1(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    pass
''')

def call(args):
    buf0 = empty_strided_cuda((8, 1024), (1024, 1), torch.float32)
    # Topologically Sorted Source Nodes: [go, mul_13, sum_4], Original ATen: [aten._to_copy, aten.mul, aten.sum]
    stream0 = get_raw_stream(0)
    triton_per_fused_mul_sum_0.run(buf1, primals_3, buf0, 8192, 768, stream=stream0)
    # Topologically Sorted Source Nodes: [grad_u], Original ATen: [aten.add]
    triton_poi_fused_add_1.run(buf0, buf2, 6291456, stream=stream0)
    triton_poi_fused_add_1.run(buf3, buf4, 6291456, stream=stream0)
"""


def _write(folder: Path) -> Path:
    (folder / "ab").mkdir(parents=True)
    path = folder / "ab" / "cabc.py"
    path.write_text(WRAPPER)
    (folder / "ab" / "kernel_only.py").write_text("triton_poi_fused_add_1.run(buf0, buf1, 4)\n")  # no call(): skipped
    return path


def test_launches_carry_their_nodes_and_traffic(tmp_path):
    got = iks.read_code(_write(tmp_path).parent.parent)
    assert [(g.kernel, g.nodes, g.traffic_mb, g.loads) for g in got] == [
        ("triton_per_fused_mul_sum_0", ["go", "mul_13", "sum_4"], pytest.approx(37.8), 2),
        ("triton_poi_fused_add_1", ["grad_u"], pytest.approx(25.2), None),  # no num_load in its meta
        ("triton_poi_fused_add_1", [], pytest.approx(25.2), None),  # no comment of its own
    ]
    assert got[0].aten == ["aten._to_copy", "aten.mul", "aten.sum"] and got[0].module == "ab/cabc.py"


def test_tgz_and_profile_lookup(tmp_path, capsys):
    _write(tmp_path / "cache")
    tgz = tmp_path / "inductor_code.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "cache" / "ab" / "cabc.py", arcname="./ab/cabc.py")
    profile = tmp_path / "model.json"
    profile.write_text(json.dumps({"rows": [{"variant": "left-spin", "top_kernels": [
        {"name": "nvjet_sm90_gemm", "ms_per_step": 1.8, "calls_per_step": 37.0},
        {"name": "triton_per_fused_mul_sum_0", "ms_per_step": 0.235, "calls_per_step": 24.0}]}]}))
    assert iks.main(["--code", str(tgz), "--profile", str(profile), "--variant", "left-spin"]) == 0
    out = capsys.readouterr().out
    assert "triton_per_fused_mul_sum_0  (0.235 ms/step, 24 calls): 1 launch(es)" in out
    assert "nodes: go, mul_13, sum_4" in out and "37.8 MB, 2 loads" in out and "nvjet" not in out


def test_cut_profile_name_matches_the_kernels_it_begins(tmp_path, capsys, monkeypatch):
    code = _write(tmp_path).parent.parent
    monkeypatch.setattr(iks, "PROFILE_NAME_CHARS", len("triton_poi_fused"))
    assert iks.main(["--code", str(code), "--kernel", "triton_poi_fused"]) == 0
    out = capsys.readouterr().out
    assert "triton_poi_fused: 2 launch(es)" in out and "cabc.py  triton_poi_fused_add_1  25.2 MB, loads ?" in out
    # a name shorter than the cut is a whole name: no prefix match
    assert iks.main(["--code", str(code), "--kernel", "triton_poi"]) == 0
    assert "triton_poi: 0 launch(es)" in capsys.readouterr().out


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="code"):
        iks.read_code(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="code"):
        iks.read_code(tmp_path / "file.txt")
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"rows": [{"variant": "plain", "top_kernels": []}]}))
    with pytest.raises(ValueError, match="variant"):
        iks.profile_kernels(profile, "left-spin", 5)
    for argv in (["--code", str(tmp_path)], ["--code", str(tmp_path), "--kernel", "k", "--top", "0"]):
        with pytest.raises(SystemExit):
            iks.main(argv)
