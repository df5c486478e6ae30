"""``apt-ext <command>``: each command is a module with ``register(subparsers)`` that sets
``func`` on its parser; ``func(args)`` returns the exit code. docs/cli.md lists the commands.

Registering a command imports nothing heavy (no torch), so ``apt-ext --help`` and
``apt-ext --version`` are quick; a command that needs the native ops sets ``needs_ops=True``
(the default) and ``apt_ext.load()`` runs before it. Errors are one line on stderr:

    0    success
    1    the command ran and failed (e.g. training diverged, a demo part FAILED, an unexpected error)
    2    a usage error: a bad option, argument, input file or output directory (the line names it)
    130  interrupted (Ctrl-C)

``--debug`` (before or after the command name) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import apt_ext
from apt_ext.cli.errors import UsageError, one_line
from apt_ext.cli.options import CommandParser

COMMANDS = (
    "apt_ext.cli.info",
    "apt_ext.cli.train",
    "apt_ext.cli.demo",
    "apt_ext.cli.memory",
    "apt_ext.cli.serve",
    "apt_ext.cli.generate",
)


def build_parser() -> CommandParser:
    parser = CommandParser(prog="apt-ext", description="apt_ext: FP4 weights, left-spin residuals, VGPU "
                           "pager and AIM-Memory for PyTorch. `apt-ext COMMAND --help` describes each "
                           "command; docs/cli.md lists options and exit codes.")
    parser.add_argument("--version", action="version", version=f"apt-ext {apt_ext.__version__}")
    parser.set_defaults(debug=False, needs_ops=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def run_command(args: argparse.Namespace, prog: str) -> int:
    """Run ``args.func(args)``; report errors as one line on stderr (the traceback with --debug)
    and return the exit code (module docstring)."""
    try:
        if args.needs_ops:
            apt_ext.load()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        if args.debug:
            raise
        print(f"{prog}: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else is reported, not shown as a traceback
        if args.debug:
            raise
        print(f"{prog}: {type(exc).__name__}: {one_line(str(exc))} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = " ".join(["apt-ext"] + [v for v in (args.command, getattr(args, "action", None)) if v])
    return run_command(args, prog)


if __name__ == "__main__":
    sys.exit(main())
