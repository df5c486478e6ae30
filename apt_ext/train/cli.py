"""Command-line arguments of ``apt-ext train`` and ``python -m apt_ext.train``."""
from __future__ import annotations

import argparse
import os

from apt_ext.left_spin.params import DEFAULTS as LEFT_SPIN
from apt_ext.model import APTModelConfiguration
from apt_ext.train.trainer import TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("data", nargs="*", help="UTF-8 text files (default: the built-in corpus, Python's docs)")
    p.add_argument("--tokenizer", choices=("byte", "bpe"), default=d.tokenizer)
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--out-dir", default=d.out_dir)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on GPUs")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP under torchrun")
    p.add_argument("--no-progress", action="store_true")
    m = p.add_argument_group("model")
    m.add_argument("--d-model", type=int, default=256)
    m.add_argument("--layers", type=int, default=4, help="decoder layers (and encoder layers with --encoder-decoder)")
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--d-ff", type=int, default=None, help="default 4*d_model")
    m.add_argument("--dropout", type=float, default=0.0)
    m.add_argument("--encoder-decoder", action="store_true", help="(language modelling uses decoder-only by default)")
    m.add_argument("--no-left-spin", action="store_true")
    m.add_argument("--no-autopoietic", action="store_true")
    m.add_argument("--dbc-dac", action="store_true")
    for name in ("alpha", "tau", "beta"):
        m.add_argument(f"--left-spin-{name}", type=float, default=getattr(LEFT_SPIN, name))


def configs_from_args(a: argparse.Namespace) -> tuple[TrainConfig, APTModelConfiguration]:
    if a.encoder_decoder:
        raise ValueError("--encoder-decoder: the text trainer does language modelling; train an "
                         "encoder-decoder APTModel with your own loop (see docs/model.md)")
    tc = TrainConfig(data=list(a.data), tokenizer=a.tokenizer, bpe_vocab_size=a.bpe_vocab_size, steps=a.steps,
                     batch_size=a.batch_size, seq_len=a.seq_len, grad_accum=a.grad_accum, lr=a.lr,
                     warmup_steps=a.warmup_steps, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
                     eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, out_dir=a.out_dir,
                     resume=a.resume, seed=a.seed, device=a.device, bf16=not a.no_bf16, fsdp=a.fsdp,
                     progress=not a.no_progress)
    mc = APTModelConfiguration(vocab_size=256, d_model=a.d_model, num_heads=a.heads, d_ff=a.d_ff or 4 * a.d_model,
                               num_encoder_layers=0, num_decoder_layers=a.layers, decoder_only=True,
                               dropout=a.dropout, max_seq_len=a.seq_len, use_left_spin=not a.no_left_spin,
                               use_autopoietic=not a.no_autopoietic, use_dbc_dac=a.dbc_dac,
                               left_spin_alpha=a.left_spin_alpha, left_spin_tau=a.left_spin_tau,
                               left_spin_beta=a.left_spin_beta)
    return tc, mc


def run(a: argparse.Namespace) -> int:
    from apt_ext.train.trainer import train
    tc, mc = configs_from_args(a)
    res = train(tc, mc)
    if int(os.environ.get("RANK", "0")) == 0:
        final = res.evals[-1][1] if res.evals else float("nan")
        print(f"trained {len(res.losses)} steps: final train loss {res.losses[-1]:.4f}, eval loss {final:.4f}, "
              f"{res.tokens_per_s:,.0f} tokens/s; wrote {res.out_dir}/model, checkpoint.pt, loss.png")
    return 1 if res.diverged else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apt_ext.train", description="train an APT language model")
    add_arguments(p)
    return run(p.parse_args(argv))
