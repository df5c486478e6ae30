"""The GPU A/B tooling on the CPU: tools/ab_prepare.sh (a commit's csrc/ and CMakeLists.txt for the
base side) and benchmarks/gpu_session.sh's sync_dir (only the files that differ are copied, so
ninja rebuilds only them). The `ab` stage itself needs the device's build (run through the device
tool)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def test_ab_prepare_writes_the_commits_sources(tmp_path):
    dest = tmp_path / "base"
    subprocess.run(["bash", str(ROOT / "tools/ab_prepare.sh"), "HEAD", str(dest)], check=True, capture_output=True)
    assert (dest / "REF").read_text().strip() == _git("rev-parse", "HEAD").strip()
    assert (dest / "CMakeLists.txt").read_text() == _git("show", "HEAD:CMakeLists.txt")
    files = _git("ls-tree", "-r", "--name-only", "HEAD", "csrc").split()
    assert files and sorted(str(p.relative_to(dest)) for p in (dest / "csrc").rglob("*") if p.is_file()) == sorted(files)
    assert (dest / files[0]).read_text() == _git("show", f"HEAD:{files[0]}")
    bad = subprocess.run(["bash", str(ROOT / "tools/ab_prepare.sh"), "no-such-ref", str(dest)], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "REF: not a commit" in bad.stderr


def test_sync_dir_copies_only_what_differs(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (dst / "sub").mkdir(parents=True)
    for d, same, changed in ((src, "x", "new"), (dst, "x", "old")):
        (d / "same.cu").write_text(same)
        (d / "sub" / "changed.h").write_text(changed)
    (src / "sub" / "added.cu").write_text("a")
    (dst / "gone.cu").write_text("g")
    os.utime(dst / "same.cu", (1_000_000, 1_000_000))
    script = (ROOT / "benchmarks/gpu_session.sh").read_text()
    func = script[script.index("sync_dir() {"):script.index("\n}\n", script.index("sync_dir() {")) + 3]
    subprocess.run(["bash", "-c", func + 'sync_dir "$1" "$2"', "sync", str(src), str(dst)], check=True)
    assert (dst / "sub" / "changed.h").read_text() == "new" and (dst / "sub" / "added.cu").read_text() == "a"
    assert not (dst / "gone.cu").exists()
    assert os.stat(dst / "same.cu").st_mtime == 1_000_000  # untouched: ninja does not rebuild it
