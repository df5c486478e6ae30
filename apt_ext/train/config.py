"""``TrainConfig``: the settings of one training run, validated (no torch needed, so the CLI can
read its defaults without importing torch), and ``ConfigError``, the error that names the
setting at fault (``apt-ext train`` turns it into the option's name)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


# torch.compile's modes the trainer takes (TrainConfig.compile). "reduce-overhead" replays each
# step from CUDA graphs, which removes the host's launch time: on an H100 the compiled
# GPT-2-small-size APT step took 22.70 ms with it against 23.93 ms in the default mode, and the
# autopoietic step 1.172x plain's against 1.528x (docs/model.md, twenty-sixth session).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The modes that replay CUDA graphs. With gradient accumulation they fail or, worse, keep only the
# last micro-batch's gradients: the first backward's .grad is a buffer of the backward graph,
# which the next replay overwrites (pytorch/pytorch#169545, open under torch 2.11; on an H100 the
# trainer's second micro-batch raised "accessing tensor output of CUDAGraphs that has been
# overwritten", twenty-seventh session). TrainConfig refuses them with grad_accum > 1.
CUDA_GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


class ConfigError(ValueError):
    """A training setting (``field``: a TrainConfig field name, or ``data``) that cannot work."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class TrainConfig:
    """Training run settings. Batch tokens per optimizer step per rank =
    batch_size * grad_accum * seq_len. Invalid values raise ConfigError naming the field."""
    data: list[str] = field(default_factory=list)   # UTF-8 text files; empty = the built-in corpus
    tokenizer: str = "byte"                          # "byte" or "bpe" (needs the tokenizers package)
    bpe_vocab_size: int = 2048
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 128
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0                           # 0: no clipping
    eval_every: int = 100                            # 0: only at the end
    eval_batches: int = 8
    checkpoint_every: int = 0                        # 0: only at the end
    out_dir: str = "apt_run"
    resume: bool = False                             # continue from out_dir/checkpoint.pt (which must exist)
    seed: int = 0
    device: str | None = None                        # default: apt_ext.devices.get_device()
    bf16: bool = True                                # autocast bf16 on CUDA (ignored on CPU)
    fsdp: bool = False
    progress: bool = True
    plot: bool = True                                # loss.png (skipped, with a note, without matplotlib)
    stop_on_nonfinite: bool = True
    compile: str | None = None                       # torch.compile mode (COMPILE_MODES) or None: eager

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "eval_batches", "bpe_vocab_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, f"expected an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(name, f"expected an integer >= 0, got {v!r}")
        for name, ok, want in (("lr", lambda v: v > 0, "a finite number > 0"),
                               ("min_lr_ratio", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
                               ("weight_decay", lambda v: v >= 0, "a finite number >= 0"),
                               ("grad_clip", lambda v: v >= 0, "a finite number >= 0")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ConfigError(name, f"expected {want}, got {v!r}")
        if self.tokenizer not in ("byte", "bpe"):
            raise ConfigError("tokenizer", f"expected 'byte' or 'bpe', got {self.tokenizer!r}")
        if self.tokenizer == "bpe" and self.bpe_vocab_size < 257:
            raise ConfigError("bpe_vocab_size",
                              f"a byte-level BPE needs more than 256 entries, got {self.bpe_vocab_size}")
        if not isinstance(self.data, (list, tuple)) or not all(isinstance(p, str) for p in self.data):
            raise ConfigError("data", f"expected a list of file paths, got {self.data!r}")
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ConfigError("out_dir", f"expected a directory path, got {self.out_dir!r}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ConfigError("compile", f"expected None (eager) or one of {COMPILE_MODES}, got {self.compile!r}")
        if self.compile in CUDA_GRAPH_COMPILE_MODES and self.grad_accum > 1:
            raise ConfigError("compile", f"{self.compile!r} replays CUDA graphs, which lose accumulated gradients "
                                         f"(pytorch/pytorch#169545); with grad_accum={self.grad_accum} use 'default' "
                                         "or 'max-autotune-no-cudagraphs', or grad_accum=1")
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigError("device", f"expected None or a device string such as 'cpu', got {self.device!r}")
