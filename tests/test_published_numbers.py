"""Every number published in README.md, docs/*.md and benchmarks/RESULTS.md traces to a JSON
under benchmarks/results/ (docs/benchmarks.md has the convention)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check_numbers = _load(ROOT / "tools" / "check_numbers.py")
render_results = _load(ROOT / "benchmarks" / "render_results.py")


def test_results_md_is_rendered_from_the_json_files():
    assert render_results.main(["--check"]) == 0, "run: python benchmarks/render_results.py"


def test_every_published_figure_cites_a_json_that_holds_it():
    findings, checked = check_numbers.check(check_numbers.default_files())
    assert checked > 200  # the check did read the tables
    assert not findings, "\n".join(str(f) for f in findings)


def test_the_check_catches_unsourced_and_wrong_figures(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "run.json").write_text('{"rows": [{"ms": 1.234, "base_ms": 3.702}], "bytes": 1048576}')
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Speed\n\n"
        "Ours takes 1.23 ms, 3.00x faster than the baseline, 1.0 MiB of weights ([json](benchmarks/results/run.json)).\n\n"
        "Ours takes 1.25 ms ([json](benchmarks/results/run.json)).\n\n"
        "An uncited 7.5 ms.\n\n"
        "A target: at least 9x, and >= 20 ms. Version 2.13.0 is no figure; neither is `4.2 ms` in code.\n\n"
        "A hand timing of 3.3 ms (unsourced: development note).\n\n"
        "- cited but missing: 1.23 ms ([json](benchmarks/results/gone.json))\n")
    findings, checked = check_numbers.check([doc])
    got = sorted((f.figure.split("/")[-1], f.why.split()[0]) for f in findings)
    assert got == [("1.25", "is"), ("7.5", "cites"), ("gone.json", "is")], findings
    assert checked == 6
