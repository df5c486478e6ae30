"""apt_ext.capabilities() and `apt-ext info` report what is compiled and usable here."""
from __future__ import annotations

import json
import subprocess
import sys

import apt_ext
from apt_ext.capabilities import OPS
from apt_ext.cli.main import main


def test_capabilities_lists_every_op_and_backend():
    caps = apt_ext.capabilities()
    assert caps["native_loaded"] and caps["native_error"] is None
    assert set(caps["ops"]) == set(OPS)
    for op, backends in caps["ops"].items():
        assert set(backends) == {"cpu", "cuda", "triton"}
        for b in backends.values():
            assert b["usable"] <= (b["kernel"] is not None)  # usable implies a kernel
            assert b["compiled"] == (b["kernel"] == "native")
    # every op but the GELU and decode-attention composites has a C++ CPU kernel (docs/contract.md
    # §1: CUDA -> Triton -> CPU)
    for op in set(OPS) - {"fp4_linear_gelu", "decode_attention", "decode_attention_kvcache"}:
        assert caps["ops"][op]["cpu"] == {"compiled": True, "kernel": "native", "usable": True}, op
    for op in ("fp4_linear_gelu", "decode_attention", "decode_attention_kvcache"):
        composite = caps["ops"][op]["cpu"]
        assert not composite["compiled"] and composite["usable"] and "composite" in composite["kernel"], op
    # decode attention has no native kernel: on CUDA its kernel is the Triton one
    for op in ("decode_attention", "decode_attention_kvcache"):
        attention = caps["ops"][op]
        assert not attention["cuda"]["compiled"] and attention["cuda"]["kernel"] is None
        assert attention["triton"]["kernel"] == "Triton: apt_ext.triton.decode_attention", op
    assert caps["torch"] and caps["devices"]["device"]


def test_info_prints_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fp4_linear" in out and "left_spin_residual" in out and "torch" in out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("fp4_linear_gelu")] == ["py"]
    assert "device:" in out


def test_info_json_in_fresh_process():
    out = subprocess.run([sys.executable, "-m", "apt_ext.cli.main", "info", "--json"],
                         capture_output=True, text=True, check=True).stdout
    caps = json.loads(out)
    assert caps["ops"]["fp4_unpack"]["cpu"]["usable"] is True
