"""Help-text pieces shared by the command modules: the formatter every parser uses and the
examples block that ends each command's ``--help``."""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["HelpFormatter", "examples"]


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a description or epilog written on several lines
    (an examples block) is printed as written instead of being re-wrapped."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*commands: str, note: str | None = None) -> str:
    """An epilog: ``examples:`` then one indented command per line (``  # why`` comments
    allowed), then an optional note paragraph."""
    text = "examples:\n" + "".join(f"  {c}\n" for c in commands)
    if note:
        text += "\n" + textwrap.fill(" ".join(note.split()), width=78) + "\n"
    return text
