"""tools/ncu_details_json.py: Nsight Compute's details page read into metric tables per kernel."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ncu_details_json as ndj  # noqa: E402

# the page's layout (ncu 2025): a kernel heading, sections of dash-framed tables, prose between
PAGE = """[1737] python3.12@127.0.0.1
  void unnamed>::gemm_tiled_kernel<0, 0, 2, 8, 2, 1, 2>(TiledLinearArgs) (132, 1, 1)x(256, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    Elapsed Cycles                cycle      313,609
    Duration                         us       179.81
    ----------------------- ----------- ------------

    OPT   This workload exhibits low compute throughput and memory bandwidth utilization relative to the peak
          performance of this device.

    Section: Launch Statistics
    -------------------------------- --------------- ---------------
    Metric Name                          Metric Unit    Metric Value
    -------------------------------- --------------- ---------------
    Cluster Scheduling Policy                           PolicySpread
    Registers Per Thread             register/thread             252
    Duration                                      ms            9.99
    -------------------------------- --------------- ---------------
  void other_kernel(int) (8, 1, 1)x(32, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    Duration                         us         2.50
    ----------------------- ----------- ------------
"""


def test_parse_reads_each_kernels_tables():
    kernels = ndj.parse(PAGE)
    assert [k["kernel"] for k in kernels] == [
        "void unnamed>::gemm_tiled_kernel<0, 0, 2, 8, 2, 1, 2>(TiledLinearArgs) (132, 1, 1)x(256, 1, 1)",
        "void other_kernel(int) (8, 1, 1)x(32, 1, 1)"]
    m = kernels[0]["metrics"]
    assert m["Elapsed Cycles"] == {"unit": "cycle", "value": 313609.0}  # thousands separator removed
    assert m["Duration"] == {"unit": "us", "value": 179.81}  # the first of a repeated name
    assert m["Registers Per Thread"] == {"unit": "register/thread", "value": 252.0}
    assert m["Cluster Scheduling Policy"] == {"unit": "", "value": "PolicySpread"}  # no unit, not a number
    assert len(m) == 4 and kernels[1]["metrics"] == {"Duration": {"unit": "us", "value": 2.5}}


def test_main_writes_json_and_rejects_pages_without_kernels(tmp_path):
    page = tmp_path / "details.txt"
    page.write_text(PAGE)
    out = tmp_path / "ncu.json"
    assert ndj.main([str(page), "--out", str(out), "--card", "NVIDIA H200", "--command", "ncu ..."]) == 0
    res = json.loads(out.read_text())
    assert res["card"] == "NVIDIA H200" and res["command"] == "ncu ..." and len(res["kernels"]) == 2
    (tmp_path / "empty.txt").write_text("==ERROR== no kernels were profiled\n")
    for argv in ([str(tmp_path / "empty.txt")], [str(tmp_path / "missing.txt")]):
        with pytest.raises(SystemExit):
            ndj.main(argv + ["--out", str(out), "--card", "x", "--command", "y"])
