"""The ``apt-ext`` command line as a user meets it: quick help without torch, ``--version``,
every option documented with its default, one-line errors naming the option with exit code 2,
Ctrl-C as exit code 130, tracebacks only under ``--debug``, and train/demo without the optional
packages matplotlib and tokenizers. Each case runs the CLI in a fresh interpreter."""
from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import time

import pytest
import torch

import apt_ext
from apt_ext.cli.main import build_parser
from cli_helpers import cli_command, error_line, run_cli, run_cli_batch

TINY = ("--steps", "2", "--batch-size", "2", "--seq-len", "16", "--d-model", "32", "--layers", "1", "--heads", "2",
        "--eval-every", "0", "--no-progress", "--threads", "1")


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 100)
    return f


def test_help_and_version_do_not_import_torch_and_are_quick():
    for args in (("--help",), ("--version",), ("train", "--help"), ("memory", "search", "--help")):
        proc = run_cli(*args, report_modules=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines()[-1] == "torch imported: False", (args, proc.stderr)
    assert run_cli("--version").stdout.strip() == f"apt-ext {apt_ext.__version__}"
    # CPU seconds of the whole process (interpreter start included), best of 3: unlike wall time
    # this barely grows on a busy machine; importing torch alone takes several CPU seconds
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cli_command("--help"), capture_output=True, check=True, timeout=120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    assert best_cpu < 0.5, f"apt-ext --help used {best_cpu:.2f} CPU s (best of 3; {best_wall:.2f} s wall)"
    assert best_wall < 3.0, f"apt-ext --help took {best_wall:.2f} s (best of 3)"


def _option_actions(parser: argparse.ArgumentParser, path: str = "apt-ext"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _option_actions(sub, f"{path} {name}")
        else:
            yield path, parser, action


def test_every_option_has_help_that_states_its_default():
    flags = (argparse._StoreTrueAction, argparse._HelpAction, argparse._VersionAction)
    checked = 0
    for path, parser, action in _option_actions(build_parser()):
        assert action.help, f"{path} {action.option_strings or action.dest}: no help text"
        if isinstance(action, flags) or action.required or not action.option_strings:
            continue
        text = parser._get_formatter()._expand_help(action)
        assert "default" in text, f"{path} {action.option_strings}: help does not state the default: {text!r}"
        checked += 1
    assert checked > 40
    for command in ("train", "demo", "memory"):
        assert run_cli(command, "--help").stdout.count("default") > 3 or command == "memory"
    assert "(default: 1000)" in run_cli("train", "--help").stdout


USAGE_ERRORS = [  # (argv, the option the error line must name)
    (["train", "--steps", "0"], "--steps"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--batch-size", "-3"], "--batch-size"),
    (["train", "--heads", "3"], "--d-model"),
    (["train", "--tokenizer", "words"], "--tokenizer"),
    (["train", "--threads", "0"], "--threads"),
    (["demo", "--steps", "0"], "--steps"),
    (["memory", "search", "q"], "--db"),
    (["serve", "--checkpoint", "x", "--port", "70000"], "--port"),
    (["generate", "--checkpoint", "/nonexistent", "hello"], "--checkpoint"),
    (["frobnicate"], "COMMAND"),
]


def test_usage_errors_are_one_line_naming_the_option_exit_code_2():
    for proc, (argv, option) in zip(run_cli_batch([argv for argv, _ in USAGE_ERRORS]), USAGE_ERRORS):
        assert proc.returncode == 2, (argv, proc.stderr)
        line = error_line(proc)
        assert line.startswith("apt-ext") and option in line, (argv, line)


def test_bad_data_files_are_one_line_errors(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"text\x00with a NUL")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cases = [(tmp_path / "missing.txt", "does not exist"), (empty, "no text"), (binary, "is not UTF-8 text"),
             (nul, "NUL bytes"), (tmp_path, "is a directory")]
    runs = run_cli_batch([["train", str(path), *TINY, "--out-dir", str(tmp_path / "run")] for path, _ in cases])
    for proc, (path, why) in zip(runs, cases):
        assert proc.returncode == 2, proc.stderr
        line = error_line(proc)
        assert line.startswith(f"apt-ext train: data: {path}") and why in line, line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_output_directory_device_and_resume_errors(tmp_path, text_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = []  # (argv, the start of the error line, a part of it)
    for out in (blocker, blocker / "run"):
        for command in (["train", str(text_file), *TINY], ["demo", "--quick", "--device", "cpu"]):
            cases.append(([*command, "--out-dir", str(out)], f"apt-ext {command[0]}: --out-dir: ", str(out)))
    if not torch.cuda.is_available():
        for command in (["train", str(text_file), *TINY], ["demo", "--quick"]):
            cases.append(([*command, "--device", "cuda", "--out-dir", str(tmp_path / "run")],
                          f"apt-ext {command[0]}: --device='cuda': cuda is unavailable here", "CUDA"))
    cases.append((["train", str(text_file), *TINY, "--out-dir", str(tmp_path / "run"), "--resume"],
                  "apt-ext train: --resume: there is no checkpoint to resume from at", "checkpoint.pt"))
    for proc, (argv, start, part) in zip(run_cli_batch([argv for argv, _, _ in cases]), cases):
        assert proc.returncode == 2, (argv, proc.stderr)
        line = error_line(proc)
        assert line.startswith(start) and part in line, (argv, line)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # --resume did not start fresh


def test_debug_shows_the_traceback():
    proc = run_cli("train", "--steps", "0", "--debug", timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "steps" in proc.stderr.splitlines()[-1]
    proc = run_cli("--debug", "memory", "stats", "--db", "/nonexistent-dir/m.db", timeout=300)
    assert "Traceback" in proc.stderr and "StoreError" in proc.stderr


def test_ctrl_c_exits_130_with_one_line(tmp_path, text_file):
    args = list(TINY[:TINY.index("--threads")])  # without --threads: the thread line marks the start
    args[args.index("--steps") + 1] = "100000"
    # The child gets SIGINT's default action back: a test run started in the background of a
    # non-interactive shell (`pytest ... &`) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler, so Ctrl-C would rightly do nothing (as the shell intends).
    proc = subprocess.Popen(cli_command("train", str(text_file), *args, "--out-dir", str(tmp_path / "run")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = []
        while not (seen and seen[-1].startswith("CPU threads:")):  # printed just before training starts
            seen.append(proc.stderr.readline())
            assert seen[-1] and len(seen) < 50, "".join(seen) + proc.stderr.read()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["apt-ext train: interrupted"], "".join(seen) + err


def test_train_without_matplotlib_writes_losses_and_skips_the_plot(tmp_path, text_file):
    run = tmp_path / "run"
    proc = run_cli("train", str(text_file), *TINY, "--out-dir", str(run), missing=("matplotlib",), timeout=300)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and notes[0].startswith("loss.png skipped: matplotlib is not installed"), proc.stderr
    assert len(json.loads((run / "losses.json").read_text())["train"]) == 2
    assert (run / "model" / "model.safetensors").is_file() and not (run / "loss.png").exists()
    assert "loss.png" not in proc.stdout and "trained 2 steps" in proc.stdout


def test_bpe_without_tokenizers_is_a_one_line_error(tmp_path, text_file):
    proc = run_cli("train", str(text_file), *TINY, "--tokenizer", "bpe", "--out-dir", str(tmp_path / "run"),
                   missing=("tokenizers",), timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert line.startswith("apt-ext train: --tokenizer: 'bpe' needs the tokenizers package") and \
        "pip install tokenizers" in line, line


def test_demo_without_matplotlib_and_tokenizers_keeps_its_results(tmp_path):
    """The full demo (one training step): the byte tokenizer instead of BPE, no loss.png, the parts
    whose embedder needs tokenizers skipped, not FAILED; the results stay in --out-dir."""
    out = tmp_path / "demo-out"
    proc = run_cli("demo", "--steps", "1", "--device", "cpu", "--threads", "2", "--out-dir", str(out),
                   missing=("matplotlib", "tokenizers"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "note: the tokenizers package is not installed: training with the byte tokenizer instead of BPE" \
        in proc.stderr
    assert "FAILED" not in proc.stdout and "loss curve: skipped (no matplotlib)" in proc.stdout
    summary = proc.stdout[proc.stdout.index("== summary =="):]
    for part in ("AIM-Memory", "FP4 MiniLM"):
        row = next(line for line in summary.splitlines() if line.strip().startswith(part))
        assert "skipped" in row and "optional package tokenizers not installed" in row, row
    assert f"results go to {out}" in proc.stdout and f"results kept in {out}" in proc.stdout
    assert (out / "train" / "losses.json").is_file() and not (out / "train" / "loss.png").exists()
    assert "Traceback" not in proc.stderr
