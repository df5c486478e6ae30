"""Command-line arguments of ``apt-ext train`` and ``python -m apt_ext.train`` (docs/cli.md).

Defining the arguments imports no torch. A setting that cannot work is reported as one line
naming the option (exit code 2, through apt_ext.cli.main.run_command)."""
from __future__ import annotations

import argparse
import os
import re
import sys

from apt_ext.cli.errors import UsageError
from apt_ext.cli.options import positive_int
from apt_ext.left_spin.params import DEFAULTS as LEFT_SPIN
from apt_ext.train.config import COMPILE_MODES, ConfigError, TrainConfig

DESCRIPTION = ("Train a decoder-only APT language model (left-spin residuals, autopoietic attention) on "
               "UTF-8 text files or the built-in corpus: AdamW, warm-up + cosine schedule, periodic eval, "
               "checkpoints with exact --resume, DDP/FSDP2 under torchrun. Writes OUT_DIR/model, "
               "checkpoint.pt, tokenizer.json, losses.json and loss.png (with matplotlib).")

# option of each TrainConfig / APTModelConfiguration field whose name differs from --field-name
_OPTIONS = {"data": "data", "bf16": "--no-bf16", "progress": "--no-progress", "num_heads": "--heads",
            "num_decoder_layers": "--layers", "num_encoder_layers": "--layers", "max_seq_len": "--seq-len"}


def option_of(field: str) -> str:
    """The command-line option that sets the config field ``field``."""
    return _OPTIONS.get(field, "--" + field.replace("_", "-"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("data", nargs="*", help="UTF-8 text files to train on (default: the built-in corpus, "
                   "Python's documentation topics)")
    p.add_argument("--tokenizer", choices=("byte", "bpe"), default=d.tokenizer,
                   help="byte: UTF-8 bytes as ids; bpe: byte-level BPE trained on the data (needs tokenizers)")
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size, help="BPE vocabulary size (> 256)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per micro-batch per process")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per sequence (the model's context)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (finite, > 0)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warm-up steps before the cosine decay")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the gradient norm to this (0: off)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evals (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (0: only at the end)")
    p.add_argument("--out-dir", default=d.out_dir, help="directory for the model, checkpoint and losses")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT_DIR/checkpoint.pt, which must exist (off: start a new run)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the model's init and of the batches")
    p.add_argument("--device", default=None, help="torch device such as cpu or cuda:0 (default: a GPU if "
                   "there is one, else the CPU; under torchrun the rank's GPU)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads on a CPU device (default: the CPUs "
                   "other work leaves free, from the load average)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on GPUs (float32)")
    p.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the model (MODE: " + ", ".join(COMPILE_MODES) + "; default 'default'; "
                        "'reduce-overhead' replays the steps from CUDA graphs on GPUs, without --grad-accum)")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP under torchrun")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("model")
    m.add_argument("--d-model", type=int, default=256, help="model width")
    m.add_argument("--layers", type=int, default=4, help="decoder layers")
    m.add_argument("--heads", type=int, default=4, help="attention heads (must divide --d-model)")
    m.add_argument("--d-ff", type=int, default=None, help="feed-forward width (default: 4 * d_model)")
    m.add_argument("--dropout", type=float, default=0.0, help="dropout probability")
    m.add_argument("--encoder-decoder", action="store_true",
                   help="not supported here: the text trainer does language modelling (decoder-only)")
    m.add_argument("--no-left-spin", action="store_true", help="plain residuals instead of left-spin")
    m.add_argument("--no-autopoietic", action="store_true", help="plain attention instead of autopoietic")
    m.add_argument("--dbc-dac", action="store_true", help="DBC-DAC gradient conditioning (not with --fsdp)")
    for name in ("alpha", "tau", "beta"):
        m.add_argument(f"--left-spin-{name}", type=float, default=getattr(LEFT_SPIN, name),
                       help=f"left-spin {name}")


def configs_from_args(a: argparse.Namespace):
    """(TrainConfig, APTModelConfiguration) from the parsed arguments; UsageError naming the option
    of a value that cannot work."""
    from apt_ext.model import APTModelConfiguration
    if a.encoder_decoder:
        raise UsageError("--encoder-decoder", "the text trainer does language modelling; train an "
                         "encoder-decoder APTModel with your own loop (see docs/model.md)")
    try:
        tc = TrainConfig(data=list(a.data), tokenizer=a.tokenizer, bpe_vocab_size=a.bpe_vocab_size, steps=a.steps,
                         batch_size=a.batch_size, seq_len=a.seq_len, grad_accum=a.grad_accum, lr=a.lr,
                         warmup_steps=a.warmup_steps, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
                         eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, out_dir=a.out_dir,
                         resume=a.resume, seed=a.seed, device=a.device, bf16=not a.no_bf16, fsdp=a.fsdp,
                         progress=not a.no_progress, compile=a.compile)
    except ConfigError as exc:
        raise UsageError(option_of(exc.field), exc.reason) from exc
    try:
        mc = APTModelConfiguration(vocab_size=256, d_model=a.d_model, num_heads=a.heads,
                                   d_ff=a.d_ff if a.d_ff is not None else 4 * a.d_model,
                                   num_encoder_layers=0, num_decoder_layers=a.layers, decoder_only=True,
                                   dropout=a.dropout, max_seq_len=a.seq_len, use_left_spin=not a.no_left_spin,
                                   use_autopoietic=not a.no_autopoietic, use_dbc_dac=a.dbc_dac,
                                   left_spin_alpha=a.left_spin_alpha, left_spin_tau=a.left_spin_tau,
                                   left_spin_beta=a.left_spin_beta)
    except (ValueError, TypeError) as exc:  # the message starts with the field's name
        field = re.match(r"\w+", str(exc))
        raise UsageError(option_of(field.group(0)) if field else "model options", str(exc)) from exc
    return tc, mc


def run(a: argparse.Namespace) -> int:
    from apt_ext.cli.options import cpu_threads, device, writable_dir
    from apt_ext.train.trainer import Trainer
    tc, mc = configs_from_args(a)
    if a.device is not None:
        device(a.device)
    writable_dir(a.out_dir, "--out-dir")
    try:
        trainer = Trainer(tc, mc)
    except ConfigError as exc:
        raise UsageError(option_of(exc.field), exc.reason) from exc
    rank0 = int(os.environ.get("RANK", "0")) == 0
    cpu_threads(a.threads, trainer.device, announce=rank0)
    res = trainer.run()
    if rank0:
        final = res.evals[-1][1] if res.evals else float("nan")
        wrote = ", ".join(["model", "checkpoint.pt", "losses.json"] + (["loss.png"] if res.loss_plot else []))
        print(f"trained {len(res.losses)} steps: final train loss {res.losses[-1]:.4f}, eval loss {final:.4f}, "
              f"{res.tokens_per_s:,.0f} tokens/s; wrote {res.out_dir}/: {wrote}")
        if res.diverged:
            print(f"training diverged: the loss was not finite at step {len(res.losses)} (try a lower --lr)",
                  file=sys.stderr)
    return 1 if res.diverged else 0


def main(argv: list[str] | None = None) -> int:
    from apt_ext.cli.main import run_command
    from apt_ext.cli.options import CommandParser
    prog = "python -m apt_ext.train"
    p = CommandParser(prog=prog, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run, needs_ops=True, debug=False)
    return run_command(p.parse_args(argv), prog)
