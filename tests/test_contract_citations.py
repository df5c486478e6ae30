"""The contract the code follows is docs/contract.md: every citation of it names a section that
exists, and nothing cites the design document that is not in the repository any more."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "docs" / "contract.md"
SUFFIXES = {".py", ".md", ".cpp", ".h", ".cu", ".cmake", ".txt", ".toml", ".sh", ".cfg"}
SKIP_DIRS = {".git", ".venv", ".ci-venv", "build", "results", "__pycache__", ".pytest_cache"}
CITATION = re.compile(r"contract\.md\s*§\s*(\d+)")
OLD_CITATION = re.compile(r"\b" + "SP" + r"EC\b")  # split so that this file does not match itself


def source_files() -> list[Path]:
    """Text files of the project (code, docs, build files), without virtual envs and build output."""
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        out += [Path(folder) / f for f in files if Path(f).suffix in SUFFIXES]
    return out


def contract_sections() -> set[int]:
    """Numbers N of the '## N. title' headings of docs/contract.md."""
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. \S", CONTRACT.read_text(), re.M)}


def bad_citations(text: str, sections: set[int]) -> list[str]:
    """Citations in ``text`` that cite the old design document or a section the contract lacks."""
    bad = [f"'{m.group(0)}' (the design document is not in the repository: cite docs/contract.md §N)"
           for m in OLD_CITATION.finditer(text)]
    bad += [f"'{m.group(0)}' (docs/contract.md has no section {m.group(1)})"
            for m in CITATION.finditer(text) if int(m.group(1)) not in sections]
    return bad


def test_contract_has_the_numbered_sections():
    assert contract_sections() == set(range(12))


def test_every_citation_resolves_to_a_contract_section():
    sections = contract_sections()
    problems, cited = [], 0
    for path in source_files():
        text = path.read_text(errors="replace")
        cited += len(CITATION.findall(text))
        problems += [f"{path.relative_to(ROOT)}: {b}" for b in bad_citations(text, sections)]
    assert not problems, "\n".join(problems)
    assert cited > 20  # the code, tests and docs do cite it


def test_checker_finds_bad_citations():
    sections = contract_sections()
    assert bad_citations("see docs/contract.md §3 and §4", sections) == []
    assert len(bad_citations("see docs/contract.md " + "§42", sections)) == 1
    assert len(bad_citations("(" + "SP" + "EC section 3)", sections)) == 1
