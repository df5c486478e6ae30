"""How ``apt-ext`` reports a user's mistake: :class:`UsageError` names the option, the command
prints it as one line and exits with code 2 (apt_ext.cli.main)."""
from __future__ import annotations


class UsageError(Exception):
    """A command-line value the user has to change: ``option`` (e.g. ``--db``) and why (a
    ``message`` that already starts with the option's name is kept as it is)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message if message.startswith(option) else f"{option}: {message}")
        self.option = option


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())
