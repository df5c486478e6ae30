"""Shared by the cloud tests: a tiny APT checkpoint on disk and `apt-ext serve` subprocesses."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.train.data import ByteTokenizer

API_KEY = "test-key-0123456789"


def write_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A byte-level decoder-only APT model (left-spin and autopoietic attention on, random
    weights) saved the way `apt-ext train` saves it: DIR/model/ + DIR/tokenizer.json. Its output
    head gives every non-printable byte a logit of exactly 0 and the printable ones random
    logits, so greedy text is printable ASCII (valid UTF-8: text resumes byte-exactly)."""
    torch.manual_seed(seed)
    cfg = APTModelConfiguration(vocab_size=256, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=0,
                                num_decoder_layers=2, decoder_only=True, dropout=0.0, max_seq_len=2048,
                                autopoietic_rank=2, init_std=0.2, tie_embeddings=False)
    model = APTModel(cfg)
    printable = torch.zeros(256, dtype=torch.bool)
    printable[32:127] = True
    printable[10] = True
    with torch.no_grad():
        model.lm_head.weight[~printable] = 0.0
    model.save_pretrained(directory / "model")
    ByteTokenizer().save(directory / "tokenizer.json")
    return directory


class Server:
    """`apt-ext serve` in a subprocess on a free loopback port; `url` is its /v1 base."""

    def __init__(self, checkpoint: Path, *extra: str, keys: str = API_KEY, timeout: float = 180.0,
                 threads: int = 1) -> None:
        env = dict(os.environ, APT_API_KEYS=keys, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "apt_ext.cli.main", "serve", "--checkpoint", str(checkpoint),
               "--port", "0", "--device", "cpu", "--model-name", "tiny", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"at (http://[\d.]+:\d+/v1)", line)
            if m:
                self.url = m.group(1)
                self.output = lines
                threading.Thread(target=lambda: lines.extend(self.proc.stdout), daemon=True).start()
                return
        self.proc.kill()
        raise RuntimeError("apt-ext serve did not start:\n" + "".join(lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
