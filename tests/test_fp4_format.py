"""apt_ext/fp4/format.py (the Python home of the FP4 formats) agrees with the C++ tables of
csrc/fp4/fp4_format.h, read through apt_ext._C.fp4.format_table()."""
from __future__ import annotations

import pytest
import torch

import apt_ext
from apt_ext import _native
from apt_ext.fp4 import format as fp4_format


def test_cpp_format_table_matches_format_py():
    table = _native._C.fp4.format_table()
    assert [row["name"] for row in table] == list(fp4_format.FORMAT_NAMES)
    for row in table:
        spec = fp4_format.FORMATS[row["name"]]
        assert row["id"] == fp4_format.FORMAT_NAMES.index(spec.name)  # the Triton kernels' format ids
        assert row["block_size"] == spec.block_size
        assert row["scale_dtype"] == spec.scale_dtype
        assert row["zero_code"] == spec.zero_code
        # bit for bit as float32 (the C++ tables are float; -0.0 must stay -0.0)
        cpp = torch.tensor(row["values"], dtype=torch.float32)
        assert torch.equal(cpp.view(torch.int32), fp4_format.code_table(spec.name).view(torch.int32)), spec.name


@pytest.mark.parametrize("fmt", fp4_format.FORMAT_NAMES)
def test_bits_per_weight_and_scale_dtype_are_what_quantize_produces(fmt):
    q = apt_ext.fp4.quantize(torch.randn(256, 4096), fmt)
    spec = fp4_format.FORMATS[fmt]
    assert q.block_size == spec.block_size and q.scales.dtype == spec.scale_dtype
    assert q.bits_per_weight == pytest.approx(spec.bits_per_weight, abs=1e-3)  # tensor scale: 4 bytes


def test_unknown_format_message_is_the_same_in_python_and_cpp():
    with pytest.raises(ValueError) as py_err:
        fp4_format.get_format("fp5")
    with pytest.raises(ValueError) as cpp_err:
        torch.ops.apt.fp4_quantize(torch.randn(2, 16), "fp5", 16)
    assert str(py_err.value) == fp4_format.unknown_format_message("fp5")
    assert str(py_err.value) in str(cpp_err.value)
