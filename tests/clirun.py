"""Running the CLI in tests: one JSON object on success, one stderr line on bad input."""

from __future__ import annotations

import json

from postcollapse.cli import main


def run_json(capsys, argv):
    """``main(argv)`` exits 0 and prints exactly one JSON object on one line; return it."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object, one line
    return json.loads(out)


def run_error(capsys, argv) -> str:
    """``main(argv)`` exits 2 with one line on stderr (no traceback, nothing on stdout)."""
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and "Traceback" not in cap.err, cap.err
    assert cap.out == ""
    return cap.err
