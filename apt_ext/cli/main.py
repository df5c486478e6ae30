"""``apt-ext <command>``: each command is a module with ``register(subparsers)`` that sets
``func`` on its parser; ``func(args)`` returns the exit code."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "apt_ext.cli.info",
    "apt_ext.cli.train",
    "apt_ext.cli.demo",
    "apt_ext.cli.memory",
    "apt_ext.cli.serve",
    "apt_ext.cli.generate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apt-ext", description="apt_ext: FP4 weights, left-spin "
                                     "residuals, VGPU pager and AIM-Memory for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
