"""``apt-ext train``: train an APT language model on text files or the built-in corpus."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from apt_ext.train.cli import DESCRIPTION, add_arguments, run
    p = sub.add_parser("train", help="train an APT model (AdamW, cosine, checkpoints, DDP/FSDP2 under torchrun)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)
