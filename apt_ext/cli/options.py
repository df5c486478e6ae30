"""What every ``apt-ext`` command shares: the parser class (help with defaults, one-line usage
errors, ``--debug``) and the checks of the options several commands take (``--out-dir``,
``--device``, ``--threads``). Nothing here imports torch at module level."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from apt_ext.cli.errors import UsageError

if TYPE_CHECKING:
    import torch


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the text already states its default
    or the option is a flag (off unless given) or has no default (the text says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_value = action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool)
        if no_value or "default" in text or not (action.option_strings or action.nargs in ("?", "*")):
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2), whose help
    shows defaults, and which accepts ``--debug`` (show tracebacks) at every level."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the full traceback of an error instead of one line")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse ``type`` of a count option: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def writable_dir(path: str, option: str) -> Path:
    """Create ``path`` (and its parents) if needed and check that a file can be written there;
    raises UsageError naming ``option`` otherwise."""
    import tempfile

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(option, f"{path} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as exc:
        raise UsageError(option, f"cannot write to {path}: {exc.strerror or exc}") from exc
    return p


def device(value: str | None, option: str = "--device") -> torch.device:
    """The torch.device named by ``value`` (None: apt_ext.devices.get_device()), checked to be
    present on this machine; raises UsageError naming ``option`` otherwise."""
    from apt_ext.devices import check_device, get_device

    try:
        return get_device() if value is None else check_device(value, option)
    except ValueError as exc:
        raise UsageError(option, str(exc)) from exc


def cpu_threads(requested: int | None, dev: torch.device, announce: bool = True) -> None:
    """On a CPU device, set torch's intra-op threads: ``requested``, or (None) the CPUs that
    other work leaves free (apt_ext.devices.threads_for_load) shared among the processes of this
    machine under torchrun (LOCAL_WORLD_SIZE); says so on stderr when ``announce``."""
    import torch

    from apt_ext.devices import available_cpus, load_average, threads_for_load

    if dev.type != "cpu":
        return
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = requested if requested is not None else max(1, threads_for_load() // processes)
    torch.set_num_threads(n)
    if requested is None and announce:
        print(f"CPU threads: {n} of {available_cpus()} (1-minute load average {load_average():.1f}; "
              f"--threads N to choose)", file=sys.stderr)


def local_model(args: argparse.Namespace, name: str | None = None):
    """``LocalModel.from_checkpoint`` with the --checkpoint, --device, --fp4 and --vgpu-config of
    ``apt-ext serve`` / ``generate``; a checkpoint or device that cannot work raises UsageError."""
    from apt_ext.cloud.local_model import LocalModel

    dev = device(args.device) if args.device is not None else None
    try:
        return LocalModel.from_checkpoint(args.checkpoint, device=dev, fp4=args.fp4, vgpu_config=args.vgpu_config,
                                          name=name)
    except (FileNotFoundError, ValueError) as exc:
        if str(exc).startswith("checkpoint:"):
            raise UsageError("--checkpoint", str(exc).removeprefix("checkpoint:").strip()) from exc
        raise
