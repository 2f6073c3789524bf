"""The report's prose (collapse rule, preset notes, figure titles), shipped as package data.

The texts live in ``postcollapse/reproduce/text/``: Markdown paragraphs (line breaks inside
a paragraph are joined with single spaces) and ``titles.json``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

__all__ = ["prose", "titles"]


@cache
def prose(name: str) -> str:
    """The paragraph ``text/<name>.md`` as one line (empty string if there is no such file)."""
    path = files("postcollapse.reproduce").joinpath("text", f"{name}.md")
    if not path.is_file():
        return ""
    return " ".join(line.strip() for line in path.read_text("utf-8").splitlines()
                    if line.strip())


@cache
def titles() -> dict[str, str]:
    """Figure name -> figure title, from ``text/titles.json``."""
    path = files("postcollapse.reproduce").joinpath("text", "titles.json")
    return dict(json.loads(path.read_text("utf-8")))
