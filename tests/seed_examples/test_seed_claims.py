"""docs/seed_claims.md (the design document's claims next to what apt_ext measured) is rendered
from benchmarks/results/ and every figure in it cites the JSON that holds it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def test_seed_claims_md_is_rendered_from_the_json_files():
    seed_claims = _load(ROOT / "benchmarks" / "seed_claims.py")
    assert seed_claims.main(["--check"]) == 0, "run: python benchmarks/seed_claims.py"
    text = (ROOT / "docs" / "seed_claims.md").read_text()
    assert all(f"| `{c.claim}` |" in text for c in seed_claims.CLAIMS)     # one row per claim
    assert "not measured:" in text


def test_every_figure_in_it_cites_a_json():
    check_numbers = _load(ROOT / "tools" / "check_numbers.py")
    findings, checked = check_numbers.check([ROOT / "docs" / "seed_claims.md"])
    assert checked > 30 and not findings, "\n".join(str(f) for f in findings)
