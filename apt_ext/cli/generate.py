"""``apt-ext generate --checkpoint DIR "prompt"``: text in, text out, from a saved APT model.

The checkpoint is loaded exactly as ``apt-ext serve`` loads it (``LocalModel.from_checkpoint``:
a run directory from ``apt-ext train`` / ``apt-ext demo`` or a ``save_pretrained`` directory,
with its tokenizer; ``--fp4`` and ``--vgpu-config`` as for serve), and the continuation is
printed to stdout as it is generated.
"""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a saved APT model (text in, text out)",
                       description="Load an APT checkpoint like `apt-ext serve` does and print the continuation "
                       "of PROMPT (streamed). Greedy unless --temperature > 0.")
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--checkpoint", required=True, help="a directory written by apt-ext train/demo "
                   "(model/ + tokenizer.json) or by APTModel.save_pretrained")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens at most (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default); sampling otherwise, up to 2")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1: off)")
    p.add_argument("--stop", action="append", default=None, help="stop before this string (repeatable, up to 4; default: none)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (default: none, a different draw each run)")
    p.add_argument("--device", default=None, help="torch device such as cpu or cuda:0 (default: a GPU if there is one, else the CPU)")
    p.add_argument("--fp4", choices=("nvfp4", "mxfp4", "nf4"), default=None, help="quantise the Linear layers to FP4 (default: keep float weights)")
    p.add_argument("--vgpu-config", default=None, help="VGPUStack config (JSON text or file): keep the weights in that stack (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from apt_ext.cli.options import local_model
    if args.seed is not None:
        torch.manual_seed(args.seed)
    model = local_model(args)

    def show(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    done = model.complete(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                          top_p=args.top_p, stop=args.stop, on_text=show)
    sys.stdout.write("\n")
    print(f"[{done.prompt_tokens} prompt tokens, {done.completion_tokens} generated, finish: {done.finish_reason}]",
          file=sys.stderr)
    return 0
