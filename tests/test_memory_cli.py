"""``apt-ext memory`` with a --db that is not a usable database: one line naming --db, exit code
2, no traceback; a read-only database (file and directory on a read-only mount) can still be
searched; the memory commands never import torch."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess

import pytest

from apt_ext.memory import create_aim_memory
from apt_ext.memory.stores import SQLiteStore, StoreError
from cli_helpers import cli_command, error_line, run_cli
from memory_helpers import TokenHashEmbedder

FACTS = ["Llama 4 Scout supports a 10M token context window.", "Paris hosted the Summer Olympics in 2024."]


def _db_with_nodes(path) -> str:
    with create_aim_memory(path=str(path), embedder=TokenHashEmbedder()) as mem:
        for fact in FACTS:
            mem.write_memory(fact)
    return str(path)


def _bad_databases(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (path, what the error line must say)."""
    noise = tmp_path / "noise.db"
    noise.write_bytes(os.urandom(8192))
    full = _db_with_nodes(tmp_path / "full.db")
    size = os.path.getsize(full)
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(open(full, "rb").read()[: size // 2])
    header = tmp_path / "header.db"
    header.write_bytes(open(full, "rb").read()[:50])
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    return {"random bytes": (str(noise), "is not a SQLite database"),
            "truncated": (str(truncated), "is damaged or truncated"),
            "truncated header": (str(header), "is damaged or truncated"),
            "a directory": (str(tmp_path), "is a directory"),
            "in a missing directory": (str(tmp_path / "no" / "such" / "m.db"), "does not exist"),
            "not AIM-Memory": (str(other), "not an AIM-Memory one")}


def test_bad_db_files_are_one_line_errors_naming_db(tmp_path):
    for name, (path, says) in _bad_databases(tmp_path).items():
        for action in ("stats", "search", "add"):
            args = ("memory", action, "--db", path) + (("some words here",) if action != "stats" else ())
            proc = run_cli(*args, timeout=300)
            assert proc.returncode == 2, (name, action, proc.stderr)
            line = error_line(proc)
            assert line.startswith(f"apt-ext memory {action}: --db: ") and says in line, (name, action, line)


def test_reads_create_nothing_and_writes_create_the_file(tmp_path):
    path = tmp_path / "new.db"
    proc = run_cli("memory", "stats", "--db", str(path), report_modules=True, timeout=300)
    assert proc.returncode == 2 and "does not exist (a read-only open creates nothing)" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "torch imported: False"
    assert not path.exists()
    _db_with_nodes(path)
    proc = run_cli("memory", "stats", "--db", str(path), report_modules=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '"total_nodes": 2' in proc.stdout and proc.stderr.splitlines()[-1] == "torch imported: False"


def test_store_errors_in_the_library(tmp_path):
    for name, (path, says) in _bad_databases(tmp_path).items():
        for read_only in (False, True):
            with pytest.raises(StoreError, match=says):
                create_aim_memory(path=path, embedder=TokenHashEmbedder(), read_only=read_only)
    full = _db_with_nodes(tmp_path / "ro.db")
    with create_aim_memory(path=full, embedder=TokenHashEmbedder(), read_only=True) as mem:
        assert len(mem) == 2 and mem.route_memory(FACTS[0], k=1)[0][0].summary
        with pytest.raises(StoreError, match="open read-only"):
            mem.write_memory("A new fact about the 2024 Olympics in Paris.")
    with pytest.raises(ValueError, match="read_only"):
        SQLiteStore(None, read_only=True)


def _read_only_argv(directory, argv: list[str]) -> list[str] | None:
    """argv that runs ``argv`` with ``directory`` read-only: as root, a read-only bind mount in a
    private mount namespace (root ignores file modes); otherwise file modes. None: not possible."""
    if os.geteuid() != 0:
        for entry in directory.iterdir():
            entry.chmod(0o444)
        directory.chmod(0o555)
        return argv
    if shutil.which("unshare") is None:
        return None
    d = str(directory)
    read_only = f"mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}'"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{read_only} && ! touch '{d}/probe' 2>/dev/null"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f"{read_only} && exec \"$@\"", "sh", *argv]


def test_read_only_database_can_be_searched_not_written(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    db = str(ro / "m.db")
    for fact in FACTS:
        proc = run_cli("memory", "add", fact, "--db", db, timeout=600)
        assert proc.returncode == 0 and "stored #" in proc.stdout, proc.stderr
    assert sorted(p.name for p in ro.iterdir()) == ["m.db"]  # WAL merged and removed at close
    runs = {}
    for action, extra in (("search", ["which model has a 10M token context"]), ("stats", []),
                          ("add", ["The Eiffel tower is 330 metres tall."])):
        argv = _read_only_argv(ro, cli_command("memory", action, *extra, "--db", db))
        if argv is None:
            pytest.skip("cannot make a read-only directory here (not root with mount namespaces, nor non-root)")
        runs[action] = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert runs["search"].returncode == 0, runs["search"].stderr
    assert runs["search"].stdout.startswith("1. #1 ") and "10M" in runs["search"].stdout
    assert runs["stats"].returncode == 0 and '"total_nodes": 2' in runs["stats"].stdout
    assert runs["add"].returncode == 2, runs["add"].stderr
    line = error_line(runs["add"])
    assert line.startswith("apt-ext memory add: --db: ") and "read-only" in line, line


def test_embedding_model_loads_quietly(tmp_path):
    """Off a terminal, loading the embedder shows no progress bar (sentence-transformers' model
    load draws a "Loading weights" bar unless told not to); the answer is on stdout, stderr is empty."""
    db = str(tmp_path / "m.db")
    proc = run_cli("memory", "add", FACTS[0], "--db", db, timeout=600)
    assert proc.returncode == 0, proc.stderr  # stderr: at most the one-time ONNX export's line
    assert all(line.startswith("AIM-Memory: exporting") for line in proc.stderr.splitlines()), proc.stderr
    proc = run_cli("memory", "search", "which model has a 10M token context", "--db", db,
                   missing=("onnxruntime",), timeout=600)  # the sentence-transformers path
    assert proc.returncode == 0 and "10M" in proc.stdout, proc.stderr
    assert proc.stderr == "", proc.stderr
